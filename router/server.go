package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"switchboard/route"
	"switchboard/router/internal/pump"
)

// Server accepts clients on its listeners and routes their sessions.
type Server struct {
	opts    Options
	log     *slog.Logger
	hosts   *route.HostMap
	caps    *capCache
	predial *predialer
	parker  *pump.Parker
	ctx     context.Context
	cancel  context.CancelFunc

	mu        sync.Mutex
	listeners map[*listener]struct{}
	sessions  map[*session]struct{}
	byUser    map[string]map[*session]struct{}
	closing   bool
	wg        sync.WaitGroup // accept loops and sessions

	stats Stats
}

// Stats are the server's counters. Read them with Server.Stats.
type Stats struct {
	Accepted      atomic.Uint64
	Active        [2]atomic.Int64 // by protocol: 0 IMAP, 1 POP3
	LoginOK       atomic.Uint64
	LoginFailed   atomic.Uint64
	LoginRefused  atomic.Uint64 // gate refusals, holds
	Unavailable   atomic.Uint64
	PreauthClosed atomic.Uint64 // clients gone or closed before login
	Kicked        atomic.Uint64
	PreDialUsed   atomic.Uint64 // logins served by a pre-dialled connection
	Panics        atomic.Uint64
	BytesIn       atomic.Uint64 // client to backend
	BytesOut      atomic.Uint64 // backend to client
}

// StatsSnapshot is a copy of Stats.
type StatsSnapshot struct {
	Accepted, LoginOK, LoginFailed, LoginRefused, Unavailable, PreauthClosed, Kicked, PreDialUsed, Panics, BytesIn, BytesOut uint64
	ActiveIMAP, ActivePOP3                                                                                                   int64
	// Parked is how many splice directions wait in the parker, holding no
	// goroutine (two per idle session).
	Parked int
}

// Stats returns the current counters.
func (s *Server) Stats() StatsSnapshot {
	st := &s.stats
	return StatsSnapshot{
		Accepted: st.Accepted.Load(), LoginOK: st.LoginOK.Load(), LoginFailed: st.LoginFailed.Load(),
		LoginRefused: st.LoginRefused.Load(), Unavailable: st.Unavailable.Load(),
		PreauthClosed: st.PreauthClosed.Load(), Kicked: st.Kicked.Load(), PreDialUsed: st.PreDialUsed.Load(), Panics: st.Panics.Load(),
		BytesIn: st.BytesIn.Load(), BytesOut: st.BytesOut.Load(),
		ActiveIMAP: st.Active[0].Load(), ActivePOP3: st.Active[1].Load(),
		Parked: s.parker.Parked(),
	}
}

// New returns a Server. Options are copied.
func New(opts *Options) *Server {
	s := &Server{
		opts:      *opts,
		listeners: make(map[*listener]struct{}),
		sessions:  make(map[*session]struct{}),
		byUser:    make(map[string]map[*session]struct{}),
		caps:      newCapCache(),
	}
	s.log = s.opts.Logger
	if s.log == nil {
		s.log = slog.Default()
	}
	s.hosts = s.opts.Hosts
	if s.hosts == nil {
		s.hosts = &route.HostMap{}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	per := s.opts.PreDial
	if per == 0 {
		per = defaultPreDial
	}
	s.predial = newPredialer(s, max(per, 0))
	s.parker = pump.NewParker(&pump.ParkerOptions{Ctx: s.ctx, Log: s.log})
	return s
}

type listener struct {
	cfg ListenerConfig
	ln  net.Listener
}

// ErrServerClosed is returned by Listen after Shutdown or Close.
var ErrServerClosed = errors.New("router: server closed")

// Listen binds cfg.Addr and starts accepting clients on it. It returns the
// bound address (useful with port 0).
func (s *Server) Listen(cfg ListenerConfig) (net.Addr, error) {
	if err := s.checkListener(cfg); err != nil {
		return nil, err
	}
	lc := pump.ListenConfig()
	ln, err := lc.Listen(context.Background(), "tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listener %s: %w", cfg.Name, err)
	}
	return s.serveListener(cfg, ln)
}

// serveListener registers ln and starts its accept loop.
func (s *Server) serveListener(cfg ListenerConfig, ln net.Listener) (net.Addr, error) {
	if cfg.Name == "" {
		cfg.Name = cfg.Protocol + "-" + ln.Addr().String()
	}
	l := &listener{cfg: cfg, ln: ln}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return nil, ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go s.acceptLoop(l)
	return ln.Addr(), nil
}

// acceptLoop accepts clients until the listener is closed, backing off on
// errors such as running out of file descriptors.
func (s *Server) acceptLoop(l *listener) {
	defer s.wg.Done()
	var delay time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if delay == 0 {
				delay = 5 * time.Millisecond
			} else if delay *= 2; delay > time.Second {
				delay = time.Second
			}
			s.log.Warn("accept failed", "listener", l.cfg.Name, "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		s.stats.Accepted.Add(1)
		sess := newSession(s, l, c)
		if !s.register(sess) {
			c.Close()
			continue
		}
		go sess.serve()
	}
}

func (s *Server) register(sess *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.sessions[sess] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) unregister(sess *session) {
	s.mu.Lock()
	delete(s.sessions, sess)
	if sess.userKey != "" {
		if m := s.byUser[sess.userKey]; m != nil {
			delete(m, sess)
			if len(m) == 0 {
				delete(s.byUser, sess.userKey)
			}
		}
	}
	s.mu.Unlock()
	s.wg.Done()
}

// setUser files a logged-in session under its user, for Kick.
func (s *Server) setUser(sess *session, user string) {
	key := route.Fold(user)
	s.mu.Lock()
	sess.userKey = key
	m := s.byUser[key]
	if m == nil {
		m = make(map[*session]struct{})
		s.byUser[key] = m
	}
	m[sess] = struct{}{}
	s.mu.Unlock()
}

// Kick closes every logged-in session of user on this node, telling IMAP
// clients why with an untagged BYE. It returns how many were closed.
func (s *Server) Kick(user, reason string) int {
	s.mu.Lock()
	var victims []*session
	for sess := range s.byUser[route.Fold(user)] {
		victims = append(victims, sess)
	}
	s.mu.Unlock()
	for _, sess := range victims {
		sess.kick(reason)
	}
	s.stats.Kicked.Add(uint64(len(victims)))
	return len(victims)
}

// SessionInfo describes a live session.
type SessionInfo struct {
	ID       string
	User     string
	Protocol string
	Client   string
	Backend  string // the address dialled
	Host     string // the host value it came from ("mx1")
	TLS      bool
	Since    time.Time
}

// Sessions lists the logged-in sessions.
func (s *Server) Sessions() []SessionInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []SessionInfo
	for _, m := range s.byUser {
		for sess := range m {
			out = append(out, sess.info())
		}
	}
	return out
}

// Shutdown stops accepting, waits for sessions to end until ctx is done,
// then closes the remaining ones with a BYE and waits for them to go.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closeListeners()
	done := make(chan struct{})
	go s.waitSessions(done)
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	var all []*session
	for sess := range s.sessions {
		all = append(all, sess)
	}
	s.mu.Unlock()
	for _, sess := range all {
		sess.kick(shutdownReason)
	}
	s.cancel()
	<-done
	return ctx.Err()
}

func (s *Server) waitSessions(done chan<- struct{}) {
	s.wg.Wait()
	close(done)
}

// Close closes listeners and every session at once.
func (s *Server) Close() error {
	s.closeListeners()
	s.cancel()
	s.mu.Lock()
	for sess := range s.sessions {
		sess.closeNow()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	s.closing = true
	for l := range s.listeners {
		l.ln.Close()
	}
	s.mu.Unlock()
}

// recoverSession logs and counts a panic in one session, so that it cannot
// take the node down.
func (s *Server) recoverSession(sess *session) {
	if r := recover(); r != nil {
		s.stats.Panics.Add(1)
		s.log.Error("session panic", "cid", sess.id, "panic", r, "stack", string(debug.Stack()))
	}
}
