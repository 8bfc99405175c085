package router

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"switchboard/route"
	"switchboard/router/internal/wire"
)

// creds are what a client logged in with. They never reach a log.
type creds struct {
	authz string // SASL authorization identity, usually empty
	user  string // authentication identity
	pass  string
}

// String keeps creds out of logs even if printed by mistake.
func (c *creds) String() string { return "creds{" + c.user + " ***}" }

// mailbox is the login name the route is looked up for: the authorization
// identity when one is given (a master user logging in as someone), else
// the user.
func (c *creds) mailbox() string {
	if c.authz != "" {
		return c.authz
	}
	return c.user
}

// saslPlain is the RFC 4616 PLAIN message for c, base64-encoded.
func (c *creds) saslPlain() []byte {
	raw := make([]byte, 0, len(c.authz)+len(c.user)+len(c.pass)+2)
	raw = append(raw, c.authz...)
	raw = append(raw, 0)
	raw = append(raw, c.user...)
	raw = append(raw, 0)
	raw = append(raw, c.pass...)
	out := make([]byte, base64.StdEncoding.EncodedLen(len(raw)))
	base64.StdEncoding.Encode(out, raw)
	return out
}

// decodePlain parses an RFC 4616 PLAIN response ("=" is empty).
func decodePlain(b64 string) (*creds, error) {
	if b64 == "=" {
		return nil, errors.New("empty PLAIN response")
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, errors.New("invalid base64")
	}
	parts := strings.Split(string(raw), "\x00")
	if len(parts) != 3 || parts[1] == "" || parts[2] == "" {
		return nil, errors.New("malformed PLAIN response")
	}
	return &creds{authz: parts[0], user: parts[1], pass: parts[2]}, nil
}

// backendLogin logs in to a dialled backend and returns the answer to hand
// the client on success.
type backendLogin func(b *backendConn, cr *creds) ([]byte, error)

// route finds the user's backend, dials it and logs in with login, trying
// standbys in order when a backend cannot be reached. It never tries
// another backend after one has judged the credentials.
func (sess *session) route(cr *creds, login backendLogin) (*backendConn, []byte, error) {
	srv := sess.srv
	user := cr.mailbox()
	sess.user = user
	sess.bhost, sess.baddr = "", "" // not an earlier attempt's
	if g := srv.opts.Gate; g != nil {
		l := &route.Login{User: user, Protocol: sess.l.cfg.Protocol, Client: sess.client}
		if err := g.Admit(srv.ctx, l); err != nil {
			var r *route.Refusal
			if errors.As(err, &r) {
				return nil, nil, r
			}
			return nil, nil, unavailable("gate: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(srv.ctx, srv.opts.lookupTimeout())
	res, err := srv.opts.Mapper.Lookup(ctx, user)
	cancel()
	switch {
	case err == nil:
	case errors.Is(err, route.ErrUnknownUser):
		return nil, nil, fmt.Errorf("%w: unknown user", errAuthFailed)
	case errors.Is(err, route.ErrAmbiguous):
		srv.log.Error("routing error: more than one directory entry matches", "cid", sess.id, "user", user, "err", err)
		return nil, nil, unavailable("lookup: %w", err)
	default:
		return nil, nil, unavailable("lookup: %w", err)
	}
	if len(res.Hosts) == 0 {
		return nil, nil, unavailable("lookup: %w", route.ErrNoHost)
	}
	var errs []error
	for i, host := range res.Hosts {
		addr := srv.hosts.Resolve(host, sess.l.cfg.Protocol)
		if down := srv.opts.BackendDown; down != nil && down(host) {
			errs = append(errs, fmt.Errorf("%s: marked down by health checks", host))
			continue
		}
		proto := sess.l.cfg.Protocol
		b, pooled := srv.predial.take(proto, host, addr)
		if b == nil {
			var err error
			if b, err = srv.connectBackend(srv.ctx, proto, host, addr); err != nil {
				errs = append(errs, fmt.Errorf("%s (%s): %w", host, addr, err))
				continue
			}
		}
		sess.bhost, sess.baddr = host, addr
		answer, err := login(b, cr)
		var te *transportError
		if pooled && errors.As(err, &te) {
			// A parked connection may have been closed by the backend
			// since it was checked: try once more on a fresh one.
			b.Close()
			if b, err = srv.connectBackend(srv.ctx, proto, host, addr); err != nil {
				errs = append(errs, fmt.Errorf("%s (%s): %w", host, addr, err))
				continue
			}
			answer, err = login(b, cr)
		}
		if errors.As(err, &te) {
			b.Close()
			errs = append(errs, fmt.Errorf("%s (%s): %w", host, addr, err))
			continue
		}
		if err != nil {
			b.Close()
			return nil, nil, err
		}
		if i > 0 {
			srv.log.Warn("logged in on a standby backend", "cid", sess.id, "user", user, "backend", host, "skipped", errors.Join(errs...))
		}
		return b, answer, nil
	}
	return nil, nil, unavailable("no backend reachable: %w", errors.Join(errs...))
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

// errSASLCancelled: the client answered a SASL challenge with "*".
var errSASLCancelled = errors.New("SASL exchange cancelled")

// saslContinue sends an empty SASL challenge ("+ ", the same in IMAP and
// POP3) and reads the client's response line. It returns
// wire.ErrLineTooLong for an over-long response and errSASLCancelled for
// "*".
func (sess *session) saslContinue() (string, error) {
	if err := sess.write([]byte("+ \r\n")); err != nil {
		return "", err
	}
	if err := sess.readDeadline(); err != nil {
		return "", err
	}
	line, err := wire.ReadLine(sess.br)
	if err != nil {
		return "", err
	}
	if string(line) == "*" {
		return "", errSASLCancelled
	}
	return string(line), nil
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
	var ue *unavailableError
	var bn *backendNo
	switch {
	case errors.As(err, &r), errors.As(err, &bn):
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
