package router

import (
	"context"
	"sync"
	"time"
)

// Backend suspicion. A backend that accepts TCP but never greets (a hung
// Dovecot, a full accept queue) would cost every login of its users the
// whole login timeout. Once connecting to an address fails (no
// connection, or no greeting in time), the address is suspect: logins
// skip it at once, to a standby or to [UNAVAILABLE], while a prober
// tries it every suspectProbeInterval and clears it at its first
// greeting.
const (
	suspectProbeInterval = 500 * time.Millisecond
	// suspectProbeTimeout bounds one probe: connect and greeting.
	suspectProbeTimeout = 2 * time.Second
)

type suspectKey struct{ proto, addr string }

// suspects are the backend addresses a login could not connect to, and
// not yet seen greeting again.
type suspects struct {
	srv *Server
	mu  sync.Mutex
	m   map[suspectKey]time.Time // when it became suspect
}

func newSuspects(srv *Server) *suspects {
	return &suspects{srv: srv, m: make(map[suspectKey]time.Time)}
}

// is reports whether addr is suspect for proto.
func (s *suspects) is(proto, addr string) bool {
	s.mu.Lock()
	_, ok := s.m[suspectKey{proto, addr}]
	s.mu.Unlock()
	return ok
}

// mark makes addr suspect after a failed connect, and starts its prober.
func (s *suspects) mark(proto, host, addr string, err error) {
	k := suspectKey{proto, addr}
	s.mu.Lock()
	_, already := s.m[k]
	if !already {
		s.m[k] = time.Now()
	}
	s.mu.Unlock()
	if already {
		return
	}
	s.srv.log.Warn("backend suspect: logins skip it until it greets again", "backend", host, "addr", addr, "proto", proto, "err", err)
	go probeSuspect(s, k, host)
}

// clear ends addr's suspicion.
func (s *suspects) clear(k suspectKey) {
	s.mu.Lock()
	since, ok := s.m[k]
	delete(s.m, k)
	s.mu.Unlock()
	if ok {
		s.srv.log.Info("backend greets again", "addr", k.addr, "proto", k.proto, "suspect_for", time.Since(since).Round(time.Millisecond))
	}
}

// probeSuspect is the goroutine that connects to a suspect address until
// it greets, then clears it; it ends with the server.
func probeSuspect(s *suspects, k suspectKey, host string) {
	t := time.NewTicker(suspectProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-s.srv.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(s.srv.ctx, suspectProbeTimeout)
		b, err := s.srv.connectBackendWithin(ctx, k.proto, host, k.addr, suspectProbeTimeout)
		cancel()
		if err == nil {
			b.Close()
			s.clear(k)
			return
		}
	}
}
