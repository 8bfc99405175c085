package pop3

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"time"

	"switchboard/router/internal/wire"
)

// BackendLogin logs cr in on b (the dialog keeps no state for it).
func (d *Dialog) BackendLogin(b *wire.Backend, cr *wire.Creds, fwd *wire.Forward) ([]byte, error) {
	return Login(b, cr, fwd)
}

// Login logs cr in on a POP3 backend whose greeting has been read: CAPA
// when the backend's capabilities are not known yet, then XCLIENT with the
// client's address and AUTH PLAIN with an initial response (or USER and
// PASS), pipelined when the backend offers PIPELINING. It returns the
// backend's +OK line, to hand the client.
func Login(b *wire.Backend, cr *wire.Creds, fwd *wire.Forward) ([]byte, error) {
	if err := b.Conn.SetDeadline(time.Now().Add(b.Timeout)); err != nil {
		return nil, &wire.TransportError{Err: err}
	}
	caps, err := backendCaps(b, fwd)
	if err != nil {
		return nil, err
	}
	// Dovecot announces XCLIENT to trusted peers in its greeting
	// ("+OK [XCLIENT] …"), not in CAPA.
	xclient := wire.HasCap(caps, "XCLIENT") || bytes.Contains(b.Greeting, []byte("[XCLIENT]"))
	sasl := wire.HasCap(caps, "SASL PLAIN") || hasSASL(caps, "PLAIN")
	pipelining := wire.HasCap(caps, "PIPELINING")
	cmd := make([]byte, 0, 256)
	if xclient {
		cmd = appendXCLIENT(cmd, fwd)
	}
	userPass := false
	switch {
	case sasl:
		cmd = append(cmd, "AUTH PLAIN "...)
		cmd = append(cmd, cr.SASLPlain()...)
		cmd = append(cmd, "\r\n"...)
	case cr.Authz != "":
		return nil, wire.Unavailable("backend %s offers no SASL PLAIN for a login with an authorization identity", b.Addr)
	default:
		userPass = true
		cmd = append(cmd, "USER "...)
		cmd = append(cmd, cr.User...)
		cmd = append(cmd, "\r\n"...)
	}
	if !pipelining && xclient {
		// Without PIPELINING each command waits for its answer.
		i := bytes.IndexByte(cmd, '\n') + 1
		if err := exchange(b, fwd, cmd[:i], "XCLIENT"); err != nil {
			return nil, err
		}
		cmd = cmd[i:]
		xclient = false
	}
	if userPass && pipelining {
		cmd = append(cmd, "PASS "...)
		cmd = append(cmd, cr.Pass...)
		cmd = append(cmd, "\r\n"...)
	}
	_, err = b.W.Write(cmd)
	clear(cmd)
	if b.Sent != nil {
		b.Sent(b.TCP)
	}
	if err != nil {
		return nil, &wire.TransportError{Err: err}
	}
	return readLoginAnswers(b, cr, fwd, xclient, userPass, pipelining)
}

// backendCaps returns what the backend offers, asking CAPA the first
// time.
func backendCaps(b *wire.Backend, fwd *wire.Forward) ([]string, error) {
	if caps, ok := b.Caps.Get(b.Addr); ok {
		return caps, nil
	}
	if _, err := b.W.Write([]byte("CAPA\r\n")); err != nil {
		return nil, &wire.TransportError{Err: err}
	}
	caps, err := readCapa(b)
	if err != nil {
		return nil, &wire.TransportError{Err: err}
	}
	b.Caps.Put(b.Addr, caps)
	if !wire.HasCap(caps, "XCLIENT") && !bytes.Contains(b.Greeting, []byte("[XCLIENT]")) {
		b.Log.Warn("backend does not offer XCLIENT: the client address is not forwarded; list the proxy in its login_trusted_networks", "cid", fwd.Session, "backend", b.Addr)
	}
	return caps, nil
}

// appendXCLIENT appends an XCLIENT command forwarding the client.
func appendXCLIENT(cmd []byte, fwd *wire.Forward) []byte {
	cmd = append(cmd, "XCLIENT ADDR="...)
	cmd = append(cmd, fwd.Client.Addr().String()...)
	cmd = append(cmd, " PORT="...)
	cmd = strconv.AppendUint(cmd, uint64(fwd.Client.Port()), 10)
	cmd = append(cmd, " SESSION="...)
	cmd = append(cmd, fwd.Session...)
	return append(cmd, "\r\n"...)
}

// readLoginAnswers reads the answers to what Login sent: XCLIENT's, then
// USER's (sending PASS now without PIPELINING), then the login's.
func readLoginAnswers(b *wire.Backend, cr *wire.Creds, fwd *wire.Forward, xclient, userPass, pipelining bool) ([]byte, error) {
	if xclient {
		line, err := wire.ReadLine(b.R)
		if err != nil {
			return nil, &wire.TransportError{Err: err}
		}
		if !bytes.HasPrefix(line, []byte("+OK")) {
			b.Log.Warn("backend refused XCLIENT; the client address is not forwarded", "cid", fwd.Session, "backend", b.Addr, "answer", wire.Truncate(line))
		}
	}
	if userPass {
		line, err := wire.ReadLine(b.R)
		if err != nil {
			return nil, &wire.TransportError{Err: err}
		}
		if !bytes.HasPrefix(line, []byte("+OK")) {
			return nil, refusal(line)
		}
		if !pipelining {
			pass := append(append([]byte("PASS "), cr.Pass...), "\r\n"...)
			_, err := b.W.Write(pass)
			clear(pass)
			if err != nil {
				return nil, &wire.TransportError{Err: err}
			}
		}
	}
	line, err := wire.ReadLine(b.R)
	if err != nil {
		return nil, &wire.TransportError{Err: err}
	}
	if !bytes.HasPrefix(line, []byte("+OK")) {
		return nil, refusal(line)
	}
	b.Conn.SetDeadline(time.Time{})
	return append(append([]byte(nil), line...), "\r\n"...), nil
}

// exchange sends one command and expects +OK.
func exchange(b *wire.Backend, fwd *wire.Forward, cmd []byte, name string) error {
	if _, err := b.W.Write(cmd); err != nil {
		return &wire.TransportError{Err: err}
	}
	line, err := wire.ReadLine(b.R)
	if err != nil {
		return &wire.TransportError{Err: err}
	}
	if !bytes.HasPrefix(line, []byte("+OK")) {
		b.Log.Warn("backend refused "+name, "cid", fwd.Session, "backend", b.Addr, "answer", wire.Truncate(line))
	}
	return nil
}

// refusal classifies a backend's -ERR to a login (RFC 3206 codes).
func refusal(line []byte) error {
	text := bytes.TrimPrefix(line, []byte("-ERR"))
	if bytes.Contains(text, []byte("Plaintext authentication disallowed")) {
		// Not the user's fault: the backend does not trust the proxy.
		return wire.Unavailable("backend refuses plaintext logins from the proxy: list the proxy in its login_trusted_networks or use TLS to it (%s)", wire.Truncate(line))
	}
	switch code := wire.RespCode(text); {
	case code == "", code == "AUTH":
		return wire.ErrAuthFailed
	case strings.HasPrefix(code, "SYS/TEMP"):
		return &wire.TransportError{Err: errors.New("backend answered " + wire.Truncate(line))}
	default:
		return &wire.RefusedError{Line: append([]byte(nil), line...)}
	}
}

// readCapa reads a CAPA answer: +OK, capability lines, ".".
func readCapa(b *wire.Backend) ([]string, error) {
	line, err := wire.ReadLine(b.R)
	if err != nil {
		return nil, err
	}
	if !bytes.HasPrefix(line, []byte("+OK")) {
		return nil, nil // no CAPA: assume nothing
	}
	var caps []string
	for {
		line, err := wire.ReadLine(b.R)
		if err != nil {
			return nil, err
		}
		if string(line) == "." {
			return caps, nil
		}
		caps = append(caps, string(line))
	}
}

// hasSASL reports whether a "SASL m1 m2 …" capability lists mech.
func hasSASL(caps []string, mech string) bool {
	for _, c := range caps {
		f := strings.Fields(c)
		if len(f) > 1 && strings.EqualFold(f[0], "SASL") {
			for _, m := range f[1:] {
				if strings.EqualFold(m, mech) {
					return true
				}
			}
		}
	}
	return false
}
