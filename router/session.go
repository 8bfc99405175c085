package router

import (
	"bufio"
	"crypto/rand"
	"crypto/tls"
	"encoding/base32"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"switchboard/route"
	"switchboard/router/internal/pump"
	"switchboard/router/internal/wire"
)

// shutdownReason is the BYE text of a drain's end.
const shutdownReason = "Server shutting down, please reconnect."

// bufSize is the size of a client's read buffer before login, and so the
// longest command line accepted.
const bufSize = 4096

var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, bufSize) }}

// session is one client connection.
type session struct {
	srv *Server
	l   *listener
	id  string

	raw    net.Conn     // as accepted
	tcp    *net.TCPConn // raw, if it is TCP (splice, TCP_INFO)
	conn   net.Conn     // the client: raw, or a *tls.Conn over it
	w      io.Writer    // writes to conn (raw system calls while it is plain TCP)
	br     *bufio.Reader
	isTLS  bool
	client netip.AddrPort // the real client (PROXY header or peer)
	local  netip.AddrPort // the address the client connected to

	start    time.Time
	loginDur time.Duration
	user     string
	userKey  string // set by Server.setUser
	outcome  route.Outcome
	errMsg   string
	in, out  int64
	nerrors  int
	lastFail route.Outcome // the last failed login's outcome, if any

	mu      sync.Mutex
	backend *backendConn // once logged in
	sp      *pump.Splice // once splicing
	kicked  string       // the reason, once kicked
	done    bool
	bhost   string
	baddr   string
	cs      *cacheSession // a cached listener's session
	rl      *pump.Relay   // once relaying (cached listeners)

	didLogin bool // logged in: the Gate is told when the session ends

	inPreauth        bool // counted in the login phase (Server.enterPreauth)
	preauthPerSource bool // counted per source there too
	// gl is the current login attempt as the Gate sees it, the same for
	// each of its calls, and for Ended once logged in; gateWait is how
	// long the attempt waited in the Gate (see login.go).
	gl       route.Login
	gateWait time.Duration
}

func newSession(s *Server, l *listener, c net.Conn) *session {
	sess := &session{srv: s, l: l, id: newID(), raw: c, conn: c, start: time.Now()}
	sess.tcp, _ = c.(*net.TCPConn)
	sess.client = addrPort(c.RemoteAddr())
	sess.local = addrPort(c.LocalAddr())
	return sess
}

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newID returns a short random session ID, also sent to the backend as
// x-session-id so both logs can be joined.
func newID() string {
	var b [10]byte
	rand.Read(b[:])
	return idEncoding.EncodeToString(b[:])
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

func (sess *session) serve() {
	srv := sess.srv
	proto := 0
	if sess.l.cfg.Protocol == route.POP3 {
		proto = 1
	}
	srv.stats.Active[proto].Add(1)
	handedOff := false
	defer sess.endUnless(&handedOff)
	defer srv.recoverSession(sess)

	sess.br = readerPool.Get().(*bufio.Reader)
	sess.w = pump.AttachIO(sess.raw, sess.br)

	if sess.l.cfg.ProxyProtocol {
		if err := sess.readProxyHeader(); err != nil {
			sess.fail(route.OutcomeProxyRefused, err)
			return
		}
	}
	if err := srv.enterPreauth(sess); err != nil {
		sess.refusePreauth(err)
		return
	}
	if sess.l.cfg.TLS == TLSImplicit {
		if err := sess.StartTLS(); err != nil {
			sess.fail(route.OutcomeTLSFailed, err)
			return
		}
	}
	b := sess.login()
	if b == nil {
		return
	}
	// From here the splice or the relay owns the session and ends it.
	handedOff = true
	if sess.cached() {
		sess.relay(b)
		return
	}
	sess.splice(b)
}

// endUnless ends the session unless the splice has taken it over.
func (sess *session) endUnless(handedOff *bool) {
	if !*handedOff {
		sess.end()
	}
}

// end closes and logs the session and releases it from the server. It is
// called once, by serve or by the splice's last direction.
func (sess *session) end() {
	sess.finish()
	proto := 0
	if sess.l.cfg.Protocol == route.POP3 {
		proto = 1
	}
	sess.srv.stats.Active[proto].Add(-1)
	sess.srv.unregister(sess)
}

// finish closes the client, returns buffers and logs the session line.
func (sess *session) finish() {
	sess.srv.leavePreauth(sess)
	sess.mu.Lock()
	sess.done = true
	b := sess.backend
	sess.mu.Unlock()
	sess.conn.Close()
	sess.raw.Close()
	if b != nil {
		b.Close()
	}
	if sess.br != nil {
		sess.br.Reset(nil)
		readerPool.Put(sess.br)
		sess.br = nil
	}
	if sess.outcome == "" || (sess.outcome == route.OutcomeClientQuit && sess.lastFail != "") {
		// A client that gave up after a failed login is logged with that
		// failure, not as an ordinary quit.
		sess.outcome = route.OutcomeClientQuit
		if sess.lastFail != "" {
			sess.outcome = sess.lastFail
		}
	}
	if sess.didLogin {
		if g := sess.srv.opts.Gate; g != nil {
			g.Ended(&sess.gl)
		}
	}
	attrs := []any{
		"cid", sess.id,
		"proto", sess.l.cfg.Protocol,
		"listener", sess.l.cfg.Name,
		"client", sess.client.String(),
		"tls", sess.isTLS,
		"user", sess.user,
		"host", sess.bhost,
		"backend", sess.baddr,
		"outcome", string(sess.outcome),
		"cache", sess.cacheState(),
		"bytes_in", sess.in,
		"bytes_out", sess.out,
		"duration", time.Since(sess.start).Round(time.Millisecond),
	}
	if sess.loginDur > 0 {
		attrs = append(attrs, "login_ms", float64(sess.loginDur.Microseconds())/1000)
	}
	if sess.errMsg != "" {
		attrs = append(attrs, "err", sess.errMsg)
	}
	sess.srv.log.Info("session", attrs...)
}

// kickedOutcome records a session ended by a kick, or by a drain.
func (sess *session) kickedOutcome(reason string) {
	if reason == shutdownReason {
		sess.outcome = route.OutcomeShutdown
	} else {
		sess.outcome = route.OutcomeKicked
	}
}

// fail records how the session ended. err, if any, is logged; it must never
// hold a password.
func (sess *session) fail(o route.Outcome, err error) {
	sess.outcome = o
	if err != nil && sess.errMsg == "" {
		sess.errMsg = err.Error()
	}
	if o == route.OutcomeTimeout || o == route.OutcomeClientQuit || o == route.OutcomeProtocolError || o == route.OutcomeTLSFailed || o == route.OutcomeProxyRefused {
		sess.srv.stats.PreauthClosed.Add(1)
	}
}

func (sess *session) info() SessionInfo {
	return SessionInfo{
		ID: sess.id, User: sess.user, Protocol: sess.l.cfg.Protocol, Client: sess.client.String(),
		Backend: sess.baddr, Host: sess.bhost, TLS: sess.isTLS, Since: sess.start,
	}
}

// readProxyHeader reads the PROXY protocol header, refusing peers outside
// ProxyFrom.
func (sess *session) readProxyHeader() error {
	peer := sess.client.Addr()
	allowed := false
	for _, p := range sess.l.cfg.ProxyFrom {
		if p.Contains(peer) {
			allowed = true
			break
		}
	}
	if !allowed {
		return fmt.Errorf("PROXY header from untrusted peer %s", peer)
	}
	if err := sess.raw.SetReadDeadline(time.Now().Add(handshakeTimeout)); err != nil {
		return err
	}
	h, err := proxyproto.Read(sess.br)
	if err != nil {
		return fmt.Errorf("PROXY header: %w", err)
	}
	if h.Command.IsProxy() {
		if src, ok := h.SourceAddr.(*net.TCPAddr); ok {
			ap := src.AddrPort()
			sess.client = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		}
		if dst, ok := h.DestinationAddr.(*net.TCPAddr); ok {
			ap := dst.AddrPort()
			sess.local = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		}
	}
	return nil
}

// bufferedConn reads what a bufio.Reader still holds before reading the
// connection itself. It carries a TLS handshake whose first bytes were
// already buffered (after a PROXY header, or sent early after STARTTLS).
type bufferedConn struct {
	net.Conn
	r io.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// startTLS runs the server side of a TLS handshake on the client
// connection, under a deadline, and resets the reader onto it.
func (sess *session) StartTLS() error {
	under := sess.raw
	under = pump.TLSUnder(under, sess.w)
	if sess.br.Buffered() > 0 {
		n := sess.br.Buffered()
		pending, _ := sess.br.Peek(n)
		under = &bufferedConn{Conn: under, r: io.MultiReader(bytesReader(pending), under)}
	}
	tc := tls.Server(under, sess.srv.opts.TLS)
	// A deadline bounds the handshake rather than a context, for which
	// crypto/tls would start a goroutine per handshake to watch it. A
	// drain, a kick or the server's close reach the handshake through the
	// connection's deadlines or its close; the login phase sets its own
	// deadlines next.
	if err := sess.raw.SetDeadline(time.Now().Add(handshakeTimeout)); err != nil {
		return err
	}
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	sess.conn = tc
	sess.w = tc
	sess.isTLS = true
	sess.br.Reset(tc)
	return nil
}

func bytesReader(b []byte) io.Reader {
	c := make([]byte, len(b))
	copy(c, b)
	return &sliceReader{b: c}
}

type sliceReader struct{ b []byte }

func (r *sliceReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// PlaintextAllowed reports whether the client may send a password now.
func (sess *session) PlaintextAllowed() bool { return sess.isTLS || sess.trusted() }

// trusted reports whether the client is in TrustedNets.
func (sess *session) trusted() bool {
	a := sess.client.Addr()
	for _, p := range sess.srv.opts.TrustedNets {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// canStartTLS reports whether STARTTLS/STLS may be offered now.
func (sess *session) CanStartTLS() bool {
	return !sess.isTLS && sess.l.cfg.TLS == TLSStartTLS
}

// write sends b to the client under the pre-login deadline.
func (sess *session) Write(b []byte) error {
	if err := sess.conn.SetWriteDeadline(time.Now().Add(sess.srv.opts.preauthTimeout())); err != nil {
		return err
	}
	_, err := sess.w.Write(b)
	return err
}

// ReadDeadline arms the pre-login read deadline before each command:
// PreauthTimeout from now, and never past the login deadline.
func (sess *session) ReadDeadline() error {
	d := time.Now().Add(sess.srv.opts.preauthTimeout())
	if end := sess.start.Add(sess.srv.opts.loginDeadline()); end.Before(d) {
		d = end
	}
	return sess.conn.SetReadDeadline(d)
}

// readFailed records a failed read or write before login.
func (sess *session) readFailed(err error) {
	sess.fail(wire.ReadOutcome(err))
}

// Reader is the client's reader before login (wire.Client).
func (sess *session) Reader() *bufio.Reader { return sess.br }

// kick ends the session: a logged-in one gets a BYE (IMAP) once its
// splice has stopped; one still logging in is closed.
func (sess *session) kick(reason string) {
	sess.mu.Lock()
	if sess.done || sess.kicked != "" {
		sess.mu.Unlock()
		return
	}
	sess.kicked = reason
	b := sess.backend
	sp, rl := sess.sp, sess.rl
	sess.mu.Unlock()
	if sp != nil {
		sp.Kick()
		return
	}
	if rl != nil {
		rl.Kick()
		return
	}
	// Still logging in (or about to splice, which looks at the mark once
	// its splice is filed): reads and writes both give up.
	past := time.Unix(1, 0)
	if b != nil {
		b.Conn.SetDeadline(past)
	}
	sess.conn.SetDeadline(past)
}

func (sess *session) KickReason() string {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	return sess.kicked
}

func (sess *session) closeNow() {
	sess.raw.Close()
	sess.mu.Lock()
	if b := sess.backend; b != nil {
		b.Conn.Close()
	}
	sp := sess.sp
	sess.mu.Unlock()
	if sp != nil {
		// A closed socket leaves the parker's epoll set without an
		// event: wake parked directions so they see the close.
		sp.Wake()
	}
}
