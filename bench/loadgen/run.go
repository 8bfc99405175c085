package loadgen

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Workload names, as written in result rows.
const (
	WorkIMAPSession = "imap-session"
	WorkPOP3Session = "pop3-session"
	WorkBulk        = "bulk-fetch"
	WorkIdle        = "idle"
)

// errorBackoff keeps a failing target from turning a worker into a busy
// loop of refused connections.
const errorBackoff = 20 * time.Millisecond

// maxCountWindow bounds a fixed-count window (Spec.Count).
const maxCountWindow = 5 * time.Minute

// Spec is one figure to measure.
type Spec struct {
	Target      *Target
	Workload    string
	TLS         TLSMode
	Concurrency int
	// Warmup runs the workload unmeasured first.
	Warmup time.Duration
	// Duration is the measured window. Count, when positive, replaces it:
	// the window ends when Count sessions (or fetches) have completed.
	Duration time.Duration
	Count    int
	// Users to spread sessions over, round robin.
	Users []User
	// BulkMessages is how many large messages each bulk user holds; the
	// bulk workload fetches 1..BulkMessages in turn.
	BulkMessages int
	// CPU, if set, returns the CPU time used so far by the processes the
	// figure is charged to; it is sampled at both ends of the window.
	CPU func() time.Duration
	// SysCPU, if set, returns the system part of CPU.
	SysCPU func() time.Duration
	// BackendCPU, if set, returns the CPU time used so far by the
	// backends, sampled likewise: what a proxy makes them spend.
	BackendCPU func() time.Duration
}

// Result is one figure, one JSON line.
type Result struct {
	Target      string  `json:"target"`
	Workload    string  `json:"workload"`
	TLS         string  `json:"tls"`
	Concurrency int     `json:"concurrency"`
	Sessions    uint64  `json:"sessions,omitempty"`
	Errors      uint64  `json:"errors"`
	FirstError  string  `json:"first_error,omitempty"`
	Seconds     float64 `json:"seconds"`
	SessionsPS  float64 `json:"sessions_per_s,omitempty"`
	P50ms       float64 `json:"p50_ms,omitempty"`
	P99ms       float64 `json:"p99_ms,omitempty"`
	MaxMs       float64 `json:"max_ms,omitempty"`
	Bytes       int64   `json:"bytes,omitempty"`
	MBPerS      float64 `json:"mb_per_s,omitempty"`
	CPUSeconds  float64 `json:"cpu_s,omitempty"`
	CPUSPerGB   float64 `json:"cpu_s_per_gb,omitempty"`
	// CPUmsPerSess is the target's CPU per completed session;
	// BackendCPUmsPerSess the backends' (session workloads).
	CPUmsPerSess        float64 `json:"cpu_ms_per_session,omitempty"`
	CPUSysSeconds       float64 `json:"cpu_sys_s,omitempty"`
	BackendCPUSeconds   float64 `json:"backend_cpu_s,omitempty"`
	BackendCPUmsPerSess float64 `json:"backend_cpu_ms_per_session,omitempty"`
	// Idle figures.
	IdleSessions   int     `json:"idle_sessions,omitempty"`
	IdleRequested  int     `json:"idle_requested,omitempty"`
	MemKiBPerSess  float64 `json:"mem_kib_per_session,omitempty"`
	MemKind        string  `json:"mem_kind,omitempty"`
	RSSKiBPerSess  float64 `json:"rss_kib_per_session,omitempty"`
	PSSKiBPerSess  float64 `json:"pss_kib_per_session,omitempty"`
	Processes      int     `json:"processes,omitempty"`
	GeneratorProcs int     `json:"generator_processes,omitempty"`
	Skipped        string  `json:"skipped,omitempty"`
	// Rounds is how many rounds the figure is the mean of (when more
	// than one).
	Rounds int `json:"rounds,omitempty"`
	// OtherCPU is the share of the machine's CPU capacity used, during
	// the figure, by processes outside the benchmark (other people's
	// work on a shared machine): a noise indicator.
	OtherCPU float64 `json:"other_cpu_share"`
}

// window is the measured interval of a run, shared by its workers.
type window struct {
	// cancel ends the sessions in flight when the window closes.
	cancel context.CancelFunc
	start  time.Time
	count  int64 // fixed-count mode: completions left to measure
	end    atomic.Int64
	done   chan struct{}
	once   sync.Once
}

func (w *window) stop(t time.Time) {
	w.once.Do(func() {
		w.end.Store(t.UnixNano())
		close(w.done)
		w.cancel()
	})
}

func (w *window) stopped() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// measured reports whether a completion at t falls inside the window.
func (w *window) measured(t time.Time) bool {
	if t.Before(w.start) {
		return false
	}
	e := w.end.Load()
	return e == 0 || t.UnixNano() <= e
}

type workerStats struct {
	hist     Hist
	sessions uint64
	errors   uint64
	firstErr error
	bytes    int64
}

// Run measures one figure of a session or bulk workload.
func Run(ctx context.Context, s Spec) (Result, error) {
	res := Result{Target: s.Target.Name, Workload: s.Workload, TLS: string(s.TLS), Concurrency: s.Concurrency}
	if len(s.Users) == 0 || s.Concurrency < 1 {
		return res, errors.New("loadgen: no users or no concurrency")
	}
	tc, err := newTLSConfigs(s.Target)
	if err != nil {
		return res, err
	}
	var bulk []*Conn
	if s.Workload == WorkBulk {
		if s.BulkMessages < 1 {
			return res, errors.New("loadgen: bulk workload without messages")
		}
		bulk, err = openBulk(ctx, s, tc)
		if err != nil {
			return res, err
		}
		defer func() {
			for _, c := range bulk {
				c.Close()
			}
		}()
	}

	begin := time.Now()
	wctx, cancel := context.WithCancel(ctx)
	if s.Count > 0 {
		// A target that never completes a session must not hold the
		// run forever.
		wctx, cancel = context.WithTimeout(ctx, s.Warmup+maxCountWindow)
	}
	defer cancel()
	w := &window{cancel: cancel, start: begin.Add(s.Warmup), count: int64(s.Count), done: make(chan struct{})}
	if s.Count <= 0 {
		w.end.Store(w.start.Add(s.Duration).UnixNano())
	}
	var cpu0, cpu1 [3]time.Duration
	cpuc := make(chan struct{})
	go sampleCPU([3]func() time.Duration{s.CPU, s.BackendCPU, s.SysCPU}, w, &cpu0, &cpu1, cpuc)

	var next atomic.Uint64
	var left atomic.Int64
	left.Store(int64(s.Count))
	stats := make([]workerStats, s.Concurrency)
	var wg sync.WaitGroup
	for i := range stats {
		wg.Add(1)
		var c *Conn
		if bulk != nil {
			c = bulk[i]
		}
		go runWorker(wctx, &wg, s, tc, w, &next, &left, c, &stats[i])
	}
	wg.Wait()
	w.stop(time.Now()) // no-op unless every worker gave up early
	<-cpuc

	var h Hist
	for i := range stats {
		st := &stats[i]
		h.Merge(&st.hist)
		res.Sessions += st.sessions
		res.Errors += st.errors
		res.Bytes += st.bytes
		if res.FirstError == "" && st.firstErr != nil {
			res.FirstError = st.firstErr.Error()
		}
	}
	end := time.Unix(0, w.end.Load())
	secs := end.Sub(w.start).Seconds()
	res.Seconds = round(secs, 3)
	if secs > 0 {
		res.SessionsPS = round(float64(res.Sessions)/secs, 1)
	}
	res.P50ms = ms(h.Quantile(0.50))
	res.P99ms = ms(h.Quantile(0.99))
	res.MaxMs = ms(h.Max())
	if s.Workload == WorkBulk {
		res.SessionsPS = 0 // fetches, not sessions
		if secs > 0 {
			res.MBPerS = round(float64(res.Bytes)/1e6/secs, 1)
		}
	}
	if s.CPU != nil {
		res.CPUSeconds = round((cpu1[0] - cpu0[0]).Seconds(), 3)
		if res.Bytes > 0 {
			res.CPUSPerGB = round(res.CPUSeconds/(float64(res.Bytes)/1e9), 2)
		}
	}
	if s.BackendCPU != nil {
		res.BackendCPUSeconds = round((cpu1[1] - cpu0[1]).Seconds(), 3)
	}
	if s.SysCPU != nil {
		res.CPUSysSeconds = round((cpu1[2] - cpu0[2]).Seconds(), 3)
	}
	if s.Workload != WorkBulk && res.Sessions > 0 {
		if s.CPU != nil {
			res.CPUmsPerSess = round(res.CPUSeconds*1000/float64(res.Sessions), 3)
		}
		if s.BackendCPU != nil {
			res.BackendCPUmsPerSess = round(res.BackendCPUSeconds*1000/float64(res.Sessions), 3)
		}
	}
	if res.Sessions == 0 {
		return res, fmt.Errorf("loadgen: %s %s %s c=%d: nothing completed (errors %d, first: %s)",
			res.Target, res.Workload, res.TLS, res.Concurrency, res.Errors, res.FirstError)
	}
	return res, nil
}

// sampleCPU samples the CPU counters (nil ones are skipped) at the start
// and end of the window.
func sampleCPU(cpu [3]func() time.Duration, w *window, c0, c1 *[3]time.Duration, donec chan<- struct{}) {
	defer close(donec)
	sample := func(dst *[3]time.Duration) {
		for i, f := range cpu {
			if f != nil {
				dst[i] = f()
			}
		}
	}
	if e := w.end.Load(); e != 0 {
		// Fixed duration: stop the workers at the end of the window.
		time.Sleep(time.Until(w.start))
		sample(c0)
		time.Sleep(time.Until(time.Unix(0, e)))
		sample(c1)
		w.stop(time.Unix(0, e))
		return
	}
	time.Sleep(time.Until(w.start))
	sample(c0)
	<-w.done
	sample(c1)
}

func runWorker(ctx context.Context, wg *sync.WaitGroup, s Spec, tc *tlsConfigs, w *window,
	next *atomic.Uint64, left *atomic.Int64, bulk *Conn, st *workerStats) {
	defer wg.Done()
	seq := 0
	for ctx.Err() == nil && !w.stopped() {
		if e := w.end.Load(); e != 0 && time.Now().UnixNano() > e {
			w.stop(time.Unix(0, e))
			return
		}
		t0 := time.Now()
		var err error
		var n int64
		if bulk != nil {
			seq = seq%s.BulkMessages + 1
			bulk.SetDeadline(t0.Add(sessionTimeout))
			n, err = bulkFetch(bulk, seq)
		} else {
			u := &s.Users[next.Add(1)%uint64(len(s.Users))]
			sctx, cancel := context.WithTimeout(ctx, sessionTimeout)
			switch s.Workload {
			case WorkIMAPSession:
				err = imapSession(sctx, s.Target, tc, u, s.TLS)
			case WorkPOP3Session:
				err = pop3Session(sctx, s.Target, tc, u, s.TLS)
			default:
				err = fmt.Errorf("loadgen: unknown workload %q", s.Workload)
			}
			cancel()
		}
		t1 := time.Now()
		if err != nil {
			// Errors caused by closing the window are not the target's.
			if w.measured(t1) {
				st.errors++
			}
			if st.firstErr == nil && ctx.Err() == nil {
				st.firstErr = err
			}
			if bulk != nil {
				return // the conn is unusable
			}
			time.Sleep(errorBackoff)
			continue
		}
		if !w.measured(t1) {
			continue
		}
		if w.count > 0 && left.Add(-1) < 0 {
			w.stop(t1)
			return
		}
		st.sessions++
		st.bytes += n
		st.hist.Record(t1.Sub(t0))
		if w.count > 0 && left.Load() == 0 {
			w.stop(t1)
		}
	}
}

// openBulk logs in one session per worker, each as a different user.
func openBulk(ctx context.Context, s Spec, tc *tlsConfigs) ([]*Conn, error) {
	conns := make([]*Conn, 0, s.Concurrency)
	for i := 0; i < s.Concurrency; i++ {
		u := &s.Users[i%len(s.Users)]
		octx, cancel := context.WithTimeout(ctx, sessionTimeout)
		c, err := open(octx, s.Target, tc, u, IMAP, s.TLS)
		cancel()
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return nil, fmt.Errorf("bulk session for %s: %w", u.Mail, err)
		}
		c.SetDeadline(time.Time{})
		conns = append(conns, c)
	}
	return conns, nil
}

func ms(d time.Duration) float64 { return round(float64(d)/float64(time.Millisecond), 3) }

func round(f float64, digits int) float64 {
	p := 1.0
	for i := 0; i < digits; i++ {
		p *= 10
	}
	if f < 0 {
		return -float64(int64(-f*p+0.5)) / p
	}
	return float64(int64(f*p+0.5)) / p
}
