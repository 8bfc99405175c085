package router

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"time"

	"switchboard/route"
	"switchboard/router/internal/pump"
	"switchboard/router/internal/wire"
	"switchboard/router/pop3"
)

const (
	pop3AuthFailed  = "-ERR [AUTH] Authentication failed.\r\n"
	pop3Unavailable = "-ERR [SYS/TEMP] Mail service temporarily unavailable, please try again later.\r\n"
	pop3Privacy     = "-ERR [AUTH] Plaintext authentication disallowed on non-secure connections.\r\n"
)

// pop3Caps is the CAPA answer before login (RFC 2449).
func (sess *session) pop3Caps() string {
	var b strings.Builder
	b.WriteString("+OK Capability list follows\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\n")
	if sess.plaintextAllowed() {
		b.WriteString("USER\r\nSASL PLAIN\r\n")
	}
	if sess.canStartTLS() {
		b.WriteString("STLS\r\n")
	}
	b.WriteString(".\r\n")
	return b.String()
}

// pop3Login runs the POP3 authorization state. It returns the logged-in
// backend, or nil when the session is over.
func (sess *session) pop3Login() *backendConn {
	if err := sess.write([]byte("+OK " + sess.l.text.hostname + " ready.\r\n")); err != nil {
		sess.readFailed(err)
		return nil
	}
	var user string
	var authFails int
	for {
		if err := sess.readDeadline(); err != nil {
			sess.readFailed(err)
			return nil
		}
		cmd, err := pop3.ReadCommand(sess.br)
		if err != nil {
			var pe *pop3.ParseError
			if !errors.As(err, &pe) {
				sess.preauthReadFailed(err, "-ERR [SYS/TEMP] ", "-ERR Disconnected for inactivity.\r\n")
				return nil
			}
			if !sess.pop3Bad(pe.Text, pe.Fatal) {
				return nil
			}
			continue
		}
		var cr *creds
		switch cmd.Name {
		case "CAPA":
			err = sess.write([]byte(sess.pop3Caps()))
		case "QUIT":
			sess.write([]byte("+OK Logging out.\r\n"))
			sess.fail(route.OutcomeClientQuit, nil)
			return nil
		case "NOOP":
			// Not valid in the AUTHORIZATION state (RFC 1939 section 5).
			if !sess.pop3Bad("NOOP not allowed before login.", false) {
				return nil
			}
			continue
		case "STLS":
			if !sess.canStartTLS() {
				if !sess.pop3Bad("STLS not available.", false) {
					return nil
				}
				continue
			}
			if err := sess.write([]byte("+OK Begin TLS negotiation now.\r\n")); err != nil {
				sess.readFailed(err)
				return nil
			}
			if err := sess.startTLS(); err != nil {
				sess.fail(route.OutcomeTLSFailed, err)
				return nil
			}
			user = ""
			continue
		case "USER":
			if !sess.plaintextAllowed() {
				err = sess.write([]byte(pop3Privacy))
				break
			}
			user = cmd.Args[0]
			err = sess.write([]byte("+OK\r\n"))
		case "PASS":
			if !sess.plaintextAllowed() {
				err = sess.write([]byte(pop3Privacy))
				break
			}
			if user == "" {
				if !sess.pop3Bad("USER first.", false) {
					return nil
				}
				continue
			}
			cr = &creds{user: user, pass: cmd.Args[0]}
			user = ""
		case "AUTH":
			var done bool
			cr, done = sess.pop3Auth(cmd)
			if done {
				return nil
			}
		default:
			if !sess.pop3Bad("Unknown command or not allowed before login.", false) {
				return nil
			}
			continue
		}
		if err != nil {
			sess.readFailed(err)
			return nil
		}
		if cr == nil {
			continue
		}
		t0 := time.Now()
		b, answer, err := sess.route(cr, sess.pop3BackendLogin)
		if err == nil {
			return sess.loggedIn(b, t0, answer)
		}
		if !sess.pop3LoginFailed(t0, err) {
			return nil
		}
		authFails++
		if authFails >= sess.srv.opts.maxErrors() {
			sess.write([]byte("-ERR Too many failed logins.\r\n"))
			return nil
		}
	}
}

// pop3Bad answers a bad command and reports whether the session goes on.
func (sess *session) pop3Bad(text string, fatal bool) bool {
	if fatal {
		sess.write([]byte("-ERR " + text + "\r\n"))
		sess.fail(route.OutcomeProtocolError, errors.New(text))
		return false
	}
	sess.nerrors++
	if sess.nerrors >= sess.srv.opts.maxErrors() {
		sess.write([]byte("-ERR " + text + " Too many invalid commands.\r\n"))
		sess.fail(route.OutcomeProtocolError, errors.New("too many invalid commands"))
		return false
	}
	if err := sess.write([]byte("-ERR " + text + "\r\n")); err != nil {
		sess.readFailed(err)
		return false
	}
	return true
}

// pop3Auth runs AUTH (RFC 5034). It returns nil creds when the command was
// answered, and done when the session is over.
func (sess *session) pop3Auth(cmd *pop3.Command) (cr *creds, done bool) {
	if len(cmd.Args) == 0 {
		list := "+OK\r\n.\r\n"
		if sess.plaintextAllowed() {
			list = "+OK\r\nPLAIN\r\n.\r\n"
		}
		if err := sess.write([]byte(list)); err != nil {
			sess.readFailed(err)
			return nil, true
		}
		return nil, false
	}
	if !sess.plaintextAllowed() {
		if err := sess.write([]byte(pop3Privacy)); err != nil {
			sess.readFailed(err)
			return nil, true
		}
		return nil, false
	}
	if cmd.Args[0] != "PLAIN" {
		return nil, !sess.pop3Bad("Unsupported authentication mechanism.", false)
	}
	var resp string
	if len(cmd.Args) > 1 {
		resp = cmd.Args[1]
	} else {
		var err error
		switch resp, err = sess.saslContinue(); {
		case err == wire.ErrLineTooLong:
			return nil, !sess.pop3Bad("Response too long.", true)
		case err == errSASLCancelled:
			return nil, !sess.pop3Bad("Authentication cancelled.", false)
		case err != nil:
			sess.readFailed(err)
			return nil, true
		}
	}
	cr, err := decodePlain(resp)
	if err != nil {
		return nil, !sess.pop3Bad("Invalid PLAIN response: "+err.Error()+".", false)
	}
	return cr, false
}

// pop3LoginFailed answers a failed login and reports whether the session
// goes on.
func (sess *session) pop3LoginFailed(t0 time.Time, err error) bool {
	var line string
	var r *route.Refusal
	var bn *backendNo
	switch o := sess.loginFailed(err); {
	case errors.As(err, &r):
		sess.sleep(r.Delay)
		code := "SYS/TEMP"
		if r.Code == "INUSE" || r.Code == "LIMIT" {
			code = "IN-USE"
		}
		line = "-ERR [" + code + "] " + r.Text + "\r\n"
	case o == route.OutcomeUnavailable:
		sess.srv.log.Warn("login unavailable", "cid", sess.id, "user", sess.user, "err", err)
		line = pop3Unavailable
	case errors.As(err, &bn):
		sess.failDelay(t0)
		line = string(bn.line) + "\r\n"
	default:
		sess.failDelay(t0)
		line = pop3AuthFailed
	}
	return sess.write([]byte(line)) == nil
}

// pop3BackendLogin logs in to a POP3 backend whose greeting has been read:
// CAPA when the
// backend's capabilities are not known yet, then XCLIENT with the client's
// address and AUTH PLAIN with an initial response, pipelined.
func (sess *session) pop3BackendLogin(b *backendConn, cr *creds) ([]byte, error) {
	if err := b.conn.SetDeadline(time.Now().Add(sess.srv.opts.loginTimeout())); err != nil {
		return nil, &transportError{err}
	}
	var err error
	greeting := b.greeting
	caps, ok := sess.srv.caps.get(b.addr)
	if !ok {
		if _, err := b.out.Write([]byte("CAPA\r\n")); err != nil {
			return nil, &transportError{err}
		}
		caps, err = readCapa(b)
		if err != nil {
			return nil, &transportError{err}
		}
		sess.srv.caps.put(b.addr, caps)
		if !hasCap(caps, "XCLIENT") && !bytes.Contains(greeting, []byte("[XCLIENT]")) {
			sess.srv.log.Warn("backend does not offer XCLIENT: the client address is not forwarded; list the proxy in its login_trusted_networks", "backend", b.addr)
		}
	}
	// Dovecot announces XCLIENT to trusted peers in its greeting
	// ("+OK [XCLIENT] …"), not in CAPA.
	xclient := hasCap(caps, "XCLIENT") || bytes.Contains(greeting, []byte("[XCLIENT]"))
	sasl := hasCap(caps, "SASL PLAIN") || hasSASL(caps, "PLAIN")
	pipelining := hasCap(caps, "PIPELINING")
	cmd := make([]byte, 0, 256)
	if xclient {
		cmd = append(cmd, "XCLIENT ADDR="...)
		cmd = append(cmd, sess.client.Addr().String()...)
		cmd = append(cmd, " PORT="...)
		cmd = strconv.AppendUint(cmd, uint64(sess.client.Port()), 10)
		cmd = append(cmd, " SESSION="...)
		cmd = append(cmd, sess.id...)
		cmd = append(cmd, "\r\n"...)
	}
	userPass := false
	switch {
	case sasl:
		cmd = append(cmd, "AUTH PLAIN "...)
		cmd = append(cmd, cr.saslPlain()...)
		cmd = append(cmd, "\r\n"...)
	case cr.authz != "":
		return nil, unavailable("backend %s offers no SASL PLAIN for a login with an authorization identity", b.addr)
	default:
		userPass = true
		cmd = append(cmd, "USER "...)
		cmd = append(cmd, cr.user...)
		cmd = append(cmd, "\r\n"...)
	}
	if !pipelining && xclient {
		// Without PIPELINING each command waits for its answer.
		i := bytes.IndexByte(cmd, '\n') + 1
		if err := sess.pop3Exchange(b, cmd[:i], "XCLIENT"); err != nil {
			return nil, err
		}
		cmd = cmd[i:]
		xclient = false
	}
	if userPass && pipelining {
		cmd = append(cmd, "PASS "...)
		cmd = append(cmd, cr.pass...)
		cmd = append(cmd, "\r\n"...)
	}
	_, err = b.out.Write(cmd)
	clear(cmd)
	pump.QuickAck(b.tcp)
	if err != nil {
		return nil, &transportError{err}
	}
	if xclient {
		line, err := wire.ReadLine(b.br)
		if err != nil {
			return nil, &transportError{err}
		}
		if !bytes.HasPrefix(line, []byte("+OK")) {
			sess.srv.log.Warn("backend refused XCLIENT; the client address is not forwarded", "cid", sess.id, "backend", b.addr, "answer", truncate(line))
		}
	}
	if userPass {
		line, err := wire.ReadLine(b.br)
		if err != nil {
			return nil, &transportError{err}
		}
		if !bytes.HasPrefix(line, []byte("+OK")) {
			return nil, pop3Refusal(line)
		}
		if !pipelining {
			pass := append(append([]byte("PASS "), cr.pass...), "\r\n"...)
			_, err := b.out.Write(pass)
			clear(pass)
			if err != nil {
				return nil, &transportError{err}
			}
		}
	}
	line, err := wire.ReadLine(b.br)
	if err != nil {
		return nil, &transportError{err}
	}
	if !bytes.HasPrefix(line, []byte("+OK")) {
		return nil, pop3Refusal(line)
	}
	b.conn.SetDeadline(time.Time{})
	return append(append([]byte(nil), line...), "\r\n"...), nil
}

// pop3Exchange sends one command and expects +OK.
func (sess *session) pop3Exchange(b *backendConn, cmd []byte, name string) error {
	if _, err := b.out.Write(cmd); err != nil {
		return &transportError{err}
	}
	line, err := wire.ReadLine(b.br)
	if err != nil {
		return &transportError{err}
	}
	if !bytes.HasPrefix(line, []byte("+OK")) {
		sess.srv.log.Warn("backend refused "+name, "cid", sess.id, "backend", b.addr, "answer", truncate(line))
	}
	return nil
}

// pop3Refusal classifies a backend's -ERR to a login.
func pop3Refusal(line []byte) error {
	text := bytes.TrimPrefix(line, []byte("-ERR"))
	if bytes.Contains(text, []byte("Plaintext authentication disallowed")) {
		// Not the user's fault: the backend does not trust the proxy.
		return unavailable("backend refuses plaintext logins from the proxy: list the proxy in its login_trusted_networks or use TLS to it (%s)", truncate(line))
	}
	switch code := respCode(text); {
	case code == "", code == "AUTH":
		return errAuthFailed
	case strings.HasPrefix(code, "SYS/TEMP"):
		return &transportError{errors.New("backend answered " + truncate(line))}
	default:
		return &backendNo{line: append([]byte(nil), line...)}
	}
}

// readCapa reads a CAPA answer: +OK, capability lines, ".".
func readCapa(b *backendConn) ([]string, error) {
	line, err := wire.ReadLine(b.br)
	if err != nil {
		return nil, err
	}
	if !bytes.HasPrefix(line, []byte("+OK")) {
		return nil, nil // no CAPA: assume nothing
	}
	var caps []string
	for {
		line, err := wire.ReadLine(b.br)
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
