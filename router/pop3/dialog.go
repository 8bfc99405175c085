package pop3

import (
	"errors"
	"strings"

	"switchboard/route"
	"switchboard/router/internal/wire"
)

// Lines Switchboard answers before login (RFC 3206 response codes).
const (
	authFailed  = "-ERR [AUTH] Authentication failed.\r\n"
	unavailable = "-ERR [SYS/TEMP] Mail service temporarily unavailable, please try again later.\r\n"
	privacy     = "-ERR [AUTH] Plaintext authentication disallowed on non-secure connections.\r\n"
)

// Dialog is the client side of a POP3 session in the AUTHORIZATION
// state: greeting, CAPA, STLS, USER/PASS, AUTH PLAIN, QUIT. The router
// drives it as it does the IMAP one.
type Dialog struct {
	c         wire.Client
	hostname  string
	maxErrors int
	nerrors   int
	fails     int
	user      string // from USER, until PASS
}

// NewDialog returns the dialog of client c.
func NewDialog(c wire.Client, hostname string, maxErrors int) *Dialog {
	return &Dialog{c: c, hostname: hostname, maxErrors: maxErrors}
}

// caps is the CAPA answer before login (RFC 2449).
func (d *Dialog) caps() string {
	var b strings.Builder
	b.WriteString("+OK Capability list follows\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\n")
	if d.c.PlaintextAllowed() {
		b.WriteString("USER\r\nSASL PLAIN\r\n")
	}
	if d.c.CanStartTLS() {
		b.WriteString("STLS\r\n")
	}
	b.WriteString(".\r\n")
	return b.String()
}

// Greet sends the greeting.
func (d *Dialog) Greet() error { return d.c.Write([]byte("+OK " + d.hostname + " ready.\r\n")) }

// Next answers the client's commands until it gives credentials (cr is
// set) or the session is over: o says how it ended, err is for the log.
func (d *Dialog) Next() (cr *wire.Creds, o route.Outcome, err error) {
	for {
		if err := d.c.ReadDeadline(); err != nil {
			o, err := wire.ReadOutcome(err)
			return nil, o, err
		}
		cmd, err := ReadCommand(d.c.Reader())
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				o, err := d.readFailed(err)
				return nil, o, err
			}
			if o, err := d.bad(pe.Text, pe.Fatal); o != "" {
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
	var err error
	switch cmd.Name {
	case "CAPA":
		err = d.c.Write([]byte(d.caps()))
	case "QUIT":
		d.c.Write([]byte("+OK Logging out.\r\n"))
		return nil, route.OutcomeClientQuit, nil
	case "NOOP":
		// Not valid in the AUTHORIZATION state (RFC 1939 section 5).
		o, err := d.bad("NOOP not allowed before login.", false)
		return nil, o, err
	case "STLS":
		if !d.c.CanStartTLS() {
			o, err := d.bad("STLS not available.", false)
			return nil, o, err
		}
		if err := d.c.Write([]byte("+OK Begin TLS negotiation now.\r\n")); err != nil {
			o, err := wire.ReadOutcome(err)
			return nil, o, err
		}
		if err := d.c.StartTLS(); err != nil {
			return nil, route.OutcomeTLSFailed, err
		}
		d.user = ""
	case "USER":
		if !d.c.PlaintextAllowed() {
			err = d.c.Write([]byte(privacy))
			break
		}
		d.user = cmd.Args[0]
		err = d.c.Write([]byte("+OK\r\n"))
	case "PASS":
		if !d.c.PlaintextAllowed() {
			err = d.c.Write([]byte(privacy))
			break
		}
		if d.user == "" {
			o, err := d.bad("USER first.", false)
			return nil, o, err
		}
		cr := &wire.Creds{User: d.user, Pass: cmd.Args[0]}
		d.user = ""
		return cr, "", nil
	case "AUTH":
		return d.auth(cmd)
	default:
		o, err := d.bad("Unknown command or not allowed before login.", false)
		return nil, o, err
	}
	if err != nil {
		o, err := wire.ReadOutcome(err)
		return nil, o, err
	}
	return nil, "", nil
}

// readFailed ends the dialog after a failed read, as the IMAP one does.
func (d *Dialog) readFailed(err error) (route.Outcome, error) {
	if reason := d.c.KickReason(); reason != "" {
		d.c.Write([]byte("-ERR [SYS/TEMP] " + reason + "\r\n"))
		return route.OutcomeKicked, nil
	}
	o, err := wire.ReadOutcome(err)
	if o == route.OutcomeTimeout {
		d.c.Write([]byte("-ERR Disconnected for inactivity.\r\n"))
	}
	return o, err
}

// bad answers a bad command. It returns an outcome when the session is
// over.
func (d *Dialog) bad(text string, fatal bool) (route.Outcome, error) {
	if fatal {
		d.c.Write([]byte("-ERR " + text + "\r\n"))
		return route.OutcomeProtocolError, errors.New(text)
	}
	d.nerrors++
	if d.nerrors >= d.maxErrors {
		d.c.Write([]byte("-ERR " + text + " Too many invalid commands.\r\n"))
		return route.OutcomeProtocolError, errors.New("too many invalid commands")
	}
	if err := d.c.Write([]byte("-ERR " + text + "\r\n")); err != nil {
		return wire.ReadOutcome(err)
	}
	return "", nil
}

// auth runs AUTH (RFC 5034).
func (d *Dialog) auth(cmd *Command) (*wire.Creds, route.Outcome, error) {
	if len(cmd.Args) == 0 {
		list := "+OK\r\n.\r\n"
		if d.c.PlaintextAllowed() {
			list = "+OK\r\nPLAIN\r\n.\r\n"
		}
		if err := d.c.Write([]byte(list)); err != nil {
			o, err := wire.ReadOutcome(err)
			return nil, o, err
		}
		return nil, "", nil
	}
	if !d.c.PlaintextAllowed() {
		if err := d.c.Write([]byte(privacy)); err != nil {
			o, err := wire.ReadOutcome(err)
			return nil, o, err
		}
		return nil, "", nil
	}
	if cmd.Args[0] != "PLAIN" {
		o, err := d.bad("Unsupported authentication mechanism.", false)
		return nil, o, err
	}
	var resp string
	if len(cmd.Args) > 1 {
		resp = cmd.Args[1]
	} else {
		var err error
		switch resp, err = wire.SASLContinue(d.c); {
		case err == wire.ErrLineTooLong:
			o, err := d.bad("Response too long.", true)
			return nil, o, err
		case err == wire.ErrSASLCancelled:
			o, err := d.bad("Authentication cancelled.", false)
			return nil, o, err
		case err != nil:
			o, err := wire.ReadOutcome(err)
			return nil, o, err
		}
	}
	cr, err := wire.DecodePlain(resp)
	if err != nil {
		o, err := d.bad("Invalid PLAIN response: "+err.Error()+".", false)
		return nil, o, err
	}
	return cr, "", nil
}

// Refuse answers the failed login err (after the router's delay) and
// reports whether the session goes on.
func (d *Dialog) Refuse(err error) bool {
	var line string
	var r *route.Refusal
	var ue *wire.UnavailableError
	var re *wire.RefusedError
	switch {
	case errors.As(err, &r):
		code := "SYS/TEMP"
		if r.Code == "INUSE" || r.Code == "LIMIT" {
			code = "IN-USE"
		}
		line = "-ERR [" + code + "] " + r.Text + "\r\n"
	case errors.As(err, &ue):
		line = unavailable
	case errors.As(err, &re):
		line = string(re.Line) + "\r\n"
	default:
		line = authFailed
	}
	if err := d.c.Write([]byte(line)); err != nil {
		return false
	}
	d.fails++
	if d.fails >= d.maxErrors {
		d.c.Write([]byte("-ERR Too many failed logins.\r\n"))
		return false
	}
	return true
}
