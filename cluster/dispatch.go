package cluster

import (
	"log/slog"
	"runtime/debug"
	"sync"
)

// Handler receives what the cluster decides for this node. Calls come from
// one goroutine, one at a time and in the order the changes were applied
// here, so an implementation needs no ordering logic of its own; it must
// not block for long, since later calls wait. A panic in a method is
// recovered and logged.
type Handler interface {
	// Invalidate drops the cached route of user.
	Invalidate(user string)
	// Kick closes user's live sessions (IMAP "* BYE", POP3 "-ERR").
	Kick(user string)
	// Hold puts user on hold (held) or takes them off it.
	Hold(user string, held bool)
}

// HandlerFuncs adapts functions to a Handler; nil fields are no-ops.
type HandlerFuncs struct {
	InvalidateFunc func(user string)
	KickFunc       func(user string)
	HoldFunc       func(user string, held bool)
}

// Invalidate calls f.InvalidateFunc if it is set.
func (f HandlerFuncs) Invalidate(user string) {
	if f.InvalidateFunc != nil {
		f.InvalidateFunc(user)
	}
}

// Kick calls f.KickFunc if it is set.
func (f HandlerFuncs) Kick(user string) {
	if f.KickFunc != nil {
		f.KickFunc(user)
	}
}

// Hold calls f.HoldFunc if it is set.
func (f HandlerFuncs) Hold(user string, held bool) {
	if f.HoldFunc != nil {
		f.HoldFunc(user, held)
	}
}

type callOp uint8

const (
	opInvalidate callOp = iota
	opKick
	opHold
)

type handlerCall struct {
	op   callOp
	user string
	held bool
}

// dispatcher queues Handler calls and runs them on one goroutine.
type dispatcher struct {
	h      Handler
	logger *slog.Logger

	mu      sync.Mutex
	cond    *sync.Cond
	q       []handlerCall
	closed  bool
	dropped uint64
	donec   chan struct{}
}

func newDispatcher(h Handler, logger *slog.Logger) *dispatcher {
	d := &dispatcher{h: h, logger: logger, donec: make(chan struct{})}
	d.cond = sync.NewCond(&d.mu)
	go d.run()
	return d
}

// push queues calls; it never blocks. When the queue is full the calls are
// dropped and counted.
func (d *dispatcher) push(calls ...handlerCall) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	if len(d.q)+len(calls) > maxHandlerQueue {
		d.dropped += uint64(len(calls))
		d.logger.Error("cluster handler queue full, dropping calls", "calls", len(calls))
		return
	}
	d.q = append(d.q, calls...)
	d.cond.Signal()
}

// run is the dispatcher goroutine.
func (d *dispatcher) run() {
	defer close(d.donec)
	for {
		d.mu.Lock()
		for len(d.q) == 0 && !d.closed {
			d.cond.Wait()
		}
		if d.closed {
			d.mu.Unlock()
			return
		}
		batch := d.q
		d.q = nil
		d.mu.Unlock()
		for _, c := range batch {
			d.call(c)
		}
	}
}

func (d *dispatcher) call(c handlerCall) {
	defer func() {
		if r := recover(); r != nil {
			d.logger.Error("cluster handler panic", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	if d.h == nil {
		return
	}
	switch c.op {
	case opInvalidate:
		d.h.Invalidate(c.user)
	case opKick:
		d.h.Kick(c.user)
	case opHold:
		d.h.Hold(c.user, c.held)
	}
}

// close stops the goroutine after the call in progress, if any; queued
// calls are discarded.
func (d *dispatcher) close() {
	d.mu.Lock()
	d.closed = true
	d.cond.Signal()
	d.mu.Unlock()
	<-d.donec
}

func (d *dispatcher) droppedCalls() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dropped
}
