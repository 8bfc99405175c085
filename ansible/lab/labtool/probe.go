package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The probe's defaults and limits.
const (
	defaultInterval    = 50 * time.Millisecond  // between fresh logins, per client
	defaultHealthEvery = 200 * time.Millisecond // between /healthz polls of all nodes
	defaultIdlePerNode = 3                      // IDLE sessions opened on each node
	ioTimeout          = 5 * time.Second        // dial, TLS and each IMAP round trip
	healthTimeout      = time.Second            // one /healthz request
	reconnectPause     = 200 * time.Millisecond // between reconnect attempts of an IDLE client
	stopPoll           = 100 * time.Millisecond // how often the stop file is looked for
)

// Outcomes of one login attempt.
const (
	outOK          = "ok"
	outRefused     = "refused"      // connection refused: no listener
	outEOF         = "eof"          // connection closed or reset before the login's answer
	outLoginFailed = "login_failed" // the login was answered NO or BAD
	outOther       = "other"        // timeouts, TLS errors, anything else
)

// counts are the outcomes of the logins of one client.
type counts struct {
	Attempts  int            `json:"attempts"`
	Outcomes  map[string]int `json:"outcomes"`
	Samples   []string       `json:"samples,omitempty"` // the first few errors, for the log
	MaxRefuse string         `json:"longest_refused,omitempty"`

	refusedSince time.Time
	maxRefuse    time.Duration
}

// idleCounts are what the IDLE clients saw on one node.
type idleCounts struct {
	Opened          int `json:"opened"`          // IDLE sessions started here
	ByeUnavailable  int `json:"bye_unavailable"` // told * BYE [UNAVAILABLE]
	DroppedNoBye    int `json:"dropped_without_bye"`
	Reconnected     int `json:"reconnected"`      // of those dropped here: back in IDLE elsewhere
	ReconnectedSame int `json:"reconnected_same"` // … on this same node
	NotReconnected  int `json:"not_reconnected"`  // still trying when the probe stopped
	HeldAtEnd       int `json:"held_at_end"`
}

// report is the probe's result, written as JSON to -report.
type report struct {
	Duration   string                 `json:"duration"`
	Pinned     map[string]*counts     `json:"pinned"`
	Balanced   *counts                `json:"balanced"`
	NoHealthy  int                    `json:"balanced_no_healthy_node"`
	MinHealthy int                    `json:"min_healthy_nodes"`
	Idle       map[string]*idleCounts `json:"idle"`
}

// probe holds the clients' shared state.
type probe struct {
	nodes     []string
	port      int
	adminPort int
	interval  time.Duration
	tlsConf   *tls.Config
	stop      chan struct{}
	logger    *slog.Logger

	mu      sync.Mutex
	rep     report
	healthy map[string]bool
	started bool // every node has been healthy once
	conns   map[net.Conn]bool
	next    int // round robin over healthy nodes
	user    int // round robin over users
}

// runProbe runs the clients until the stop file appears.
func runProbe(args []string, logger *slog.Logger) error {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	nodes := fs.String("nodes", "", "comma-separated node addresses")
	caFile := fs.String("ca", "", "CA certificate the nodes' certificates chain to")
	port := fs.Int("port", 993, "IMAPS port of the nodes")
	adminPort := fs.Int("admin-port", 8025, "admin port of the nodes (/healthz)")
	interval := fs.Duration("interval", defaultInterval, "between fresh logins, per client")
	idle := fs.Int("idle", defaultIdlePerNode, "IDLE sessions per node")
	stopFile := fs.String("stop-file", "", "stop when this file exists")
	reportFile := fs.String("report", "", "write the JSON report here")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *nodes == "" || *caFile == "" || *stopFile == "" {
		return errors.New("probe: -nodes, -ca and -stop-file are required")
	}
	pem, err := os.ReadFile(*caFile)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("probe: no certificate in %s", *caFile)
	}
	p := &probe{
		nodes: strings.Split(*nodes, ","), port: *port, adminPort: *adminPort, interval: *interval,
		tlsConf: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		stop:    make(chan struct{}), logger: logger,
		healthy: map[string]bool{}, conns: map[net.Conn]bool{},
	}
	p.rep = report{Pinned: map[string]*counts{}, Balanced: newCounts(), Idle: map[string]*idleCounts{}, MinHealthy: len(p.nodes)}
	for _, n := range p.nodes {
		p.rep.Pinned[n] = newCounts()
		p.rep.Idle[n] = &idleCounts{}
	}
	start := time.Now()
	var wg sync.WaitGroup
	run := func(f func()) { wg.Add(1); go func() { defer wg.Done(); f() }() }
	run(p.healthLoop)
	p.waitStarted()
	for _, n := range p.nodes {
		run(func() { p.pinnedLoop(n) })
		for range *idle {
			run(func() { p.idleLoop(n) })
		}
	}
	run(p.balancedLoop)
	for !exists(*stopFile) {
		time.Sleep(stopPoll)
	}
	close(p.stop)
	p.closeAll()
	wg.Wait()
	p.rep.Duration = time.Since(start).Round(time.Millisecond).String()
	return p.finish(*reportFile)
}

func newCounts() *counts { return &counts{Outcomes: map[string]int{}} }

func exists(name string) bool {
	_, err := os.Stat(name)
	return err == nil
}

// stopped reports whether the probe is stopping.
func (p *probe) stopped() bool {
	select {
	case <-p.stop:
		return true
	default:
		return false
	}
}

// healthLoop polls every node's /healthz until the probe stops.
func (p *probe) healthLoop() {
	hc := &http.Client{Timeout: healthTimeout}
	t := time.NewTicker(defaultHealthEvery)
	defer t.Stop()
	for {
		up := map[string]bool{}
		n := 0
		for _, node := range p.nodes {
			resp, err := hc.Get(fmt.Sprintf("http://%s:%d/healthz", node, p.adminPort))
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					up[node] = true
					n++
				}
			}
		}
		p.mu.Lock()
		p.healthy = up
		if n == len(p.nodes) {
			p.started = true
		}
		if p.started && n < p.rep.MinHealthy {
			p.rep.MinHealthy = n
		}
		p.mu.Unlock()
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
	}
}

// waitStarted returns once every node has answered /healthz 200, or the
// probe stops.
func (p *probe) waitStarted() {
	for !p.stopped() {
		p.mu.Lock()
		ok := p.started
		p.mu.Unlock()
		if ok {
			return
		}
		time.Sleep(defaultHealthEvery)
	}
}

// pickHealthy returns the next healthy node other than avoid, else any
// healthy node, else "".
func (p *probe) pickHealthy(avoid string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	fallback := ""
	for range p.nodes {
		p.next = (p.next + 1) % len(p.nodes)
		n := p.nodes[p.next]
		if !p.healthy[n] {
			continue
		}
		if n != avoid {
			return n
		}
		fallback = n
	}
	return fallback
}

// nextUser returns the next generated user and its password.
func (p *probe) nextUser() (string, string) {
	p.mu.Lock()
	p.user = p.user%(2*usersPerBackend) + 1
	local := fmt.Sprintf("user%04d", p.user)
	p.mu.Unlock()
	return local + "@example.org", "secret-" + local
}

// pinnedLoop logs in to one node every interval, whatever its health.
func (p *probe) pinnedLoop(node string) {
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		out, err := p.loginOnce(node)
		p.record(p.rep.Pinned[node], out, node, err)
	}
}

// balancedLoop is the health-checking client: each login goes to the next
// node whose /healthz answered 200.
func (p *probe) balancedLoop() {
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		node := p.pickHealthy("")
		if node == "" {
			p.mu.Lock()
			p.rep.NoHealthy++
			p.mu.Unlock()
			continue
		}
		out, err := p.loginOnce(node)
		p.record(p.rep.Balanced, out, node, err)
	}
}

// record counts one outcome; errors during the stop are not counted.
func (p *probe) record(c *counts, out, node string, err error) {
	if p.stopped() {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	c.Attempts++
	c.Outcomes[out]++
	now := time.Now()
	if out == outRefused {
		if c.refusedSince.IsZero() {
			c.refusedSince = now
		}
	} else if !c.refusedSince.IsZero() {
		if d := now.Sub(c.refusedSince); d > c.maxRefuse {
			c.maxRefuse = d
			c.MaxRefuse = d.Round(time.Millisecond).String()
		}
		c.refusedSince = time.Time{}
	}
	if out != outOK && out != outRefused && len(c.Samples) < 5 {
		c.Samples = append(c.Samples, fmt.Sprintf("%s %s: %s: %v", now.Format("15:04:05.000"), node, out, err))
	}
}

// loginOnce opens a connection, logs in and out, and classifies the result.
func (p *probe) loginOnce(node string) (string, error) {
	s, out, err := p.login(node)
	if s != nil {
		s.command("z", "LOGOUT")
		s.close()
	}
	return out, err
}

// session is one IMAP connection.
type session struct {
	p    *probe
	conn net.Conn
	r    *bufio.Reader
}

// login dials node, reads the greeting and logs in as the next user.
func (p *probe) login(node string) (*session, string, error) {
	addr := net.JoinHostPort(node, fmt.Sprint(p.port))
	raw, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		return nil, classify(err), err
	}
	conf := p.tlsConf.Clone()
	conf.ServerName = node
	conn := tls.Client(raw, conf)
	s := &session{p: p, conn: conn, r: bufio.NewReader(conn)}
	if !p.track(conn) {
		conn.Close()
		return nil, outOther, errors.New("stopping")
	}
	conn.SetDeadline(time.Now().Add(ioTimeout))
	line, err := s.r.ReadString('\n')
	if err != nil {
		s.close()
		return nil, classify(err), fmt.Errorf("greeting: %w", err)
	}
	if !strings.HasPrefix(line, "* OK") {
		s.close()
		return nil, outLoginFailed, fmt.Errorf("greeting %q", strings.TrimSpace(line))
	}
	user, pass := p.nextUser()
	res, err := s.command("a", fmt.Sprintf("LOGIN %s %s", user, pass))
	if err != nil {
		s.close()
		return nil, classify(err), fmt.Errorf("login: %w", err)
	}
	if !strings.HasPrefix(res, "a OK") {
		s.close()
		return nil, outLoginFailed, fmt.Errorf("login %s: %q", user, strings.TrimSpace(res))
	}
	return s, outOK, nil
}

// command sends "tag cmd" and returns the tagged answer.
func (s *session) command(tag, cmd string) (string, error) {
	s.conn.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := fmt.Fprintf(s.conn, "%s %s\r\n", tag, cmd); err != nil {
		return "", err
	}
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return "", err
		}
		if strings.HasPrefix(line, tag+" ") {
			return line, nil
		}
	}
}

func (s *session) close() {
	s.p.untrack(s.conn)
	s.conn.Close()
}

// track registers a connection for closeAll; false once stopping.
func (p *probe) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped() {
		return false
	}
	p.conns[c] = true
	return true
}

func (p *probe) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// closeAll closes every open connection, ending the IDLE clients' reads.
func (p *probe) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

// classify maps a dial or read error to an outcome.
func classify(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return outRefused
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return outEOF
	default:
		return outOther
	}
}

// idleLoop holds one IDLE session, first on node; when the session ends it
// reconnects to another healthy node, and so on until the probe stops.
func (p *probe) idleLoop(node string) {
	dropped := "" // the node the last session ended on, while reconnecting
	for !p.stopped() {
		target := node
		if dropped != "" {
			if target = p.pickHealthy(dropped); target == "" {
				time.Sleep(reconnectPause)
				continue
			}
		}
		s, _, err := p.login(target)
		if err == nil {
			err = s.startIdle()
		}
		if err != nil {
			if s != nil {
				s.close()
			}
			time.Sleep(reconnectPause)
			continue
		}
		p.mu.Lock()
		p.rep.Idle[target].Opened++
		if dropped != "" {
			p.rep.Idle[dropped].Reconnected++
			if target == dropped {
				p.rep.Idle[dropped].ReconnectedSame++
			}
		}
		p.mu.Unlock()
		bye := s.waitEnd()
		s.close()
		if p.stopped() {
			p.mu.Lock()
			p.rep.Idle[target].HeldAtEnd++
			p.mu.Unlock()
			return
		}
		p.mu.Lock()
		if strings.Contains(bye, "[UNAVAILABLE]") {
			p.rep.Idle[target].ByeUnavailable++
		} else {
			p.rep.Idle[target].DroppedNoBye++
			p.logger.Warn("IDLE session ended without BYE [UNAVAILABLE]", "node", target, "last", bye)
		}
		p.mu.Unlock()
		dropped = target
		node = target
	}
	if dropped != "" {
		p.mu.Lock()
		p.rep.Idle[dropped].NotReconnected++
		p.mu.Unlock()
	}
}

// startIdle selects INBOX and enters IDLE.
func (s *session) startIdle() error {
	if res, err := s.command("s", "SELECT INBOX"); err != nil || !strings.HasPrefix(res, "s OK") {
		return fmt.Errorf("select: %q %v", res, err)
	}
	fmt.Fprintf(s.conn, "i IDLE\r\n")
	line, err := s.r.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "+") {
		return fmt.Errorf("idle: %q %v", line, err)
	}
	return nil
}

// waitEnd reads until the connection ends and returns the BYE line, if any.
func (s *session) waitEnd() string {
	s.conn.SetDeadline(time.Time{})
	bye := ""
	for {
		line, err := s.r.ReadString('\n')
		if strings.HasPrefix(line, "* BYE") {
			bye = strings.TrimSpace(line)
		}
		if err != nil {
			return bye
		}
	}
}

// finish writes the report and judges it.
func (p *probe) finish(file string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	b, _ := json.MarshalIndent(&p.rep, "", "  ")
	if file != "" {
		if err := os.WriteFile(file, b, 0o644); err != nil {
			return fmt.Errorf("probe: %w", err)
		}
	}
	fmt.Printf("probe ran %s\n", p.rep.Duration)
	for _, n := range p.nodes {
		c, ic := p.rep.Pinned[n], p.rep.Idle[n]
		fmt.Printf("  pinned %-11s %5d logins: %s; longest refusal %s\n", n, c.Attempts, fmtOutcomes(c.Outcomes), orNone(c.MaxRefuse))
		fmt.Printf("  idle   %-11s opened %d, BYE [UNAVAILABLE] %d, dropped without BYE %d, reconnected %d (same node %d), not reconnected %d, held at end %d\n",
			n, ic.Opened, ic.ByeUnavailable, ic.DroppedNoBye, ic.Reconnected, ic.ReconnectedSame, ic.NotReconnected, ic.HeldAtEnd)
	}
	fmt.Printf("  balanced (health-checking) %d logins: %s; no healthy node %d times; fewest healthy nodes %d\n",
		p.rep.Balanced.Attempts, fmtOutcomes(p.rep.Balanced.Outcomes), p.rep.NoHealthy, p.rep.MinHealthy)
	for _, n := range p.nodes {
		for _, s := range p.rep.Pinned[n].Samples {
			fmt.Println("  sample:", s)
		}
	}
	for _, s := range p.rep.Balanced.Samples {
		fmt.Println("  sample (balanced):", s)
	}
	return nil
}

func fmtOutcomes(m map[string]int) string {
	var parts []string
	for _, k := range []string{outOK, outRefused, outEOF, outLoginFailed, outOther} {
		if m[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
