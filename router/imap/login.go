package imap

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"time"

	"switchboard/router/internal/wire"
)

// BackendLogin logs in the dialog's current login on b.
func (d *Dialog) BackendLogin(b *wire.Backend, cr *wire.Creds, fwd *wire.Forward) ([]byte, error) {
	return Login(b, cr, d.tag, fwd)
}

// Login logs cr in on a backend whose greeting has been read: ID with the
// client's address (RFC 2971; Dovecot's forwarding fields) and the login
// in one write (pipelined), then both answers read. The login carries the
// client's tag, so the backend's tagged OK, with its post-login
// CAPABILITY, is handed to the client as it is: the answer returned.
func Login(b *wire.Backend, cr *wire.Creds, tag string, fwd *wire.Forward) ([]byte, error) {
	if err := b.Conn.SetDeadline(time.Now().Add(b.Timeout)); err != nil {
		return nil, &wire.TransportError{Err: err}
	}
	caps := RespCaps(b.Greeting)
	if caps == nil {
		caps, _ = b.Caps.Get(b.Addr)
	} else {
		b.Caps.Put(b.Addr, caps)
	}
	idTag := "sb0"
	if strings.EqualFold(tag, idTag) {
		idTag = "sb1"
	}
	cmd := appendID(make([]byte, 0, 512), idTag, fwd)
	cmd = append(cmd, tag...)
	switch {
	case wire.HasCap(caps, "SASL-IR") && wire.HasCap(caps, "AUTH=PLAIN"):
		cmd = append(cmd, " AUTHENTICATE PLAIN "...)
		cmd = append(cmd, cr.SASLPlain()...)
	case wire.HasCap(caps, "LOGINDISABLED"):
		return nil, wire.Unavailable("backend %s refuses plaintext logins: list the proxy in its login_trusted_networks or use TLS to it", b.Addr)
	case cr.Authz != "":
		return nil, wire.Unavailable("backend %s offers no SASL-IR PLAIN for a login with an authorization identity", b.Addr)
	case (Quotable(cr.User) && Quotable(cr.Pass)) || wire.HasCap(caps, "LITERAL+"):
		cmd = append(cmd, " LOGIN "...)
		cmd = AppendString(cmd, cr.User)
		cmd = append(cmd, ' ')
		cmd = AppendString(cmd, cr.Pass)
	default:
		return nil, wire.Unavailable("backend %s cannot take this password: no SASL-IR and no LITERAL+", b.Addr)
	}
	cmd = append(cmd, "\r\n"...)
	_, err := b.W.Write(cmd)
	clear(cmd)
	if b.Sent != nil {
		b.Sent(b.TCP) // the ID and login answers come in separate writes
	}
	if err != nil {
		return nil, &wire.TransportError{Err: err}
	}
	return readLoginAnswer(b, tag, idTag, fwd)
}

// appendID appends an ID command forwarding the client (RFC 2971, with
// Dovecot's x-originating-*, x-connected-* and x-session-id fields).
func appendID(cmd []byte, idTag string, fwd *wire.Forward) []byte {
	cmd = append(cmd, idTag...)
	cmd = append(cmd, ` ID ("x-originating-ip" "`...)
	cmd = append(cmd, fwd.Client.Addr().String()...)
	cmd = append(cmd, `" "x-originating-port" "`...)
	cmd = strconv.AppendUint(cmd, uint64(fwd.Client.Port()), 10)
	cmd = append(cmd, `" "x-connected-ip" "`...)
	cmd = append(cmd, fwd.Local.Addr().String()...)
	cmd = append(cmd, `" "x-connected-port" "`...)
	cmd = strconv.AppendUint(cmd, uint64(fwd.Local.Port()), 10)
	cmd = append(cmd, `" "x-session-id" "`...)
	cmd = append(cmd, fwd.Session...)
	return append(cmd, "\")\r\n"...)
}

// maxLoginUntagged bounds the untagged lines a backend may send with its
// login answer (a CAPABILITY, a few OK codes): they are kept to be handed
// to the client.
const maxLoginUntagged = 64 << 10

// readLoginAnswer reads the answers to the pipelined ID and login: the
// untagged lines after ID's, and the login's tagged answer.
func readLoginAnswer(b *wire.Backend, tag, idTag string, fwd *wire.Forward) ([]byte, error) {
	var untagged []byte
	idDone := false
	for {
		line, err := wire.ReadLine(b.R)
		if err != nil {
			return nil, &wire.TransportError{Err: err}
		}
		switch {
		case !idDone && hasTag(line, idTag):
			idDone = true
			if !bytes.HasPrefix(line[len(idTag)+1:], []byte("OK")) {
				b.Log.Warn("backend refused ID; the client address is not forwarded", "cid", fwd.Session, "backend", b.Addr, "answer", wire.Truncate(line))
			}
		case bytes.HasPrefix(line, []byte("* ")):
			if idDone && !bytes.HasPrefix(line, []byte("* ID ")) {
				if len(untagged)+len(line) > maxLoginUntagged {
					return nil, wire.Unavailable("backend %s sent over %d bytes of untagged lines with its login answer", b.Addr, maxLoginUntagged)
				}
				untagged = append(untagged, line...)
				untagged = append(untagged, "\r\n"...)
			}
		case hasTag(line, tag):
			return loginStatus(b, line, tag, untagged)
		case bytes.HasPrefix(line, []byte("+")):
			return nil, wire.Unavailable("backend %s asked for a continuation during login", b.Addr)
		}
	}
}

// loginStatus judges the login's tagged answer.
func loginStatus(b *wire.Backend, line []byte, tag string, untagged []byte) ([]byte, error) {
	status := line[len(tag)+1:]
	switch {
	case bytes.HasPrefix(status, []byte("OK")):
		b.Conn.SetDeadline(time.Time{})
		answer := append(untagged, line...)
		return append(answer, "\r\n"...), nil
	case bytes.HasPrefix(status, []byte("NO")):
		switch code := wire.RespCode(status[2:]); code {
		case "", "AUTHENTICATIONFAILED", "AUTHORIZATIONFAILED", "EXPIRED", "PRIVACYREQUIRED":
			if code == "PRIVACYREQUIRED" {
				b.Log.Error("backend requires TLS for logins: add the proxy to its login_trusted_networks", "backend", b.Addr)
			}
			return nil, wire.ErrAuthFailed
		case "UNAVAILABLE", "SERVERBUG":
			return nil, &wire.TransportError{Err: errors.New("backend answered " + wire.Truncate(line))}
		default:
			return nil, &wire.RefusedError{Line: append([]byte(nil), line...)}
		}
	default:
		return nil, wire.Unavailable("backend %s answered login with %s", b.Addr, wire.Truncate(line))
	}
}

func hasTag(line []byte, tag string) bool {
	return len(line) > len(tag) && line[len(tag)] == ' ' && string(line[:len(tag)]) == tag
}

// RespCaps returns the capabilities of a "[CAPABILITY …]" response code
// in line, or nil.
func RespCaps(line []byte) []string {
	caps := capsCode(line)
	if caps == nil {
		return nil
	}
	return strings.Fields(string(caps))
}

// capsCode returns the list inside a "[CAPABILITY …]" response code in
// line (aliasing line), or nil.
func capsCode(line []byte) []byte {
	i := bytes.Index(line, []byte("[CAPABILITY "))
	if i < 0 {
		return nil
	}
	rest := line[i+len("[CAPABILITY "):]
	j := bytes.IndexByte(rest, ']')
	if j < 0 {
		return nil
	}
	return rest[:j]
}

// CachedOK answers the dialog's current login from a parked connection
// whose first login announced caps (LoginOK).
func (d *Dialog) CachedOK(caps []byte) []byte { return LoginOK(d.tag, caps) }

// PostLoginCaps returns a copy of the capability list in the tagged OK
// of a login answer ("tag OK [CAPABILITY …] …"), or nil.
func PostLoginCaps(answer []byte) []byte {
	answer = bytes.TrimRight(answer, "\r\n")
	if i := bytes.LastIndexByte(answer, '\n'); i >= 0 {
		answer = answer[i+1:]
	}
	caps := capsCode(answer)
	if caps == nil {
		return nil
	}
	return append([]byte(nil), caps...)
}
