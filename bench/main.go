// Command bench measures Switchboard against direct Dovecot, a bare TCP
// relay (the floor under any proxy), Perdition, Dovecot's own proxy mode
// and nginx's mail proxy, in one run on one machine, over the testbed of
// the integration tests (a real slapd and two real Dovecot backends with
// seeded mailboxes). See docs/performance.md for the method and the knobs.
//
//	go run ./bench            # full run, about 30 minutes
//	BENCH_QUICK=1 go run ./bench   # quick run, about 4 minutes
//
// It writes one JSON line per figure to bench/results/<timestamp>.jsonl,
// prints a markdown table of ratios to direct Dovecot, Perdition and the
// relay, and
// puts that table into docs/performance.md between its markers.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"switchboard/bench/loadgen"
)

// config is the run's knobs: flags, each defaulting from an environment
// variable so that `make bench` can be steered with BENCH_*.
type config struct {
	quick       bool
	warmup      time.Duration
	duration    time.Duration
	count       int
	rounds      int
	conc        []int
	bulkConc    []int
	tlsModes    []loadgen.TLSMode
	bulkTLS     []loadgen.TLSMode
	idleTLS     []loadgen.TLSMode
	idleN       int
	usersPerBE  int
	targets     []string
	workloads   []string
	resultsDir  string
	docFile     string
	keep        bool
	hold        bool
	switchboard string
	baseline    string
}

var allTargets = []string{"direct", "relay", "perdition", "dovecot-proxy", "nginx", "switchboard"}

func parseConfig() (*config, error) {
	quick := envBool("BENCH_QUICK")
	def := func(full, q string) string {
		if quick {
			return q
		}
		return full
	}
	c := &config{quick: quick}
	var conc, bulkConc, tlsModes, bulkTLS, idleTLS, targets, workloads string
	flag.BoolVar(&c.quick, "quick", quick, "quick mode (BENCH_QUICK): short windows, fewer idle sessions")
	flag.DurationVar(&c.warmup, "warmup", envDuration("BENCH_WARMUP", def("1s", "500ms")), "unmeasured warm-up before each figure (BENCH_WARMUP)")
	flag.DurationVar(&c.duration, "duration", envDuration("BENCH_DURATION", def("3s", "1s")), "measured window of each figure (BENCH_DURATION)")
	flag.IntVar(&c.count, "count", envInt("BENCH_COUNT", 0), "measure this many sessions (or fetches) per figure instead of a fixed window (BENCH_COUNT)")
	flag.IntVar(&c.rounds, "rounds", envInt("BENCH_ROUNDS", map[bool]int{false: 3, true: 1}[quick]), "rounds of each session and bulk figure over all targets, in rotated order; the figure is their mean (BENCH_ROUNDS)")
	flag.StringVar(&conc, "concurrency", env("BENCH_CONCURRENCY", "1,16,64"), "session workloads' concurrencies (BENCH_CONCURRENCY)")
	flag.StringVar(&bulkConc, "bulk-concurrency", env("BENCH_BULK_CONCURRENCY", "1,4"), "bulk FETCH concurrencies (BENCH_BULK_CONCURRENCY)")
	flag.StringVar(&tlsModes, "tls", env("BENCH_TLS", def("none,implicit,starttls", "none,implicit")), "TLS modes of the session workloads (BENCH_TLS)")
	flag.StringVar(&bulkTLS, "bulk-tls", env("BENCH_BULK_TLS", def("none,implicit", "none")), "TLS modes of the bulk workload (BENCH_BULK_TLS)")
	flag.StringVar(&idleTLS, "idle-tls", env("BENCH_IDLE_TLS", "none,implicit"), "TLS modes of the idle workload (BENCH_IDLE_TLS)")
	flag.IntVar(&c.idleN, "idle", envInt("BENCH_IDLE_N", map[bool]int{false: 5000, true: 300}[quick]), "sessions held in IDLE (BENCH_IDLE_N)")
	flag.IntVar(&c.usersPerBE, "users", envInt("BENCH_USERS_PER_BACKEND", 100), "seeded users per backend (BENCH_USERS_PER_BACKEND)")
	flag.StringVar(&targets, "targets", env("BENCH_TARGETS", strings.Join(allTargets, ",")), "targets to measure (BENCH_TARGETS)")
	flag.StringVar(&workloads, "workloads", env("BENCH_WORKLOADS", "imap-session,pop3-session,bulk-fetch,idle"), "workloads to run (BENCH_WORKLOADS)")
	flag.StringVar(&c.resultsDir, "results", env("BENCH_RESULTS", "bench/results"), "directory for the JSON lines (BENCH_RESULTS)")
	docDefault := "docs/performance.md"
	if v, ok := os.LookupEnv("BENCH_DOC"); ok {
		docDefault = v // BENCH_DOC= (empty): no file
	}
	flag.StringVar(&c.docFile, "doc", docDefault, "markdown file whose table is replaced; empty for none (BENCH_DOC)")
	flag.BoolVar(&c.keep, "keep", envBool("BENCH_KEEP"), "keep the testbed directory (logs, configs) after the run (BENCH_KEEP)")
	flag.BoolVar(&c.hold, "hold", false, "start the testbed and the targets, print their addresses and a user, and wait for a signal instead of measuring")
	flag.StringVar(&c.switchboard, "switchboard", env("BENCH_SWITCHBOARD", ""), "switchboard binary; empty builds ./cmd/switchboard (BENCH_SWITCHBOARD)")
	flag.StringVar(&c.baseline, "baseline", env("BENCH_BASELINE", ""), "another switchboard binary (an earlier build, say), measured in the same run as target \"baseline\" (BENCH_BASELINE)")
	flag.Parse()
	if c.quick && !quick {
		// -quick given on the command line: quick defaults for every
		// knob neither set by flag nor by environment.
		set := make(map[string]bool)
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		quickDefault := func(name, envKey string, apply func()) {
			if !set[name] && os.Getenv(envKey) == "" {
				apply()
			}
		}
		quickDefault("warmup", "BENCH_WARMUP", func() { c.warmup = 500 * time.Millisecond })
		quickDefault("duration", "BENCH_DURATION", func() { c.duration = time.Second })
		quickDefault("bulk-tls", "BENCH_BULK_TLS", func() { bulkTLS = "none" })
		quickDefault("tls", "BENCH_TLS", func() { tlsModes = "none,implicit" })
		quickDefault("idle", "BENCH_IDLE_N", func() { c.idleN = 300 })
		quickDefault("rounds", "BENCH_ROUNDS", func() { c.rounds = 1 })
	}

	if c.rounds < 1 {
		return nil, fmt.Errorf("rounds must be at least 1, not %d", c.rounds)
	}
	var err error
	if c.conc, err = ints(conc); err != nil {
		return nil, err
	}
	if c.bulkConc, err = ints(bulkConc); err != nil {
		return nil, err
	}
	for _, p := range []struct {
		s   string
		dst *[]loadgen.TLSMode
	}{{tlsModes, &c.tlsModes}, {bulkTLS, &c.bulkTLS}, {idleTLS, &c.idleTLS}} {
		for _, m := range list(p.s) {
			switch loadgen.TLSMode(m) {
			case loadgen.TLSNone, loadgen.TLSImplicit, loadgen.TLSStartTLS:
				*p.dst = append(*p.dst, loadgen.TLSMode(m))
			default:
				return nil, fmt.Errorf("unknown TLS mode %q (none, implicit, starttls)", m)
			}
		}
	}
	c.targets = list(targets)
	for _, t := range c.targets {
		if !contains(allTargets, t) {
			return nil, fmt.Errorf("unknown target %q (%s)", t, strings.Join(allTargets, ", "))
		}
	}
	if c.baseline != "" {
		// Two builds side by side: rounds pair them as they pair the
		// other targets.
		c.targets = append(c.targets, "baseline")
	}
	c.workloads = list(workloads)
	return c, nil
}

func main() {
	loadgen.MaybeIdleChild()
	maybeRelayChild()
	maybeNginxAuthChild()
	log.SetFlags(log.Ltime)
	log.SetPrefix("bench: ")
	cfg, err := parseConfig()
	if err != nil {
		log.Fatal(err)
	}
	if os.Geteuid() != 0 {
		log.Fatal("the testbed needs root (Dovecot switches to the mail user, perdition binds as root)")
	}
	raiseNoFile()
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if err := run(ctx, cfg); err != nil {
		log.Fatal(err)
	}
}

// raiseNoFile lifts the soft descriptor limit to the hard one. Calling
// Setrlimit ourselves also makes the targets we start inherit it.
func raiseNoFile() {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
}

func run(ctx context.Context, cfg *config) error {
	started := time.Now()
	runID := started.UTC().Format("20060102T150405Z")
	dir, err := os.MkdirTemp("", "sbbench")
	if err != nil {
		return err
	}
	if cfg.keep {
		log.Printf("testbed directory: %s (kept)", dir)
	} else {
		defer os.RemoveAll(dir)
	}

	log.Printf("starting the testbed (%d users per backend)", cfg.usersPerBE)
	tb, err := startBed(dir, cfg.usersPerBE)
	if err != nil {
		return err
	}
	defer tb.close()
	log.Printf("testbed up in %v: slapd %s, mx1 %s, mx2 %s", time.Since(started).Round(time.Millisecond),
		tb.slapd.Addr, tb.backends[0].IP, tb.backends[1].IP)

	targets := startTargets(ctx, cfg, tb, dir)
	defer func() {
		for _, t := range targets {
			t.stop()
		}
	}()

	if cfg.hold {
		return hold(ctx, tb, targets)
	}

	if err := os.MkdirAll(cfg.resultsDir, 0o755); err != nil {
		return err
	}
	outPath := filepath.Join(cfg.resultsDir, runID+".jsonl")
	out, err := os.Create(outPath)
	if err != nil {
		return err
	}
	defer out.Close()
	enc := json.NewEncoder(out)
	mode := "full"
	if cfg.quick {
		mode = "quick"
	}
	var rows []row
	emit := func(r loadgen.Result, perRound []loadgen.Result) {
		rw := row{Result: r, Run: runID, Mode: mode}
		if len(perRound) > 1 {
			rw.PerRound = perRound
		}
		rows = append(rows, rw)
		if err := enc.Encode(rw); err != nil {
			log.Printf("write %s: %v", outPath, err)
		}
	}
	for _, t := range targets {
		if t.skip != "" {
			log.Printf("%s: not available: %s", t.name(), t.skip)
			emit(loadgen.Result{Target: t.name(), Workload: "all", Skipped: t.skip}, nil)
		}
	}

	warmUp(ctx, cfg, tb, targets)
	figs := figures(cfg)
	for i, f := range figs {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		log.Printf("[%d/%d] %s", i+1, len(figs), f)
		rounds := cfg.rounds
		if f.workload == loadgen.WorkIdle {
			rounds = 1 // minutes per target, and memory is not noisy
		}
		got := make(map[*target][]loadgen.Result)
		var order []*target
		for round := range rounds {
			// Rotate the order of targets from one figure, and one
			// round, to the next, so that drift in the machine's load
			// (it is shared) does not always favour the same target.
			for j := range targets {
				t := targets[(i+j+round)%len(targets)]
				if t.skip != "" {
					continue
				}
				r, err := f.run(ctx, cfg, tb, t)
				if errors.Is(err, errUnsupported) {
					continue
				}
				if err != nil {
					log.Printf("  %-14s error: %v", t.name(), err)
					if r.FirstError == "" {
						r.FirstError = err.Error()
					}
				} else {
					log.Printf("  %-14s %s", t.name(), summary(r))
				}
				if _, ok := got[t]; !ok {
					order = append(order, t)
				}
				got[t] = append(got[t], r)
			}
		}
		for _, t := range order {
			emit(meanResult(got[t]), got[t])
		}
	}
	table := renderTable(rows, cfg, runID, time.Since(started))
	fmt.Println()
	fmt.Print(table)
	log.Printf("results: %s", outPath)
	if cfg.docFile != "" {
		if err := updateDoc(cfg.docFile, table); err != nil {
			return err
		}
		log.Printf("table written to %s", cfg.docFile)
	}
	log.Printf("done in %v", time.Since(started).Round(time.Second))
	return nil
}

// warmUpTime is how long each target is run, unmeasured, before the first
// figure.
const warmUpTime = 3 * time.Second

// warmUp runs IMAP and POP3 sessions through every target before the first
// figure, so that none of them (nor the backends, which start their
// reusable processes on demand) is measured cold: the first figure's
// first target would otherwise pay for it.
func warmUp(ctx context.Context, cfg *config, tb *bed, targets []*target) {
	log.Printf("warming up every target (%v each)", warmUpTime)
	for _, t := range targets {
		if t.skip != "" {
			continue
		}
		for _, p := range []loadgen.Proto{loadgen.IMAP, loadgen.POP3} {
			w := loadgen.WorkIMAPSession
			if p == loadgen.POP3 {
				w = loadgen.WorkPOP3Session
			}
			if !contains(cfg.workloads, w) || !t.lg.Supports(p, loadgen.TLSNone) {
				continue
			}
			_, err := loadgen.Run(ctx, loadgen.Spec{Target: t.lg, Workload: w, TLS: loadgen.TLSNone,
				Concurrency: 16, Duration: warmUpTime / 2, Users: tb.users})
			if err != nil {
				log.Printf("  %-14s warm-up: %v", t.name(), err)
			}
		}
	}
}

// hold prints where everything listens and waits for a signal.
func hold(ctx context.Context, tb *bed, targets []*target) error {
	u := tb.users[0]
	fmt.Printf("user %s password %s (on %s); bulk user %s password %s\n",
		u.Mail, u.Password, u.Host, tb.bulkUsers[0].Mail, tb.bulkUsers[0].Password)
	fmt.Printf("slapd %s base %s bind %s / %s; CA %s\n", tb.slapd.URI, tb.slapd.PeopleDN, tb.slapd.BindDN, tb.slapd.BindPassword, tb.ca.File)
	for _, t := range targets {
		switch {
		case t.skip != "":
			fmt.Printf("%s: not available: %s\n", t.name(), t.skip)
		case t.lg.PerHost != nil:
			fmt.Printf("%s: %v\n", t.name(), t.lg.PerHost)
		default:
			fmt.Printf("%s: %v\n", t.name(), t.lg.Addrs)
		}
	}
	fmt.Println("holding; interrupt to stop")
	<-ctx.Done()
	return nil
}

// meanResult merges the rounds of one figure on one target: counts and
// seconds add up, rates and latencies are the mean of the rounds' (a p50
// so merged is the mean of the rounds' p50s), the maximum is the largest.
func meanResult(rs []loadgen.Result) loadgen.Result {
	m := rs[0]
	if len(rs) == 1 {
		return m
	}
	n := float64(len(rs))
	mean := func(f func(*loadgen.Result) float64) float64 {
		var sum float64
		for i := range rs {
			sum += f(&rs[i])
		}
		return math.Round(sum/n*1000) / 1000
	}
	m.SessionsPS = mean(func(r *loadgen.Result) float64 { return r.SessionsPS })
	m.P50ms = mean(func(r *loadgen.Result) float64 { return r.P50ms })
	m.P99ms = mean(func(r *loadgen.Result) float64 { return r.P99ms })
	m.MBPerS = mean(func(r *loadgen.Result) float64 { return r.MBPerS })
	m.CPUSPerGB = mean(func(r *loadgen.Result) float64 { return r.CPUSPerGB })
	m.CPUmsPerSess = mean(func(r *loadgen.Result) float64 { return r.CPUmsPerSess })
	m.BackendCPUmsPerSess = mean(func(r *loadgen.Result) float64 { return r.BackendCPUmsPerSess })
	m.OtherCPU = mean(func(r *loadgen.Result) float64 { return r.OtherCPU })
	for _, r := range rs[1:] {
		m.Sessions += r.Sessions
		m.Errors += r.Errors
		m.Seconds += r.Seconds
		m.Bytes += r.Bytes
		m.CPUSeconds += r.CPUSeconds
		m.CPUSysSeconds += r.CPUSysSeconds
		m.BackendCPUSeconds += r.BackendCPUSeconds
		m.MaxMs = max(m.MaxMs, r.MaxMs)
		if m.FirstError == "" {
			m.FirstError = r.FirstError
		}
	}
	m.Rounds = len(rs)
	return m
}

// row is one JSON line: a result plus the run it belongs to, and the
// rounds it is the mean of, in order (round k of every target ran close
// together in time, so they pair).
type row struct {
	loadgen.Result
	Run      string           `json:"run"`
	Mode     string           `json:"mode"`
	PerRound []loadgen.Result `json:"per_round,omitempty"`
}

func summary(r loadgen.Result) string {
	var b strings.Builder
	switch r.Workload {
	case loadgen.WorkBulk:
		fmt.Fprintf(&b, "%.1f MB/s, p50 %.2f ms/fetch, cpu %.2f s/GB", r.MBPerS, r.P50ms, r.CPUSPerGB)
	case loadgen.WorkIdle:
		fmt.Fprintf(&b, "%d sessions, %.1f KiB/session (%s; rss %.1f, pss %.1f; %d procs)",
			r.IdleSessions, r.MemKiBPerSess, r.MemKind, r.RSSKiBPerSess, r.PSSKiBPerSess, r.Processes)
	default:
		fmt.Fprintf(&b, "%.0f sessions/s, p50 %.2f ms, p99 %.2f ms, cpu %.3f ms/session (%.0f%% sys; backends %.3f)",
			r.SessionsPS, r.P50ms, r.P99ms, r.CPUmsPerSess, 100*r.CPUSysSeconds/max(r.CPUSeconds, 1e-9), r.BackendCPUmsPerSess)
	}
	if r.Errors > 0 {
		fmt.Fprintf(&b, " [%d errors: %.120s]", r.Errors, r.FirstError)
	}
	if r.OtherCPU >= 0.05 {
		fmt.Fprintf(&b, " (others used %.0f%% of the CPUs)", r.OtherCPU*100)
	}
	return b.String()
}

func env(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func envBool(k string) bool {
	v := os.Getenv(k)
	return v != "" && v != "0" && v != "false"
}

func envInt(k string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(k)); err == nil {
		return n
	}
	return def
}

func envDuration(k, def string) time.Duration {
	d, err := time.ParseDuration(env(k, def))
	if err != nil {
		d, _ = time.ParseDuration(def)
	}
	return d
}

func list(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range list(s) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bad concurrency %q", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
