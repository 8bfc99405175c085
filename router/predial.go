package router

import (
	"crypto/tls"
	"switchboard/router/internal/pump"
	"sync"
	"time"
)

// Pre-dialling defaults.
const (
	defaultPreDial = 2
	// preDialMaxAge is how long a parked, greeted connection is kept.
	// Dovecot drops clients that have not logged in after three minutes
	// (and logs each one), so parked connections are retired well before.
	preDialMaxAge = 60 * time.Second
)

// predialer keeps a few connections to each recently used backend dialled
// and greeted, so that a login waits neither for a TCP handshake nor for
// the backend's greeting. Pools fill on first use and go cold again when a
// backend has seen no login for preDialMaxAge.
type predialer struct {
	srv *Server
	per int // ready connections per backend and protocol; 0 disables

	mu     sync.Mutex
	pools  map[poolKey]*readyPool
	closed bool
}

type poolKey struct{ proto, addr string }

type readyPool struct {
	host     string
	conns    []*backendConn // oldest first
	dialing  int
	lastUsed time.Time
}

func newPredialer(srv *Server, per int) *predialer {
	p := &predialer{srv: srv, per: per, pools: make(map[poolKey]*readyPool)}
	if per > 0 {
		go p.janitor()
	}
	return p
}

// take returns a parked connection to addr, or nil, and starts dialling
// replacements. pooled is true when a connection is returned.
func (p *predialer) take(proto, host, addr string) (b *backendConn, pooled bool) {
	if p.per <= 0 {
		return nil, false
	}
	key := poolKey{proto, addr}
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, false
	}
	pl := p.pools[key]
	if pl == nil {
		pl = &readyPool{host: host}
		p.pools[key] = pl
	}
	pl.lastUsed = now
	for len(pl.conns) > 0 && b == nil {
		c := pl.conns[0]
		pl.conns[0] = nil
		pl.conns = pl.conns[1:]
		if now.Sub(c.ready) > preDialMaxAge || !idleAlive(c) {
			c.Close()
			continue
		}
		b = c
		p.srv.stats.PreDialUsed.Add(1)
	}
	p.refillLocked(key, pl)
	return b, b != nil
}

func (p *predialer) refillLocked(key poolKey, pl *readyPool) {
	for len(pl.conns)+pl.dialing < p.per {
		pl.dialing++
		go p.dialOne(key, pl)
	}
}

// dialOne parks one more connection in pl. A failed dial is not retried
// here: the next login dials for itself and refills the pool.
func (p *predialer) dialOne(key poolKey, pl *readyPool) {
	b, err := p.srv.connectBackend(p.srv.ctx, key.proto, pl.host, key.addr)
	p.mu.Lock()
	defer p.mu.Unlock()
	pl.dialing--
	if err != nil {
		return
	}
	if p.closed || time.Since(pl.lastUsed) > preDialMaxAge || len(pl.conns) >= p.per {
		b.Close()
		return
	}
	pl.conns = append(pl.conns, b)
}

// janitor retires parked connections before the backend does, refills
// pools in use and forgets cold ones.
func (p *predialer) janitor() {
	t := time.NewTicker(preDialMaxAge / 4)
	defer t.Stop()
	for {
		select {
		case <-p.srv.ctx.Done():
			p.close()
			return
		case <-t.C:
		}
		now := time.Now()
		p.mu.Lock()
		for key, pl := range p.pools {
			keep := pl.conns[:0]
			for _, c := range pl.conns {
				// Retire a little early so take never finds one too old.
				if now.Sub(c.ready) > preDialMaxAge*3/4 {
					c.Close()
				} else {
					keep = append(keep, c)
				}
			}
			clear(pl.conns[len(keep):])
			pl.conns = keep
			if now.Sub(pl.lastUsed) <= preDialMaxAge {
				p.refillLocked(key, pl)
			} else if len(pl.conns) == 0 && pl.dialing == 0 {
				delete(p.pools, key)
			}
		}
		p.mu.Unlock()
	}
}

func (p *predialer) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for key, pl := range p.pools {
		for _, c := range pl.conns {
			c.Close()
		}
		delete(p.pools, key)
	}
}

// idleAlive reports whether a parked plaintext connection still looks
// usable: nothing to read (a backend that hung up, or sent a BYE, has
// something). TLS connections are not checked here, since TLS records
// such as session tickets may legitimately be pending; a dead one fails
// at login and is replaced.
func idleAlive(b *backendConn) bool {
	if b.R.Buffered() > 0 {
		return false
	}
	if _, isTLS := b.Conn.(*tls.Conn); isTLS || b.TCP == nil {
		return true
	}
	return pump.Silent(b.TCP)
}
