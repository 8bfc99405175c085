package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"time"

	"switchboard/bench/loadgen"
)

// Idle figure timing.
const (
	// idleSettle is the pause between the last session entering IDLE and
	// the memory sample; longer than the backends' hibernateTimeout.
	idleSettle = 4 * time.Second
	// idleDrain bounds the wait for a target to shed the sessions of an
	// idle figure before the next figure starts.
	idleDrain = 20 * time.Second
)

var errUnsupported = errors.New("target lacks this protocol or TLS mode")

// figure is one measurement made on every target in turn.
type figure struct {
	workload    string
	tls         loadgen.TLSMode
	concurrency int
}

func (f figure) String() string {
	if f.workload == loadgen.WorkIdle {
		return fmt.Sprintf("%s tls=%s", f.workload, f.tls)
	}
	return fmt.Sprintf("%s tls=%s c=%d", f.workload, f.tls, f.concurrency)
}

// figures lists the run's figures in order: sessions, bulk, idle.
func figures(cfg *config) []figure {
	var out []figure
	for _, w := range []string{loadgen.WorkIMAPSession, loadgen.WorkPOP3Session} {
		if !contains(cfg.workloads, w) {
			continue
		}
		for _, m := range cfg.tlsModes {
			for _, c := range cfg.conc {
				out = append(out, figure{w, m, c})
			}
		}
	}
	if contains(cfg.workloads, loadgen.WorkBulk) {
		for _, m := range cfg.bulkTLS {
			for _, c := range cfg.bulkConc {
				out = append(out, figure{loadgen.WorkBulk, m, c})
			}
		}
	}
	if contains(cfg.workloads, loadgen.WorkIdle) && cfg.idleN > 0 {
		for _, m := range cfg.idleTLS {
			out = append(out, figure{loadgen.WorkIdle, m, cfg.idleN})
		}
	}
	return out
}

func (f figure) proto() loadgen.Proto {
	if f.workload == loadgen.WorkPOP3Session {
		return loadgen.POP3
	}
	return loadgen.IMAP
}

// run measures f on t, and how busy the rest of the machine was meanwhile.
func (f figure) run(ctx context.Context, cfg *config, tb *bed, t *target) (loadgen.Result, error) {
	if !t.lg.Supports(f.proto(), f.tls) {
		return loadgen.Result{}, errUnsupported
	}
	if t.floor && (f.workload == loadgen.WorkIdle || f.tls != loadgen.TLSNone) {
		return loadgen.Result{}, errUnsupported
	}
	if f.workload == loadgen.WorkIdle && t.pids != nil {
		// Direct has no proxy whose memory to charge; the backends'
		// pools of reusable processes make their own growth
		// meaningless as a per-session figure.
		return loadgen.Result{}, errUnsupported
	}
	self := os.Getpid()
	procs := len(t.procs())
	busy0, ours0, t0 := loadgen.MachineBusy(), loadgen.CPUTime(loadgen.ProcTree(self)), time.Now()
	r, err := f.measure(ctx, cfg, tb, t)
	busy, ours := loadgen.MachineBusy()-busy0, loadgen.CPUTime(loadgen.ProcTree(self))-ours0
	// Let a forking proxy reap its per-session processes before the
	// next figure, so they are not charged to it. (The direct target's
	// backends keep their reusable imap processes.)
	deadline := time.Now().Add(idleDrain)
	for t.pids == nil && time.Now().Before(deadline) && len(t.procs()) > procs+2 {
		time.Sleep(50 * time.Millisecond)
	}
	if capacity := time.Since(t0).Seconds() * float64(runtime.NumCPU()); capacity > 0 {
		r.OtherCPU = math.Round(max(0, (busy-ours).Seconds())/capacity*100) / 100
	}
	return r, err
}

func (f figure) measure(ctx context.Context, cfg *config, tb *bed, t *target) (loadgen.Result, error) {
	if f.workload == loadgen.WorkIdle {
		return runIdle(ctx, f, tb, t)
	}
	s := loadgen.Spec{
		Target:      t.lg,
		Workload:    f.workload,
		TLS:         f.tls,
		Concurrency: f.concurrency,
		Warmup:      cfg.warmup,
		Duration:    cfg.duration,
		Count:       cfg.count,
		Users:       tb.users,
		CPU:         t.cpu,
		SysCPU:      t.sysCPU,
		BackendCPU:  func() time.Duration { return loadgen.CPUTime(tb.backendPIDs()) },
	}
	if f.workload == loadgen.WorkBulk {
		s.Users = tb.bulkUsers
		s.BulkMessages = bulkMessages
	}
	return loadgen.Run(ctx, s)
}

func runIdle(ctx context.Context, f figure, tb *bed, t *target) (loadgen.Result, error) {
	res, err := loadgen.Idle(ctx, loadgen.IdleSpec{
		Target:       t.lg,
		TLS:          f.tls,
		N:            f.concurrency,
		Users:        tb.users,
		Procs:        t.procs,
		MultiProcess: t.multiProcess,
		Settle:       idleSettle,
	})
	res.Concurrency = f.concurrency
	return res, err
}
