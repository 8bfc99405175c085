// Package procs sizes Go's scheduler (GOMAXPROCS) to the load of the
// process instead of to the number of cores.
//
// A front-end shares its node with Dovecot and spends most of its time
// waiting. With one scheduler slot (P) per core, every burst of network
// events finds idle Ps and wakes a thread for each, which soon goes back
// to sleep: measured on a 2-core node at 600 sessions/s, 2.9 thread
// sleeps per session with two Ps against 1.7 with one, and 12 % more
// sessions per second for the whole node. A Controller starts with one P
// and adds one whenever the process keeps its Ps busy, up to the
// runtime's own default (the cores, or the cgroup's CPU limit), and
// gives them back when the load has fallen for a while.
package procs

import (
	"context"
	"log/slog"
	"math"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
)

// Thresholds of the controller, as shares of the CPU time its Ps could
// use in a window.
const (
	// upAt: busier than this, one more P.
	upAt = 0.75
	// downAt: one P fewer when the load would have kept the remaining Ps
	// busy below this for downAfter windows in a row.
	downAt    = 0.5
	downAfter = 10
)

// defaultInterval is the window over which the load is measured.
const defaultInterval = time.Second

// Options configure a Controller. Zero values mean the defaults.
type Options struct {
	// Max is the most Ps; zero means runtime.GOMAXPROCS(0) when New
	// runs, the runtime's default from the cores and any cgroup limit.
	Max int
	// Interval is the measuring window; zero means one second.
	Interval time.Duration
	// CPU returns the CPU time the process has used; nil reads
	// getrusage(2).
	CPU func() time.Duration
	// Set resizes the scheduler; nil calls runtime.GOMAXPROCS.
	Set func(n int)
	// Logger receives a line per resize; nil means none.
	Logger *slog.Logger
}

// Controller resizes the scheduler to the load. Run drives it.
type Controller struct {
	max      int
	interval time.Duration
	cpu      func() time.Duration
	set      func(int)
	log      *slog.Logger

	cur atomic.Int32 // Ps now
	low int          // windows in a row below the shrink threshold
}

// New returns a Controller; Run starts it at one P.
func New(opts Options) *Controller {
	c := &Controller{max: opts.Max, interval: opts.Interval, cpu: opts.CPU, set: opts.Set, log: opts.Logger}
	if c.max <= 0 {
		c.max = runtime.GOMAXPROCS(0)
	}
	if c.interval <= 0 {
		c.interval = defaultInterval
	}
	if c.cpu == nil {
		c.cpu = processCPU
	}
	if c.set == nil {
		c.set = func(n int) { runtime.GOMAXPROCS(n) }
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return c
}

// Run sets one P and then resizes once per window until ctx is done. It
// leaves the last size in place.
func (c *Controller) Run(ctx context.Context) {
	c.cur.Store(1)
	c.set(1)
	if c.max <= 1 {
		return
	}
	t := time.NewTicker(c.interval)
	defer t.Stop()
	last, lastAt := c.cpu(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			used := c.cpu()
			if wall := now.Sub(lastAt); wall > 0 {
				c.observe(float64(used-last) / float64(wall))
			}
			last, lastAt = used, now
		}
	}
}

// observe takes one window's load, in cores (CPU seconds per second),
// and resizes if it calls for it.
func (c *Controller) observe(load float64) {
	cur := int(c.cur.Load())
	next := c.next(cur, load)
	if next == cur {
		return
	}
	c.log.Info("scheduler resized", "procs", next, "was", cur, "load_cores", math.Round(load*100)/100)
	c.cur.Store(int32(next))
	c.set(next)
}

// next is the size after a window with the given load at cur Ps.
func (c *Controller) next(cur int, load float64) int {
	if load >= upAt*float64(cur) && cur < c.max {
		c.low = 0
		return cur + 1
	}
	if cur > 1 && load < downAt*float64(cur-1) {
		c.low++
		if c.low >= downAfter {
			c.low = 0
			return cur - 1
		}
		return cur
	}
	c.low = 0
	return cur
}

// Procs returns the number of Ps the controller has set last; zero
// before Run.
func (c *Controller) Procs() int { return int(c.cur.Load()) }

// processCPU returns the user and system CPU time of the process.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
