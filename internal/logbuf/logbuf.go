// Package logbuf batches log lines. A Writer gathers what it is given and
// passes it on at most one interval later, at once when a buffer's worth
// is waiting, and on Flush; a Handler wraps a slog.Handler and flushes
// after every record at Warn or above, so a problem is never held back
// and the lines before it go out first, in order.
//
// A busy front-end logs one line per session, hundreds a second: batched,
// they cost one write(2) (and one wake-up of journald or whatever reads
// the stream) per interval instead of one per line.
package logbuf

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"
)

// Writer batches writes to an io.Writer. Its methods may be called from
// any goroutine.
type Writer struct {
	w        io.Writer
	interval time.Duration
	size     int

	mu    sync.Mutex
	buf   []byte
	timer *time.Timer // flushes interval after the first write into an empty buffer
	armed bool
}

// NewWriter returns a Writer passing on to w what it is given, at most
// interval later, or at once when size bytes are waiting. An interval of
// zero or less writes through.
func NewWriter(w io.Writer, interval time.Duration, size int) *Writer {
	b := &Writer{w: w, interval: interval, size: size}
	if interval > 0 {
		b.timer = time.AfterFunc(time.Hour, b.flushTimer)
		b.timer.Stop()
	}
	return b
}

// Write takes p (one log record, from slog's handlers) for the next
// flush. It never fails: a failed write to the underlying writer loses
// what was waiting, as an unbuffered log write would have.
func (b *Writer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.interval <= 0 {
		return b.w.Write(p)
	}
	b.buf = append(b.buf, p...)
	if len(b.buf) >= b.size {
		b.flushLocked()
	} else if !b.armed {
		b.armed = true
		b.timer.Reset(b.interval)
	}
	return len(p), nil
}

// Flush writes what is waiting now.
func (b *Writer) Flush() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.flushLocked()
}

func (b *Writer) flushTimer() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.armed = false
	b.flushLocked()
}

func (b *Writer) flushLocked() {
	if len(b.buf) == 0 {
		return
	}
	b.w.Write(b.buf)
	if cap(b.buf) > 4*b.size {
		b.buf = nil // a burst of long lines: do not keep its buffer
	} else {
		b.buf = b.buf[:0]
	}
}

// Handler passes records to its inner handler, writing to w, and flushes
// w after every record at slog.LevelWarn or above.
type Handler struct {
	inner slog.Handler
	w     *Writer
}

// NewHandler returns a Handler around inner, which writes to w.
func NewHandler(inner slog.Handler, w *Writer) *Handler {
	return &Handler{inner: inner, w: w}
}

func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	err := h.inner.Handle(ctx, r)
	if r.Level >= slog.LevelWarn {
		h.w.Flush()
	}
	return err
}

func (h *Handler) WithAttrs(as []slog.Attr) slog.Handler {
	return &Handler{inner: h.inner.WithAttrs(as), w: h.w}
}

func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{inner: h.inner.WithGroup(name), w: h.w}
}
