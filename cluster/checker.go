package cluster

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net"
	"strings"
	"sync"
	"time"
)

// Defaults of NewChecker's interval and timeout, exported so that the
// configuration fills in and checks the same values.
const (
	// DefaultCheckInterval: a dead backend is noticed in about two
	// intervals (checkFall probes).
	DefaultCheckInterval = time.Second
	// DefaultCheckTimeout bounds one probe: connect and greeting.
	DefaultCheckTimeout = time.Second
)

const (
	// checkFall consecutive failed probes mark a backend down; one success
	// marks it up again. The first probe's result counts at once.
	checkFall = 2
	// maxGreetingLen bounds the greeting line read by ProbeGreeting.
	maxGreetingLen = 1024
	// checkParallel bounds concurrent probes.
	checkParallel = 16
)

// HealthSetter receives probe results; *Cluster implements it.
type HealthSetter interface {
	SetBackendHealth(backend string, up bool)
}

// ProbeFunc checks one backend address.
type ProbeFunc func(ctx context.Context, addr string) error

// Checker probes backends periodically and reports their health.
type Checker struct {
	hs       HealthSetter
	backends func() map[string]string
	interval time.Duration
	timeout  time.Duration
	probe    ProbeFunc

	mu    sync.Mutex
	fails map[string]int // consecutive failures by backend
}

// NewChecker returns a Checker that, once Run, probes every backend of
// backends() (name -> "host:port", called each round so configuration
// reloads apply) every interval (default 1 s) with probe (default
// ProbeGreeting), each probe bounded by timeout (default 1 s), and reports
// to hs. A backend is reported down after 2 consecutive failures and up
// after 1 success. Keep interval well below the cluster's HealthTTL.
func NewChecker(hs HealthSetter, backends func() map[string]string, interval, timeout time.Duration, probe ProbeFunc) *Checker {
	if probe == nil {
		probe = ProbeGreeting
	}
	return &Checker{
		hs:       hs,
		backends: backends,
		interval: durationOr(interval, DefaultCheckInterval),
		timeout:  durationOr(timeout, DefaultCheckTimeout),
		probe:    probe,
		fails:    make(map[string]int),
	}
}

// Run probes until ctx is done, starting at once.
func (ch *Checker) Run(ctx context.Context) {
	tk := time.NewTicker(ch.interval)
	defer tk.Stop()
	for {
		ch.CheckNow(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
	}
}

// CheckNow probes every backend once, in parallel, and reports the results.
func (ch *Checker) CheckNow(ctx context.Context) {
	backends := maps.Clone(ch.backends())
	ch.mu.Lock()
	for name := range ch.fails {
		if _, ok := backends[name]; !ok {
			delete(ch.fails, name) // removed from configuration
		}
	}
	ch.mu.Unlock()
	var wg sync.WaitGroup
	sem := make(chan struct{}, checkParallel)
	for name, addr := range backends {
		wg.Add(1)
		p := &probeRun{ch: ch, name: name, addr: addr, sem: sem, wg: &wg}
		go p.run(ctx)
	}
	wg.Wait()
}

// probeRun is one probe of one backend.
type probeRun struct {
	ch         *Checker
	name, addr string
	sem        chan struct{}
	wg         *sync.WaitGroup
}

// run is the goroutine of one probe.
func (p *probeRun) run(ctx context.Context) {
	defer p.wg.Done()
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	defer func() { <-p.sem }()
	pctx, cancel := context.WithTimeout(ctx, p.ch.timeout)
	err := p.ch.probe(pctx, p.addr)
	cancel()
	if ctx.Err() != nil {
		return // shutting down: the result means nothing
	}
	p.ch.report(p.name, err)
}

func (ch *Checker) report(name string, err error) {
	ch.mu.Lock()
	n, seen := ch.fails[name]
	if err == nil {
		n = 0
	} else {
		n++
	}
	ch.fails[name] = n
	ch.mu.Unlock()
	switch {
	case err == nil:
		ch.hs.SetBackendHealth(name, true)
	case n >= checkFall || !seen:
		ch.hs.SetBackendHealth(name, false)
	default:
		// One failure after success: keep reporting up until confirmed.
		ch.hs.SetBackendHealth(name, true)
	}
}

// ProbeGreeting connects to addr over TCP, reads the greeting line and
// requires it to start with "* OK" (IMAP, RFC 9051 section 7.1.1) or "+OK"
// (POP3, RFC 1939 section 4), then says LOGOUT or QUIT and closes. A
// "* PREAUTH" or "* BYE" greeting, a timeout or anything else is a failure.
// The deadline comes from ctx (3 s if it has none).
func ProbeGreeting(ctx context.Context, addr string) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	return readGreeting(ctx, conn)
}

// ProbeGreetingTLS returns a probe like ProbeGreeting for implicit-TLS
// ports (imaps 993, pop3s 995); config must set ServerName or RootCAs as
// for a real client.
func ProbeGreetingTLS(config *tls.Config) ProbeFunc {
	return func(ctx context.Context, addr string) error {
		d := tls.Dialer{Config: config}
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		defer conn.Close()
		return readGreeting(ctx, conn)
	}
}

var errBadGreeting = errors.New("cluster: unexpected greeting")

func readGreeting(ctx context.Context, conn net.Conn) error {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(DefaultCheckTimeout)
	}
	if err := conn.SetDeadline(deadline); err != nil {
		return err
	}
	br := bufio.NewReaderSize(conn, maxGreetingLen)
	line, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return fmt.Errorf("%w: line over %d bytes", errBadGreeting, maxGreetingLen)
		}
		return fmt.Errorf("read greeting: %w", err)
	}
	s := string(line)
	switch {
	case strings.HasPrefix(s, "* OK"):
		_, _ = conn.Write([]byte("a LOGOUT\r\n"))
	case strings.HasPrefix(s, "+OK"):
		_, _ = conn.Write([]byte("QUIT\r\n"))
	default:
		// Quote only a short prefix: the line comes from the network.
		return fmt.Errorf("%w: %q", errBadGreeting, truncate(strings.TrimSpace(s), 40))
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
