package router

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"time"

	"switchboard/route"
	"switchboard/router/imap"
	"switchboard/router/internal/pump"
	"switchboard/router/internal/wire"
)

// protoText holds a listener's fixed protocol lines.
type protoText struct {
	hostname string
}

func newProtoText(proto, hostname string) *protoText { return &protoText{hostname: hostname} }

// imapCaps lists what Switchboard offers before login. The backend's own
// capabilities reach the client in the tagged OK of its login.
func (sess *session) imapCaps() string {
	caps := "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+"
	if sess.canStartTLS() {
		caps += " STARTTLS"
	}
	if sess.plaintextAllowed() {
		caps += " AUTH=PLAIN"
	} else {
		caps += " LOGINDISABLED"
	}
	return caps
}

const (
	imapByeTimeout  = "* BYE Disconnected for inactivity.\r\n"
	imapByeErrors   = "* BYE Too many invalid commands.\r\n"
	imapUnavailable = "NO [UNAVAILABLE] Mail service temporarily unavailable, please try again later.\r\n"
	imapAuthFailed  = "NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
	imapPrivacy     = "NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure connections.\r\n"
)

// imapLogin runs the IMAP login phase. It returns the logged-in backend,
// or nil when the session is over.
func (sess *session) imapLogin() *backendConn {
	srv := sess.srv
	greeting := "* OK [CAPABILITY " + sess.imapCaps() + "] " + sess.l.text.hostname + " ready.\r\n"
	if err := sess.write([]byte(greeting)); err != nil {
		sess.readFailed(err)
		return nil
	}
	r := &imap.Reader{R: sess.br}
	r.Continue = func() error { return sess.write([]byte("+ Ready for literal data\r\n")) }
	var authFails int
	for {
		if err := sess.readDeadline(); err != nil {
			sess.readFailed(err)
			return nil
		}
		cmd, err := r.ReadCommand()
		if err != nil {
			var pe *imap.ParseError
			if !errors.As(err, &pe) {
				sess.preauthReadFailed(err, "* BYE ", imapByeTimeout)
				return nil
			}
			if !sess.imapBad(pe) {
				return nil
			}
			continue
		}
		tag := cmd.Tag
		switch cmd.Name {
		case "CAPABILITY":
			err = sess.write([]byte("* CAPABILITY " + sess.imapCaps() + "\r\n" + tag + " OK Capability completed.\r\n"))
		case "NOOP":
			err = sess.write([]byte(tag + " OK NOOP completed.\r\n"))
		case "ID":
			err = sess.write([]byte("* ID (\"name\" \"Switchboard\")\r\n" + tag + " OK ID completed.\r\n"))
		case "LOGOUT":
			sess.write([]byte("* BYE Logging out.\r\n" + tag + " OK Logout completed.\r\n"))
			sess.fail(route.OutcomeClientQuit, nil)
			return nil
		case "STARTTLS":
			if !sess.canStartTLS() {
				if !sess.imapBad(&imap.ParseError{Tag: tag, Text: "STARTTLS not available."}) {
					return nil
				}
				continue
			}
			if err := sess.write([]byte(tag + " OK Begin TLS negotiation now.\r\n")); err != nil {
				sess.readFailed(err)
				return nil
			}
			if err := sess.startTLS(); err != nil {
				sess.fail(route.OutcomeTLSFailed, err)
				return nil
			}
			r.R = sess.br
		case "LOGIN", "AUTHENTICATE":
			cr, done := sess.imapCreds(cmd)
			if done {
				return nil
			}
			if cr == nil {
				continue
			}
			t0 := time.Now() // the failure delay counts from the credentials
			b, answer, err := sess.route(cr, sess.imapBackendLogin(tag))
			if err == nil {
				return sess.loggedIn(b, t0, answer)
			}
			if !sess.imapLoginFailed(tag, t0, err) {
				return nil
			}
			authFails++
			if authFails >= srv.opts.maxErrors() {
				sess.write([]byte("* BYE Too many failed logins.\r\n"))
				return nil
			}
			continue
		default:
			if !sess.imapBad(&imap.ParseError{Tag: tag, Text: "Unknown command or not allowed before login."}) {
				return nil
			}
			continue
		}
		if err != nil {
			sess.readFailed(err)
			return nil
		}
	}
}

// imapBad answers a bad command and reports whether the session goes on.
func (sess *session) imapBad(pe *imap.ParseError) bool {
	tag := pe.Tag
	if tag == "" {
		tag = "*"
	}
	code := ""
	if pe.Code != "" {
		code = "[" + pe.Code + "] "
	}
	if pe.Fatal {
		sess.write([]byte("* BYE " + code + pe.Text + "\r\n"))
		sess.fail(route.OutcomeProtocolError, errors.New(pe.Text))
		return false
	}
	sess.nerrors++
	if sess.nerrors >= sess.srv.opts.maxErrors() {
		sess.write([]byte(tag + " BAD " + code + pe.Text + "\r\n" + imapByeErrors))
		sess.fail(route.OutcomeProtocolError, errors.New("too many invalid commands"))
		return false
	}
	if err := sess.write([]byte(tag + " BAD " + code + pe.Text + "\r\n")); err != nil {
		sess.readFailed(err)
		return false
	}
	return true
}

// imapCreds gets the credentials out of LOGIN or AUTHENTICATE, running the
// SASL exchange when needed. It returns nil creds when the command was
// answered (refused, cancelled) and done when the session is over.
func (sess *session) imapCreds(cmd *imap.Command) (cr *creds, done bool) {
	tag := cmd.Tag
	if !sess.plaintextAllowed() {
		if err := sess.write([]byte(tag + " " + imapPrivacy)); err != nil {
			sess.readFailed(err)
			return nil, true
		}
		return nil, false
	}
	if cmd.Name == "LOGIN" {
		if cmd.Args[0] == "" || cmd.Args[1] == "" {
			return nil, !sess.imapBad(&imap.ParseError{Tag: tag, Text: "Empty user name or password."})
		}
		return &creds{user: cmd.Args[0], pass: cmd.Args[1]}, false
	}
	if cmd.Args[0] != "PLAIN" {
		if err := sess.write([]byte(tag + " NO [CANNOT] Unsupported authentication mechanism.\r\n")); err != nil {
			sess.readFailed(err)
			return nil, true
		}
		return nil, false
	}
	var resp string
	if len(cmd.Args) > 1 {
		resp = cmd.Args[1]
	} else {
		var err error
		switch resp, err = sess.saslContinue(); {
		case err == wire.ErrLineTooLong:
			return nil, !sess.imapBad(&imap.ParseError{Tag: tag, Code: "TOOBIG", Text: "Response too long.", Fatal: true})
		case err == errSASLCancelled:
			return nil, !sess.imapBad(&imap.ParseError{Tag: tag, Text: "Authentication cancelled."})
		case err != nil:
			sess.readFailed(err)
			return nil, true
		}
	}
	cr, err := decodePlain(resp)
	if err != nil {
		return nil, !sess.imapBad(&imap.ParseError{Tag: tag, Text: "Invalid PLAIN response: " + err.Error() + "."})
	}
	return cr, false
}

// imapLoginFailed answers a failed login and reports whether the session
// goes on.
func (sess *session) imapLoginFailed(tag string, t0 time.Time, err error) bool {
	var line string
	var r *route.Refusal
	var bn *backendNo
	switch o := sess.loginFailed(err); {
	case errors.As(err, &r):
		sess.sleep(r.Delay)
		code := r.Code
		if code == "" {
			code = "UNAVAILABLE"
		}
		line = tag + " NO [" + code + "] " + r.Text + "\r\n"
	case o == route.OutcomeUnavailable:
		sess.srv.log.Warn("login unavailable", "cid", sess.id, "user", sess.user, "err", err)
		line = tag + " " + imapUnavailable
	case errors.As(err, &bn):
		sess.failDelay(t0)
		line = string(bn.line) + "\r\n"
	default:
		sess.failDelay(t0)
		line = tag + " " + imapAuthFailed
	}
	if err := sess.write([]byte(line)); err != nil {
		return false
	}
	return true
}

// imapBackendLogin returns the login function for an IMAP backend whose
// greeting has been read: send ID with the client's address and the login in
// one write (pipelined), and read both answers.
func (sess *session) imapBackendLogin(tag string) backendLogin {
	return func(b *backendConn, cr *creds) ([]byte, error) {
		if err := b.conn.SetDeadline(time.Now().Add(sess.srv.opts.loginTimeout())); err != nil {
			return nil, &transportError{err}
		}
		caps := respCaps(b.greeting)
		if caps == nil {
			caps, _ = sess.srv.caps.get(b.addr)
		} else {
			sess.srv.caps.put(b.addr, caps)
		}

		idTag := "sb0"
		if strings.EqualFold(tag, idTag) {
			idTag = "sb1"
		}
		cmd := make([]byte, 0, 512)
		cmd = append(cmd, idTag...)
		cmd = append(cmd, ` ID ("x-originating-ip" "`...)
		cmd = append(cmd, sess.client.Addr().String()...)
		cmd = append(cmd, `" "x-originating-port" "`...)
		cmd = strconv.AppendUint(cmd, uint64(sess.client.Port()), 10)
		cmd = append(cmd, `" "x-connected-ip" "`...)
		cmd = append(cmd, sess.local.Addr().String()...)
		cmd = append(cmd, `" "x-connected-port" "`...)
		cmd = strconv.AppendUint(cmd, uint64(sess.local.Port()), 10)
		cmd = append(cmd, `" "x-session-id" "`...)
		cmd = append(cmd, sess.id...)
		cmd = append(cmd, "\")\r\n"...)
		cmd = append(cmd, tag...)
		switch {
		case hasCap(caps, "SASL-IR") && hasCap(caps, "AUTH=PLAIN"):
			cmd = append(cmd, " AUTHENTICATE PLAIN "...)
			cmd = append(cmd, cr.saslPlain()...)
		case hasCap(caps, "LOGINDISABLED"):
			return nil, unavailable("backend %s refuses plaintext logins: list the proxy in its login_trusted_networks or use TLS to it", b.addr)
		case cr.authz != "":
			return nil, unavailable("backend %s offers no SASL-IR PLAIN for a login with an authorization identity", b.addr)
		case (imap.Quotable(cr.user) && imap.Quotable(cr.pass)) || hasCap(caps, "LITERAL+"):
			cmd = append(cmd, " LOGIN "...)
			cmd = imap.AppendString(cmd, cr.user)
			cmd = append(cmd, ' ')
			cmd = imap.AppendString(cmd, cr.pass)
		default:
			return nil, unavailable("backend %s cannot take this password: no SASL-IR and no LITERAL+", b.addr)
		}
		cmd = append(cmd, "\r\n"...)
		_, err := b.out.Write(cmd)
		clear(cmd)
		pump.QuickAck(b.tcp) // the ID and login answers come in separate writes
		if err != nil {
			return nil, &transportError{err}
		}

		var untagged []byte
		idDone := false
		for {
			line, err := wire.ReadLine(b.br)
			if err != nil {
				return nil, &transportError{err}
			}
			switch {
			case !idDone && hasTag(line, idTag):
				idDone = true
				if !bytes.HasPrefix(line[len(idTag)+1:], []byte("OK")) {
					sess.srv.log.Warn("backend refused ID; the client address is not forwarded", "cid", sess.id, "backend", b.addr, "answer", truncate(line))
				}
			case bytes.HasPrefix(line, []byte("* ")):
				if idDone && !bytes.HasPrefix(line, []byte("* ID ")) {
					untagged = append(untagged, line...)
					untagged = append(untagged, "\r\n"...)
				}
			case hasTag(line, tag):
				status := line[len(tag)+1:]
				switch {
				case bytes.HasPrefix(status, []byte("OK")):
					b.conn.SetDeadline(time.Time{})
					answer := append(untagged, line...)
					return append(answer, "\r\n"...), nil
				case bytes.HasPrefix(status, []byte("NO")):
					switch code := respCode(status[2:]); code {
					case "", "AUTHENTICATIONFAILED", "AUTHORIZATIONFAILED", "EXPIRED", "PRIVACYREQUIRED":
						if code == "PRIVACYREQUIRED" {
							sess.srv.log.Error("backend requires TLS for logins: add the proxy to its login_trusted_networks", "backend", b.addr)
						}
						return nil, errAuthFailed
					case "UNAVAILABLE", "SERVERBUG":
						return nil, &transportError{errors.New("backend answered " + truncate(line))}
					default:
						return nil, &backendNo{line: append([]byte(nil), line...)}
					}
				default:
					return nil, unavailable("backend %s answered login with %s", b.addr, truncate(line))
				}
			case bytes.HasPrefix(line, []byte("+")):
				return nil, unavailable("backend %s asked for a continuation during login", b.addr)
			}
		}
	}
}

func hasTag(line []byte, tag string) bool {
	return len(line) > len(tag) && line[len(tag)] == ' ' && string(line[:len(tag)]) == tag
}

// respCaps returns the capabilities of a "[CAPABILITY …]" response code in
// line, or nil.
func respCaps(line []byte) []string {
	i := bytes.Index(line, []byte("[CAPABILITY "))
	if i < 0 {
		return nil
	}
	rest := line[i+len("[CAPABILITY "):]
	j := bytes.IndexByte(rest, ']')
	if j < 0 {
		return nil
	}
	return strings.Fields(string(rest[:j]))
}

// respCode returns the response code at the start of text (" [CODE …] …").
func respCode(text []byte) string {
	text = bytes.TrimLeft(text, " ")
	if len(text) == 0 || text[0] != '[' {
		return ""
	}
	end := bytes.IndexAny(text, " ]")
	if end < 0 {
		return ""
	}
	return strings.ToUpper(string(text[1:end]))
}

// truncate returns a short, printable form of a protocol line for logs.
func truncate(line []byte) string {
	const max = 120
	if len(line) > max {
		line = line[:max]
	}
	return strings.ToValidUTF8(string(line), "?")
}

var _ = route.IMAP
