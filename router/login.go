package router

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"switchboard/route"
	"switchboard/router/imap"
	"switchboard/router/internal/wire"
	"switchboard/router/pop3"
)

// dialog is a protocol's side of the login phase (imap.Dialog,
// pop3.Dialog): it answers the client's commands until credentials come,
// logs them in on a backend, and answers a failed login. The decisions
// between (gate, map, backends, delays, counts) are the driver's, login.
type dialog interface {
	Greet() error
	Next() (*wire.Creds, route.Outcome, error)
	BackendLogin(b *wire.Backend, cr *wire.Creds, fwd *wire.Forward) ([]byte, error)
	Refuse(err error) bool
}

// forwarder is implemented by dialogs that learn, before the login, the
// client address a peer forwards (imap.Dialog: ID x-originating-ip).
type forwarder interface {
	Forwarded() netip.AddrPort
}

// AccountGate is implemented by gates that judge a login a second time,
// once the map has named its account (route.Login.Account, see
// route.AccountKey; names the map does not know have one too): counts,
// holds and limits kept per account rather than per typed name. It is
// called after Admit and the lookup and before any backend; like Admit,
// it may block until ctx ends, and a *route.Refusal it returns is
// answered to the client.
type AccountGate interface {
	AdmitAccount(ctx context.Context, l *route.Login) error
}

// clientCheckAfter: a login that waited this long in the gate checks that
// its client is still there before a backend is asked.
const clientCheckAfter = 200 * time.Millisecond

// errClientGone: the client hung up while its login waited.
var errClientGone = errors.New("client gone while the login waited")

func (sess *session) newDialog() dialog {
	srv := sess.srv
	if sess.l.cfg.Protocol == route.POP3 {
		return pop3.NewDialog(sess, srv.opts.hostname(), srv.opts.maxErrors())
	}
	return imap.NewDialog(sess, srv.opts.hostname(), srv.opts.maxErrors())
}

// login runs the login phase. It returns the logged-in backend, or nil
// when the session is over.
func (sess *session) login() *backendConn {
	d := sess.newDialog()
	if err := d.Greet(); err != nil {
		sess.readFailed(err)
		return nil
	}
	for {
		cr, o, err := d.Next()
		if cr == nil {
			sess.ended(o, err)
			return nil
		}
		t0 := time.Now() // the failure delay counts from the credentials
		b, answer, err := sess.route(cr, d)
		if err == nil {
			if err = sess.recheck(b); err == nil {
				return sess.loggedIn(b, t0, answer)
			}
		}
		if errors.Is(err, errClientGone) {
			sess.clientLeft(err)
			return nil
		}
		sess.refused(t0, err)
		if !d.Refuse(err) {
			return nil
		}
	}
}

// recheck asks the Gate once more, now that the backend has accepted the
// login; a refusal closes the backend connection.
func (sess *session) recheck(b *backendConn) error {
	rc, ok := sess.srv.opts.Gate.(Rechecker)
	if !ok {
		return nil
	}
	err := rc.Recheck(&sess.gl)
	if err != nil {
		b.Close()
	}
	return err
}

// ended records how a login phase ended without a login.
func (sess *session) ended(o route.Outcome, err error) {
	if o == route.OutcomeKicked {
		sess.kickedOutcome(sess.KickReason())
		return
	}
	sess.fail(o, err)
}

// clientLeft ends a login whose client hung up while it waited in the
// gate: no backend is asked, nothing is counted against the user.
func (sess *session) clientLeft(err error) {
	if g := sess.srv.opts.Gate; g != nil {
		g.Done(&sess.gl, route.OutcomeClientQuit)
	}
	sess.fail(route.OutcomeClientQuit, err)
}

// refused counts a failed login, tells the Gate, and waits before the
// answer: none when the service is unavailable, else until AuthFailDelay
// after t0 plus what the gate made the login wait (its delay for earlier
// failures, and a refusal's Delay). A wrong password, an unknown user
// and a refusal (held, over a limit) so take the same time, with or
// without penalties: the penalty always runs before the fixed window,
// never inside it.
func (sess *session) refused(t0 time.Time, err error) {
	var r *route.Refusal
	isRefusal := errors.As(err, &r)
	if o := sess.loginFailed(err); o == route.OutcomeUnavailable && !isRefusal {
		sess.srv.log.Warn("login unavailable", "cid", sess.id, "user", sess.user, "err", err)
		return
	}
	wait := sess.gateWait
	if isRefusal {
		wait += r.Delay
	}
	sess.failDelay(t0.Add(wait))
}

// route finds the user's backend, dials it and logs in with login, trying
// standbys in order when a backend cannot be reached. It never tries
// another backend after one has judged the credentials.
func (sess *session) route(cr *wire.Creds, d dialog) (*backendConn, []byte, error) {
	srv := sess.srv
	user := cr.Mailbox()
	sess.user = user
	sess.bhost, sess.baddr = "", "" // not an earlier attempt's
	hosts, err := sess.admit(user, d)
	if err != nil {
		return nil, nil, err
	}
	var errs []error
	for i, host := range hosts {
		b, answer, err := sess.tryHost(cr, d, host)
		var te *wire.TransportError
		switch {
		case errors.As(err, &te):
			errs = append(errs, fmt.Errorf("%s (%s): %w", host, sess.baddr, err))
			continue
		case err != nil:
			return nil, nil, err
		}
		if i > 0 {
			srv.log.Warn("logged in on a standby backend", "cid", sess.id, "user", user, "backend", host, "skipped", errors.Join(errs...))
		}
		return b, answer, nil
	}
	return nil, nil, wire.Unavailable("no backend reachable: %w", errors.Join(errs...))
}

// admit asks the Gate, the map, and the Gate again with the account the
// map named, and returns the user's hosts, primary first. The time spent
// in the Gate is kept in sess.gateWait. Before a login that waited goes
// to a backend, the client is checked to still be there.
func (sess *session) admit(user string, d dialog) ([]string, error) {
	srv := sess.srv
	sess.gl = route.Login{User: user, Protocol: sess.l.cfg.Protocol, Client: sess.client}
	sess.gateWait = 0
	var fwd netip.AddrPort
	if f, ok := d.(forwarder); ok {
		fwd = f.Forwarded()
		sess.gl.Forwarded = fwd.Addr()
	}
	g := srv.opts.Gate
	if g != nil {
		t := time.Now()
		err := g.Admit(srv.ctx, &sess.gl)
		sess.gateWait = time.Since(t)
		if err != nil {
			return nil, gateError(err)
		}
	}
	res, lerr := sess.lookup(user)
	if lerr != nil && !errors.Is(lerr, wire.ErrAuthFailed) {
		return nil, lerr // the map is unavailable: answered at once
	}
	sess.gl.Account = route.AccountKey(res.DN, user) // unknown users too
	if ag, ok := g.(AccountGate); ok {
		t := time.Now()
		err := ag.AdmitAccount(srv.ctx, &sess.gl)
		sess.gateWait += time.Since(t)
		if err != nil {
			return nil, gateError(err)
		}
	}
	if lerr != nil {
		return nil, lerr
	}
	if sess.gateWait >= clientCheckAfter && sess.clientGone() {
		return nil, errClientGone
	}
	return res.Hosts, nil
}

// forward returns what the backend is told of the client: its address
// (a forwarded one the gate believed, from the webmail), the address it
// connected to, the session ID. Made per login, not kept in the session,
// whose idle size counts.
func (sess *session) forward() *wire.Forward {
	f := &wire.Forward{Client: sess.client, Local: sess.local, Session: sess.id}
	if src := sess.gl.Source; src.IsValid() && src != sess.client.Addr() {
		f.Client = netip.AddrPortFrom(src, sess.client.Port())
	}
	return f
}

// gateError passes a gate's refusal on; any other error (the server
// closing) makes the login unavailable.
func gateError(err error) error {
	var r *route.Refusal
	if errors.As(err, &r) {
		return r
	}
	return wire.Unavailable("gate: %w", err)
}

// clientGone reports whether the client has hung up, without waiting:
// a read with a deadline already passed sees the end of its stream, or
// times out if the client is still there.
func (sess *session) clientGone() bool {
	if sess.br.Buffered() > 0 {
		return false // it sent more: pipelined, not gone
	}
	if err := sess.conn.SetReadDeadline(time.Now()); err != nil {
		return true
	}
	_, err := sess.br.Peek(1)
	var ne net.Error
	gone := err != nil && !(errors.As(err, &ne) && ne.Timeout())
	if !gone && sess.ReadDeadline() != nil {
		return true
	}
	return gone
}

// lookup asks the map for user's entry.
func (sess *session) lookup(user string) (route.Result, error) {
	srv := sess.srv
	ctx, cancel := context.WithTimeout(srv.ctx, srv.opts.lookupTimeout())
	res, err := srv.opts.Mapper.Lookup(ctx, user)
	cancel()
	switch {
	case err == nil:
	case errors.Is(err, route.ErrUnknownUser):
		return route.Result{}, fmt.Errorf("%w: unknown user", wire.ErrAuthFailed)
	case errors.Is(err, route.ErrAmbiguous):
		srv.log.Error("routing error: more than one directory entry matches", "cid", sess.id, "user", user, "err", err)
		return route.Result{}, wire.Unavailable("lookup: %w", err)
	default:
		return route.Result{}, wire.Unavailable("lookup: %w", err)
	}
	if len(res.Hosts) == 0 {
		return route.Result{}, wire.Unavailable("lookup: %w", route.ErrNoHost)
	}
	return res, nil
}

// tryHost logs cr in on host: from a parked connection on a cached
// listener, else on a pre-dialled or new connection. A
// *wire.TransportError means the next host may be tried; any other
// error is the backend's verdict on the credentials.
func (sess *session) tryHost(cr *wire.Creds, d dialog, host string) (*backendConn, []byte, error) {
	srv := sess.srv
	proto := sess.l.cfg.Protocol
	addr := srv.hosts.Resolve(host, proto)
	sess.bhost, sess.baddr = host, addr
	if down := srv.opts.BackendDown; down != nil && down(host) {
		return nil, nil, &wire.TransportError{Err: errors.New("marked down by health checks")}
	}
	if err := srv.checkHostValue(host); err != nil {
		srv.log.Error("routing error: host value refused", "cid", sess.id, "user", sess.user, "host", host, "err", err)
		return nil, nil, &wire.TransportError{Err: err}
	}
	if srv.suspects.is(proto, addr) {
		return nil, nil, &wire.TransportError{Err: errors.New("suspect: not greeting since a failed connect")}
	}
	if sess.cached() {
		if b, answer := sess.takeParked(cr, d, host, addr); b != nil {
			return b, answer, nil
		}
	}
	b, pooled := srv.predial.take(proto, host, addr)
	if b == nil {
		var err error
		if b, err = srv.connectBackend(srv.ctx, proto, host, addr); err != nil {
			return nil, nil, sess.connectFailed(proto, host, addr, err)
		}
	}
	fwd := sess.forward()
	answer, err := d.BackendLogin(&b.Backend, cr, fwd)
	var te *wire.TransportError
	if pooled && errors.As(err, &te) {
		// A parked connection may have been closed by the backend
		// since it was checked: try once more on a fresh one.
		b.Close()
		if b, err = srv.connectBackend(srv.ctx, proto, host, addr); err != nil {
			return nil, nil, sess.connectFailed(proto, host, addr, err)
		}
		answer, err = d.BackendLogin(&b.Backend, cr, fwd)
	}
	if err != nil {
		b.Close()
		return nil, nil, err
	}
	sess.noteLogin(answer)
	return b, answer, nil
}

// connectFailed handles a failed connect to a backend: an address outside
// the backend networks is a routing error, logged loudly; any other
// failure makes the address suspect. Either way the next host may be
// tried.
func (sess *session) connectFailed(proto, host, addr string, err error) error {
	if errors.Is(err, errOutsideNets) {
		sess.srv.log.Error("routing error: backend address outside backend networks", "cid", sess.id, "user", sess.user, "host", host, "err", err)
	} else {
		sess.srv.suspects.mark(proto, host, addr, err)
	}
	return &wire.TransportError{Err: err}
}

// failDelay waits until AuthFailDelay after t0, so every failed login is
// answered after the same time whatever failed.
func (sess *session) failDelay(t0 time.Time) {
	sess.sleep(sess.srv.opts.authFailDelay() - time.Since(t0))
}

// sleep waits for d, or until the server closes.
func (sess *session) sleep(d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-sess.srv.ctx.Done():
	}
}

// loggedIn files the session under its user, records the backend, counts
// the login and hands the client the backend's answer. It returns the
// backend to splice to, or nil if the client is gone. The session is
// counted before the client can see its OK, so a second login racing in
// is judged with this one counted.
func (sess *session) loggedIn(b *backendConn, t0 time.Time, answer []byte) *backendConn {
	sess.loginDur = time.Since(t0)
	sess.mu.Lock()
	sess.backend = b
	sess.mu.Unlock()
	sess.didLogin = true
	sess.srv.leavePreauth(sess)
	sess.srv.setUser(sess, sess.user)
	sess.srv.stats.LoginOK.Add(1)
	if g := sess.srv.opts.Gate; g != nil {
		g.Done(&sess.gl, route.OutcomeOK)
	}
	err := sess.conn.SetWriteDeadline(time.Now().Add(sess.srv.opts.loginTimeout()))
	if err == nil {
		_, err = sess.w.Write(answer)
	}
	if err != nil {
		sess.readFailed(err) // b is closed with the session
		return nil
	}
	return b
}

// loginFailed counts a failed login and tells the Gate.
func (sess *session) loginFailed(err error) route.Outcome {
	var o route.Outcome
	var r *route.Refusal
	var ue *wire.UnavailableError
	var re *wire.RefusedError
	switch {
	case errors.As(err, &r), errors.As(err, &re):
		// Held or limited here, or refused by the backend for a reason
		// other than the credentials (in use, over a limit): not a
		// failed password, so not counted against the user.
		o = route.OutcomeRefused
		sess.srv.stats.LoginRefused.Add(1)
	case errors.As(err, &ue):
		o = route.OutcomeUnavailable
		sess.srv.stats.Unavailable.Add(1)
	default:
		o = route.OutcomeAuthFailed
		sess.srv.stats.LoginFailed.Add(1)
	}
	sess.outcome = o
	sess.lastFail = o
	sess.errMsg = err.Error()
	if g := sess.srv.opts.Gate; g != nil {
		g.Done(&sess.gl, o)
	}
	return o
}
