package router

import (
	"context"
	"errors"
	"fmt"
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
	err := rc.Recheck(&route.Login{User: sess.user, Protocol: sess.l.cfg.Protocol, Client: sess.client})
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

// refused counts a failed login, tells the Gate, and waits before the
// answer: a refusal's own delay, none when the service is unavailable,
// else until AuthFailDelay after t0, so a wrong password and an unknown
// user take the same time.
func (sess *session) refused(t0 time.Time, err error) {
	var r *route.Refusal
	switch o := sess.loginFailed(err); {
	case errors.As(err, &r):
		sess.sleep(r.Delay)
	case o == route.OutcomeUnavailable:
		sess.srv.log.Warn("login unavailable", "cid", sess.id, "user", sess.user, "err", err)
	default:
		sess.failDelay(t0)
	}
}

// route finds the user's backend, dials it and logs in with login, trying
// standbys in order when a backend cannot be reached. It never tries
// another backend after one has judged the credentials.
func (sess *session) route(cr *wire.Creds, d dialog) (*backendConn, []byte, error) {
	srv := sess.srv
	user := cr.Mailbox()
	sess.user = user
	sess.bhost, sess.baddr = "", "" // not an earlier attempt's
	sess.fwd = wire.Forward{Client: sess.client, Local: sess.local, Session: sess.id}
	if g := srv.opts.Gate; g != nil {
		l := &route.Login{User: user, Protocol: sess.l.cfg.Protocol, Client: sess.client}
		if err := g.Admit(srv.ctx, l); err != nil {
			var r *route.Refusal
			if errors.As(err, &r) {
				return nil, nil, r
			}
			return nil, nil, wire.Unavailable("gate: %w", err)
		}
	}
	hosts, err := sess.lookup(user)
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

// lookup asks the map for user's hosts, primary first.
func (sess *session) lookup(user string) ([]string, error) {
	srv := sess.srv
	ctx, cancel := context.WithTimeout(srv.ctx, srv.opts.lookupTimeout())
	res, err := srv.opts.Mapper.Lookup(ctx, user)
	cancel()
	switch {
	case err == nil:
	case errors.Is(err, route.ErrUnknownUser):
		return nil, fmt.Errorf("%w: unknown user", wire.ErrAuthFailed)
	case errors.Is(err, route.ErrAmbiguous):
		srv.log.Error("routing error: more than one directory entry matches", "cid", sess.id, "user", user, "err", err)
		return nil, wire.Unavailable("lookup: %w", err)
	default:
		return nil, wire.Unavailable("lookup: %w", err)
	}
	if len(res.Hosts) == 0 {
		return nil, wire.Unavailable("lookup: %w", route.ErrNoHost)
	}
	return res.Hosts, nil
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
	if sess.cached() {
		if b, answer := sess.takeParked(cr, d, host, addr); b != nil {
			return b, answer, nil
		}
	}
	b, pooled := srv.predial.take(proto, host, addr)
	if b == nil {
		var err error
		if b, err = srv.connectBackend(srv.ctx, proto, host, addr); err != nil {
			return nil, nil, &wire.TransportError{Err: err}
		}
	}
	answer, err := d.BackendLogin(&b.Backend, cr, &sess.fwd)
	var te *wire.TransportError
	if pooled && errors.As(err, &te) {
		// A parked connection may have been closed by the backend
		// since it was checked: try once more on a fresh one.
		b.Close()
		if b, err = srv.connectBackend(srv.ctx, proto, host, addr); err != nil {
			return nil, nil, &wire.TransportError{Err: err}
		}
		answer, err = d.BackendLogin(&b.Backend, cr, &sess.fwd)
	}
	if err != nil {
		b.Close()
		return nil, nil, err
	}
	sess.noteLogin(answer)
	return b, answer, nil
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
	sess.srv.setUser(sess, sess.user)
	sess.srv.stats.LoginOK.Add(1)
	if g := sess.srv.opts.Gate; g != nil {
		g.Done(&route.Login{User: sess.user, Protocol: sess.l.cfg.Protocol, Client: sess.client}, route.OutcomeOK)
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
		g.Done(&route.Login{User: sess.user, Protocol: sess.l.cfg.Protocol, Client: sess.client}, o)
	}
	return o
}
