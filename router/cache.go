package router

import (
	"bytes"
	"time"

	"switchboard/conncache"
	"switchboard/route"
	"switchboard/router/imap"
	"switchboard/router/internal/pump"
	"switchboard/router/internal/wire"
)

// The webmail connection cache, router side. A listener with Cache set
// answers an IMAP login from a parked backend connection when one is
// parked under (account, backend, password), relays the session through
// imap.Follower instead of splicing it, and at LOGOUT answers the client
// itself and parks the backend connection, reset, if the follower knows
// it is clean. conncache holds the parked connections.

// cacheSession is a cached listener's session state; nil elsewhere.
type cacheSession struct {
	key      conncache.Key
	hit      bool
	caps     []byte    // the backend's post-login CAPABILITY list
	loggedIn time.Time // the backend connection's first login
}

// cacheResetTimeout bounds resetting a connection before it is parked.
const cacheResetTimeout = 2 * time.Second

// cachedOK is implemented by dialogs that can answer a login served from
// the cache (imap.Dialog).
type cachedOK interface{ CachedOK(caps []byte) []byte }

// cached reports whether the session's logins go through the cache.
func (sess *session) cached() bool {
	return sess.l.cfg.Cache && sess.srv.opts.Pool != nil && sess.l.cfg.Protocol == route.IMAP
}

// takeParked looks for a parked connection of cr on addr. It returns it
// with the answer to the client's login, or nil on a miss (the key is
// kept for the park).
func (sess *session) takeParked(cr *wire.Creds, d dialog, host, addr string) (*backendConn, []byte) {
	ok, isOK := d.(cachedOK)
	if !isOK {
		return nil, nil
	}
	pool := sess.srv.opts.Pool
	// The password is the login's own: a master user logging in as
	// someone is keyed apart from that user's own logins.
	secret := cr.User + "\x00" + cr.Pass
	key := pool.Key(route.Fold(cr.Mailbox()), addr, secret)
	sess.cs = &cacheSession{key: key}
	c, caps, at, found := pool.Take(key)
	if !found {
		return nil, nil
	}
	b := c.(*backendConn)
	b.host = host
	sess.cs.hit, sess.cs.caps, sess.cs.loggedIn = true, caps, at
	return b, ok.CachedOK(caps)
}

// noteLogin keeps what a miss's login tells for the park: the backend's
// post-login capabilities and the time.
func (sess *session) noteLogin(answer []byte) {
	if sess.cs == nil {
		return
	}
	sess.cs.caps = imap.PostLoginCaps(answer)
	sess.cs.loggedIn = time.Now()
}

// ParkedAlive reports whether a parked backend connection may be reused:
// nothing unread on it (a backend that hung up or sent a BYE has
// something). It is conncache.Options.Alive for the router's connections.
func ParkedAlive(c conncache.Conn) bool {
	b, ok := c.(*backendConn)
	if !ok || b.R == nil || b.R.Buffered() > 0 {
		return false
	}
	return b.TCP == nil || pump.Silent(b.TCP)
}

// cacheWatcher adapts imap.Follower to the relay.
type cacheWatcher struct {
	f   imap.Follower
	out []byte
}

func (w *cacheWatcher) Client(p []byte) ([]byte, bool) {
	w.out = w.out[:0]
	var logout bool
	w.out, logout = w.f.Client(w.out, p)
	return w.out, logout
}

func (w *cacheWatcher) Server(p []byte) { w.f.Server(p) }

// Answered reports true once the follower is not waiting for the backend:
// parkable, or never to be (then nothing more is owed that matters).
func (w *cacheWatcher) Answered() bool {
	_, reason, ok := w.f.Parkable()
	switch reason {
	case imap.ReasonOutstanding, imap.ReasonResponse:
		return false
	}
	return ok || reason != ""
}

// relay runs a cached session after login: the relay with the follower,
// then, at LOGOUT, the park. It ends the session.
func (sess *session) relay(b *backendConn) {
	w := &cacheWatcher{}
	if !sess.flushToRelay(b, w) {
		sess.end()
		return
	}
	r := pump.NewRelay(
		pump.Side{Conn: sess.conn, TCP: sess.tcp, W: sess.w},
		pump.Side{Conn: b.Conn, TCP: b.TCP, W: b.W},
		w, sess.srv.opts.idleTimeout())
	sess.mu.Lock()
	sess.rl = r
	kicked := sess.kicked != ""
	sess.mu.Unlock()
	if kicked {
		r.Kick()
	}
	_, err := r.Run()
	in, out := r.Bytes()
	sess.in += in
	sess.out += out
	sess.srv.stats.BytesIn.Add(uint64(in))
	sess.srv.stats.BytesOut.Add(uint64(out))
	sess.outcome = route.OutcomeOK
	if err != nil {
		sess.relayFailed(err)
		return
	}
	sess.logout(b, w)
}

// flushToRelay hands the relay what the login phase's readers still
// hold: the client's pipelined commands go through the follower.
func (sess *session) flushToRelay(b *backendConn, w *cacheWatcher) bool {
	if n := sess.br.Buffered(); n > 0 {
		p, _ := sess.br.Peek(n)
		fwd, _ := w.Client(p)
		if _, err := b.W.Write(fwd); err != nil {
			sess.fail(route.OutcomeOK, err)
			return false
		}
		sess.in += int64(len(fwd))
	}
	if n := b.R.Buffered(); n > 0 {
		p, _ := b.R.Peek(n)
		w.Server(p)
		if _, err := sess.w.Write(p); err != nil {
			sess.fail(route.OutcomeOK, err)
			return false
		}
		sess.out += int64(n)
		b.R.Discard(n)
	}
	sess.br.Reset(nil)
	readerPool.Put(sess.br)
	sess.br = nil
	return true
}

// relayFailed ends a relay that did not reach LOGOUT: a kick, a drain,
// the client gone, the idle timeout. The backend connection is closed
// with the session: its state is not known to be clean.
func (sess *session) relayFailed(err error) {
	sess.srv.opts.Pool.RefusePark("no_logout")
	if reason := sess.KickReason(); reason != "" {
		sess.kickedOutcome(reason)
		if sess.conn.SetWriteDeadline(time.Now().Add(byeWriteTimeout)) == nil {
			sess.conn.Write([]byte("* BYE [UNAVAILABLE] " + reason + "\r\n"))
		}
	} else if !pump.IsQuietClose(err) {
		sess.errMsg = err.Error()
	}
	sess.end()
}

// logout answers the client's LOGOUT and parks the backend connection
// when the follower says it is clean, after UNSELECT if a mailbox is
// selected (never CLOSE, which expunges). Anything else is logged out
// and closed.
func (sess *session) logout(b *backendConn, w *cacheWatcher) {
	pool := sess.srv.opts.Pool
	tag := w.f.LogoutTag()
	needUnselect, reason, ok := w.f.Parkable()
	if ok && needUnselect {
		if !unselect(b) {
			ok, reason = false, "unselect"
		}
	}
	// The backend connection leaves the session, which must not close it,
	// and is parked before the client is answered: a webmail's next
	// request, sent as soon as it has the answer, finds it.
	sess.mu.Lock()
	sess.backend = nil
	sess.mu.Unlock()
	switch {
	case !ok:
		pool.RefusePark(reason)
		b.W.Write([]byte(tag + " LOGOUT\r\n"))
		b.Close()
	case sess.KickReason() != "":
		pool.RefusePark("kicked") // a kick racing the park: the user's connections are being dropped
		b.Close()
	case !pool.Put(sess.cs.key, b, sess.cs.caps, sess.cs.loggedIn):
		b.Close()
	}
	sess.Write([]byte("* BYE Logging out.\r\n" + tag + " OK Logout completed.\r\n"))
	sess.end()
}

// unselect resets b's selected mailbox with UNSELECT (RFC 3691) and
// reports whether the backend said OK.
func unselect(b *backendConn) bool {
	if b.Conn.SetDeadline(time.Now().Add(cacheResetTimeout)) != nil {
		return false
	}
	defer b.Conn.SetDeadline(time.Time{})
	if _, err := b.W.Write([]byte("sbu UNSELECT\r\n")); err != nil {
		return false
	}
	for {
		line, err := wire.ReadLine(b.R)
		if err != nil {
			return false
		}
		if bytes.HasPrefix(line, []byte("sbu ")) {
			return bytes.HasPrefix(line[4:], []byte("OK"))
		}
	}
}

// cacheState says, for the session line, whether the login came from the
// cache: hit, miss, or off (not a cached listener, or no login).
func (sess *session) cacheState() string {
	switch {
	case sess.cs == nil:
		return "off"
	case sess.cs.hit:
		return "hit"
	}
	return "miss"
}
