package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"switchboard/cluster"
	"switchboard/gate"
	"switchboard/internal/usertable"
	"switchboard/ldapmap"
	"switchboard/route"
	"switchboard/router"
)

// Limits of the HTTP server. Control requests wait at most about a second
// for the cluster, so these are generous.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 60 * time.Second
	maxHeaderBytes    = 8 << 10
	// maxBodyBytes bounds a control request's JSON body.
	maxBodyBytes = 4 << 10
	// maxUserLen is the longest user name accepted, as package cluster.
	maxUserLen = 255
	// maxHoldTTL is the longest hold, as every hold table caps it.
	maxHoldTTL = usertable.MaxHoldTTL
)

// Router is what the listener reads of the session core; *router.Server
// implements it.
type Router interface {
	Sessions() []router.SessionInfo
	Stats() router.StatsSnapshot
}

// Cluster is what the listener reads of the cluster; *cluster.Cluster
// implements it.
type Cluster interface {
	Name() string
	Members() []cluster.Member
	Health() map[string]map[string]bool
	BackendDown(backend string) bool
	Stats() cluster.Stats
}

// Control carries out the control requests; *control.Control implements
// it, for the whole cluster or for a node of its own. A returned error
// wrapping cluster.ErrNotDelivered means the request was accepted but not
// confirmed by every member directly (gossip carries it on).
type Control interface {
	// Invalidate drops user's cached route, and with kick closes user's
	// sessions.
	Invalidate(user string, kick bool) error
	// Hold puts user on hold for ttl (a default if zero), or releases.
	Hold(user string, held bool, ttl time.Duration) error
}

// Options configure a Server. New copies them.
type Options struct {
	// Addr is the "host:port" to listen on. Required.
	Addr string
	// Metrics, if set, are served on /metrics beside the listener's own
	// (the webmail cache's, say).
	Metrics prometheus.Gatherer
	// Access says who may read and who may change state: the tokens,
	// the names the Host header may carry, the profiler. Its zero value
	// serves reads to loopback peers and turns control off.
	Access Access
	// Node names this node in /status; default the cluster's name, or
	// "local".
	Node string
	// Version is reported in /status and switchboard_build_info.
	Version string
	// Router is the session core. Required.
	Router Router
	// Control carries out invalidate, hold and release. Required.
	Control Control
	// Cluster, if set, adds members, backend health and gossip counts.
	Cluster Cluster
	// Backends are the backend names of the host map: the values of the
	// backend label.
	Backends []string
	// BackendName maps a session's backend address to its name in
	// Backends, "" if none. Nil: every session counts as "other".
	BackendName func(addr string) string
	// MapCache, if set, returns the LDAP cache's counters.
	MapCache func() ldapmap.CacheStats
	// Gate, if set, returns the gate's counters.
	Gate func() gate.Stats
	// Logger receives one line per control request and per refused
	// request; nil means slog.Default().
	Logger *slog.Logger
}

// Server is the admin listener.
type Server struct {
	opts  Options
	log   *slog.Logger
	tok   tokens
	hosts map[string]bool // Access.HostNames and a name in Addr, lower case
	reg   *prometheus.Registry
	hs    *http.Server

	ready    atomic.Bool
	draining atomic.Bool

	mu    sync.Mutex
	donec chan struct{} // closed when serve returns; nil before Start
}

// New returns a Server; Start binds and serves it.
func New(opts *Options) *Server {
	s := &Server{opts: *opts, log: opts.Logger}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.opts.Node == "" {
		s.opts.Node = "local"
		if s.opts.Cluster != nil {
			s.opts.Node = s.opts.Cluster.Name()
		}
	}
	s.tok = newTokens(&s.opts.Access)
	s.hosts = hostSet(&s.opts.Access, s.opts.Addr)
	s.reg = prometheus.NewRegistry()
	s.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&collector{s: s},
	)
	mux := http.NewServeMux()
	var g prometheus.Gatherer = s.reg
	if s.opts.Metrics != nil {
		g = prometheus.Gatherers{s.reg, s.opts.Metrics}
	}
	mux.Handle("GET /metrics", s.guard(levelRead, promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
	})))
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.Handle("GET /status", s.guard(levelRead, http.HandlerFunc(s.status)))
	mux.Handle("POST /v1/invalidate", s.guard(levelControl, http.HandlerFunc(s.invalidate)))
	mux.Handle("POST /v1/hold", s.guard(levelControl, http.HandlerFunc(s.hold)))
	mux.Handle("POST /v1/release", s.guard(levelControl, http.HandlerFunc(s.release)))
	mux.Handle("POST /v1/drain", s.guard(levelControl, http.HandlerFunc(s.drain)))
	if s.opts.Access.Pprof {
		s.handlePprof(mux)
	}
	s.hs = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	return s
}

// Handler returns the HTTP handler, for tests.
func (s *Server) Handler() http.Handler { return s.hs.Handler }

// Start binds Options.Addr and serves on it until Shutdown. It returns
// the bound address.
func (s *Server) Start() (net.Addr, error) {
	ln, err := net.Listen("tcp", s.opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	s.mu.Lock()
	s.donec = make(chan struct{})
	s.mu.Unlock()
	go s.serve(ln)
	return ln.Addr(), nil
}

// serve is the goroutine of the HTTP server.
func (s *Server) serve(ln net.Listener) {
	defer close(s.donec)
	if err := s.hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.log.Error("admin listener stopped", "err", err)
	}
}

// SetReady makes /healthz answer 200 (unless draining).
func (s *Server) SetReady() { s.ready.Store(true) }

// SetDraining makes /healthz answer 503 from now on.
func (s *Server) SetDraining() { s.draining.Store(true) }

// Shutdown stops the listener, lets requests in flight finish until ctx
// is done, then closes them.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.hs.Shutdown(ctx)
	if err != nil {
		s.hs.Close()
	}
	s.mu.Lock()
	donec := s.donec
	s.mu.Unlock()
	if donec != nil {
		<-donec
	}
	return err
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	switch {
	case s.draining.Load():
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "draining")
	case !s.ready.Load():
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "starting")
	default:
		fmt.Fprintln(w, "ok")
	}
}

// Status is the /status answer.
type Status struct {
	Node     string `json:"node"`
	Version  string `json:"version,omitempty"`
	Draining bool   `json:"draining"`
	// Clustered is false on a node without [cluster].
	Clustered bool           `json:"clustered"`
	Members   []MemberStatus `json:"members"`
	// Backends is each live node's fresh view: node -> backend -> "up"
	// or "down".
	Backends map[string]map[string]string `json:"backends"`
	// Cluster is the cluster's verdict on each backend of the host map
	// (down when a strict majority of fresh reports say so).
	Cluster map[string]string `json:"cluster,omitempty"`
	// Sessions are this node's logged-in sessions by protocol.
	Sessions map[string]int `json:"sessions"`
}

// MemberStatus is one member in Status.
type MemberStatus struct {
	Name  string    `json:"name"`
	Addr  string    `json:"addr,omitempty"`
	State string    `json:"state"`
	Since time.Time `json:"since,omitzero"`
	Local bool      `json:"local,omitempty"`
	// Meta is what the node publishes about itself (version, admin
	// address).
	Meta map[string]string `json:"meta,omitempty"`
}

// Status returns what /status shows.
func (s *Server) Status() *Status {
	st := &Status{
		Node:     s.opts.Node,
		Version:  s.opts.Version,
		Draining: s.draining.Load(),
		Backends: map[string]map[string]string{},
		Sessions: map[string]int{"imap": 0, "pop3": 0},
	}
	for _, si := range s.opts.Router.Sessions() {
		st.Sessions[si.Protocol]++
	}
	c := s.opts.Cluster
	if c == nil {
		st.Members = []MemberStatus{{Name: s.opts.Node, State: cluster.StateAlive.String(), Local: true}}
		return st
	}
	st.Clustered = true
	for _, m := range c.Members() {
		ms := MemberStatus{Name: m.Name, State: m.State.String(), Since: m.Since, Local: m.Local, Meta: m.Meta}
		if m.Addr.IsValid() {
			ms.Addr = m.Addr.String()
		}
		st.Members = append(st.Members, ms)
	}
	for node, view := range c.Health() {
		v := make(map[string]string, len(view))
		for b, up := range view {
			v[b] = upDown(up)
		}
		st.Backends[node] = v
	}
	st.Cluster = make(map[string]string, len(s.opts.Backends))
	for _, b := range s.opts.Backends {
		st.Cluster[b] = upDown(!c.BackendDown(b))
	}
	return st
}

func upDown(up bool) string {
	if up {
		return "up"
	}
	return "down"
}

// drain makes /healthz answer 503 ahead of a restart, so that load
// balancers and rollout tools take the node out while it goes on serving
// everyone: listeners stay open and no session is closed. The restart's
// SIGTERM does the rest; a new process starts undrained.
func (s *Server) drain(w http.ResponseWriter, r *http.Request) {
	if !s.draining.Swap(true) {
		s.log.Info("admin: drain; /healthz answers 503 until the restart", "remote", r.RemoteAddr)
	}
	writeJSON(w, http.StatusOK, ControlResponse{OK: true})
}

func (s *Server) status(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Status())
}

// ControlRequest is the body of the control endpoints.
type ControlRequest struct {
	User string `json:"user"`
	// Kick, for invalidate: also close the user's sessions.
	Kick bool `json:"kick,omitempty"`
	// TTL, for hold: how long the hold lasts unless renewed or released,
	// a Go duration ("10m"); empty means 10 minutes; at most 24h.
	TTL string `json:"ttl,omitempty"`
}

// ControlResponse is the answer of the control endpoints.
type ControlResponse struct {
	OK   bool   `json:"ok"`
	User string `json:"user,omitempty"`
	// Warning says the request was accepted but not confirmed by every
	// member directly.
	Warning string `json:"warning,omitempty"`
	Error   string `json:"error,omitempty"`
}

func (s *Server) invalidate(w http.ResponseWriter, r *http.Request) {
	req, ok := s.readRequest(w, r)
	if !ok {
		return
	}
	s.log.Info("admin: invalidate", "user", req.User, "kick", req.Kick, "remote", r.RemoteAddr)
	s.answer(w, req.User, s.opts.Control.Invalidate(req.User, req.Kick))
}

func (s *Server) hold(w http.ResponseWriter, r *http.Request) {
	req, ok := s.readRequest(w, r)
	if !ok {
		return
	}
	var ttl time.Duration
	if req.TTL != "" {
		var err error
		ttl, err = time.ParseDuration(req.TTL)
		switch {
		case err != nil:
			writeJSON(w, http.StatusBadRequest, ControlResponse{Error: fmt.Sprintf("ttl %q is not a duration like \"10m\"", req.TTL)})
			return
		case ttl <= 0 || ttl > maxHoldTTL:
			writeJSON(w, http.StatusBadRequest, ControlResponse{Error: fmt.Sprintf("ttl must be positive and at most %v", maxHoldTTL)})
			return
		}
	}
	s.log.Info("admin: hold", "user", req.User, "ttl", ttl, "remote", r.RemoteAddr)
	s.answer(w, req.User, s.opts.Control.Hold(req.User, true, ttl))
}

func (s *Server) release(w http.ResponseWriter, r *http.Request) {
	req, ok := s.readRequest(w, r)
	if !ok {
		return
	}
	s.log.Info("admin: release", "user", req.User, "remote", r.RemoteAddr)
	s.answer(w, req.User, s.opts.Control.Hold(req.User, false, 0))
}

// readRequest decodes and checks a control request, answering it if it is
// bad. The user name comes back folded as the gate folds it.
func (s *Server) readRequest(w http.ResponseWriter, r *http.Request) (*ControlRequest, bool) {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	var req ControlRequest
	if err := dec.Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, ControlResponse{Error: "body must be a JSON object like {\"user\": \"alice@example.org\"}: " + err.Error()})
		return nil, false
	}
	if err := checkUser(req.User); err != nil {
		writeJSON(w, http.StatusBadRequest, ControlResponse{Error: err.Error()})
		return nil, false
	}
	req.User = route.Fold(req.User)
	return &req, true
}

// checkUser accepts a login name: 1 to 255 bytes of UTF-8, no spaces or
// control characters.
func checkUser(u string) error {
	switch {
	case u == "":
		return errors.New("user is required")
	case len(u) > maxUserLen:
		return fmt.Errorf("user is longer than %d bytes", maxUserLen)
	case !utf8.ValidString(u):
		return errors.New("user is not UTF-8")
	case strings.ContainsFunc(u, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }):
		return errors.New("user contains spaces or control characters")
	}
	return nil
}

// answer writes the outcome of a control request.
func (s *Server) answer(w http.ResponseWriter, user string, err error) {
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, ControlResponse{OK: true, User: user})
	case errors.Is(err, cluster.ErrNotDelivered):
		s.log.Warn("admin request not confirmed by every member; gossip carries it on", "user", user, "err", err)
		writeJSON(w, http.StatusOK, ControlResponse{OK: true, User: user, Warning: err.Error()})
	case errors.Is(err, cluster.ErrBadUser):
		writeJSON(w, http.StatusBadRequest, ControlResponse{User: user, Error: err.Error()})
	default:
		s.log.Error("admin request failed", "user", user, "err", err)
		writeJSON(w, http.StatusInternalServerError, ControlResponse{User: user, Error: err.Error()})
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// BackendNamer returns a function mapping backend addresses to host map
// names, from addrs (name -> addresses dialled for it); addresses shared
// by two names go to the first in sorted order.
func BackendNamer(addrs map[string][]string) func(addr string) string {
	m := make(map[string]string)
	names := make([]string, 0, len(addrs))
	for n := range addrs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		for _, a := range addrs[n] {
			a = normAddr(a)
			if _, dup := m[a]; !dup {
				m[a] = n
			}
		}
	}
	return func(addr string) string { return m[normAddr(addr)] }
}

// normAddr writes an IP:port address canonically; others stay as they are.
func normAddr(a string) string {
	if ap, err := netip.ParseAddrPort(a); err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String()
	}
	return strings.ToLower(a)
}
