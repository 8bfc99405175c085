package imap

import (
	"errors"

	"switchboard/route"
	"switchboard/router/internal/wire"
)

// Lines Switchboard answers before login.
const (
	byeTimeout  = "* BYE Disconnected for inactivity.\r\n"
	byeErrors   = "* BYE Too many invalid commands.\r\n"
	unavailable = "NO [UNAVAILABLE] Mail service temporarily unavailable, please try again later.\r\n"
	authFailed  = "NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
	privacy     = "NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure connections.\r\n"
)

// Dialog is the client side of an IMAP session before login: greeting,
// CAPABILITY, NOOP, ID, STARTTLS, LOGOUT, LOGIN and AUTHENTICATE PLAIN.
// The router drives it: Next until a login, BackendLogin on each backend
// it tries, then Refuse for a failed login, or the answer of a good one.
type Dialog struct {
	c         wire.Client
	r         Reader
	hostname  string
	maxErrors int
	nerrors   int // bad commands so far
	fails     int // failed logins so far
	tag       string
}

// NewDialog returns the dialog of client c. hostname is named in the
// greeting; maxErrors bad commands, or failed logins, end the session.
func NewDialog(c wire.Client, hostname string, maxErrors int) *Dialog {
	d := &Dialog{c: c, hostname: hostname, maxErrors: maxErrors}
	d.r.Continue = d.continueLiteral
	return d
}

func (d *Dialog) continueLiteral() error { return d.c.Write([]byte("+ Ready for literal data\r\n")) }

// caps lists what Switchboard offers before login. The backend's own
// capabilities reach the client in the tagged OK of its login.
func (d *Dialog) caps() string {
	caps := "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+"
	if d.c.CanStartTLS() {
		caps += " STARTTLS"
	}
	if d.c.PlaintextAllowed() {
		caps += " AUTH=PLAIN"
	} else {
		caps += " LOGINDISABLED"
	}
	return caps
}

// Greet sends the greeting.
func (d *Dialog) Greet() error {
	return d.c.Write([]byte("* OK [CAPABILITY " + d.caps() + "] " + d.hostname + " ready.\r\n"))
}

// Next answers the client's commands until it gives credentials (cr is
// set) or the session is over: o says how it ended, err is for the log.
// OutcomeKicked means the session was kicked or drained, and told so.
func (d *Dialog) Next() (cr *wire.Creds, o route.Outcome, err error) {
	for {
		if err := d.c.ReadDeadline(); err != nil {
			o, err := readEnd(err)
			return nil, o, err
		}
		d.r.R = d.c.Reader()
		cmd, err := d.r.ReadCommand()
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				o, err := d.readFailed(err)
				return nil, o, err
			}
			if o, err := d.bad(pe); o != "" {
				return nil, o, err
			}
			continue
		}
		cr, o, err := d.command(cmd)
		if cr != nil || o != "" {
			return cr, o, err
		}
	}
}

// command answers one command; it returns credentials, or the end of the
// session, or neither when the dialog goes on.
func (d *Dialog) command(cmd *Command) (*wire.Creds, route.Outcome, error) {
	tag := cmd.Tag
	var err error
	switch cmd.Name {
	case "CAPABILITY":
		err = d.c.Write([]byte("* CAPABILITY " + d.caps() + "\r\n" + tag + " OK Capability completed.\r\n"))
	case "NOOP":
		err = d.c.Write([]byte(tag + " OK NOOP completed.\r\n"))
	case "ID":
		err = d.c.Write([]byte("* ID (\"name\" \"Switchboard\")\r\n" + tag + " OK ID completed.\r\n"))
	case "LOGOUT":
		d.c.Write([]byte("* BYE Logging out.\r\n" + tag + " OK Logout completed.\r\n"))
		return nil, route.OutcomeClientQuit, nil
	case "STARTTLS":
		if !d.c.CanStartTLS() {
			o, err := d.bad(&ParseError{Tag: tag, Text: "STARTTLS not available."})
			return nil, o, err
		}
		if err := d.c.Write([]byte(tag + " OK Begin TLS negotiation now.\r\n")); err != nil {
			o, err := readEnd(err)
			return nil, o, err
		}
		if err := d.c.StartTLS(); err != nil {
			return nil, route.OutcomeTLSFailed, err
		}
	case "LOGIN", "AUTHENTICATE":
		d.tag = tag
		return d.creds(cmd)
	default:
		o, err := d.bad(&ParseError{Tag: tag, Text: "Unknown command or not allowed before login."})
		return nil, o, err
	}
	if err != nil {
		o, err := readEnd(err)
		return nil, o, err
	}
	return nil, "", nil
}

// readEnd classifies a failed read or write.
func readEnd(err error) (route.Outcome, error) { return wire.ReadOutcome(err) }

// readFailed ends the dialog after a failed read. A kick or a drain shows
// up as a read deadline and gets a BYE with its reason; an inactivity
// timeout gets its BYE; a hang-up gets nothing.
func (d *Dialog) readFailed(err error) (route.Outcome, error) {
	if reason := d.c.KickReason(); reason != "" {
		d.c.Write([]byte("* BYE " + reason + "\r\n"))
		return route.OutcomeKicked, nil
	}
	o, err := wire.ReadOutcome(err)
	if o == route.OutcomeTimeout {
		d.c.Write([]byte(byeTimeout))
	}
	return o, err
}

// bad answers a bad command. It returns an outcome when the session is
// over (a fatal error, too many of them, or a failed write).
func (d *Dialog) bad(pe *ParseError) (route.Outcome, error) {
	tag := pe.Tag
	if tag == "" {
		tag = "*"
	}
	code := ""
	if pe.Code != "" {
		code = "[" + pe.Code + "] "
	}
	if pe.Fatal {
		d.c.Write([]byte("* BYE " + code + pe.Text + "\r\n"))
		return route.OutcomeProtocolError, errors.New(pe.Text)
	}
	d.nerrors++
	if d.nerrors >= d.maxErrors {
		d.c.Write([]byte(tag + " BAD " + code + pe.Text + "\r\n" + byeErrors))
		return route.OutcomeProtocolError, errors.New("too many invalid commands")
	}
	if err := d.c.Write([]byte(tag + " BAD " + code + pe.Text + "\r\n")); err != nil {
		return readEnd(err)
	}
	return "", nil
}

// creds gets the credentials out of LOGIN or AUTHENTICATE, running the
// SASL exchange when needed. It returns neither creds nor an outcome when
// the command was answered (refused, cancelled) and the dialog goes on.
func (d *Dialog) creds(cmd *Command) (*wire.Creds, route.Outcome, error) {
	tag := cmd.Tag
	if !d.c.PlaintextAllowed() {
		if err := d.c.Write([]byte(tag + " " + privacy)); err != nil {
			o, err := readEnd(err)
			return nil, o, err
		}
		return nil, "", nil
	}
	if cmd.Name == "LOGIN" {
		if cmd.Args[0] == "" || cmd.Args[1] == "" {
			o, err := d.bad(&ParseError{Tag: tag, Text: "Empty user name or password."})
			return nil, o, err
		}
		return &wire.Creds{User: cmd.Args[0], Pass: cmd.Args[1]}, "", nil
	}
	if cmd.Args[0] != "PLAIN" {
		if err := d.c.Write([]byte(tag + " NO [CANNOT] Unsupported authentication mechanism.\r\n")); err != nil {
			o, err := readEnd(err)
			return nil, o, err
		}
		return nil, "", nil
	}
	var resp string
	if len(cmd.Args) > 1 {
		resp = cmd.Args[1]
	} else {
		var err error
		switch resp, err = wire.SASLContinue(d.c); {
		case err == wire.ErrLineTooLong:
			o, err := d.bad(&ParseError{Tag: tag, Code: "TOOBIG", Text: "Response too long.", Fatal: true})
			return nil, o, err
		case err == wire.ErrSASLCancelled:
			o, err := d.bad(&ParseError{Tag: tag, Text: "Authentication cancelled."})
			return nil, o, err
		case err != nil:
			o, err := readEnd(err)
			return nil, o, err
		}
	}
	cr, err := wire.DecodePlain(resp)
	if err != nil {
		o, err := d.bad(&ParseError{Tag: tag, Text: "Invalid PLAIN response: " + err.Error() + "."})
		return nil, o, err
	}
	return cr, "", nil
}

// Refuse answers the failed login err (after the router's delay) and
// reports whether the session goes on: not after a failed write, nor
// after maxErrors failed logins.
func (d *Dialog) Refuse(err error) bool {
	var line string
	var r *route.Refusal
	var ue *wire.UnavailableError
	var re *wire.RefusedError
	switch {
	case errors.As(err, &r):
		code := r.Code
		if code == "" {
			code = "UNAVAILABLE"
		}
		line = d.tag + " NO [" + code + "] " + r.Text + "\r\n"
	case errors.As(err, &ue):
		line = d.tag + " " + unavailable
	case errors.As(err, &re):
		line = string(re.Line) + "\r\n"
	default:
		line = d.tag + " " + authFailed
	}
	if err := d.c.Write([]byte(line)); err != nil {
		return false
	}
	d.fails++
	if d.fails >= d.maxErrors {
		d.c.Write([]byte("* BYE Too many failed logins.\r\n"))
		return false
	}
	return true
}
