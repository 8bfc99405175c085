package wire

import (
	"bufio"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"switchboard/route"
)

// Creds are what a client logged in with. They never reach a log.
type Creds struct {
	Authz string // SASL authorization identity, usually empty
	User  string // authentication identity
	Pass  string
}

// String keeps Creds out of logs even if printed by mistake.
func (c *Creds) String() string { return "creds{" + c.User + " ***}" }

// LogValue keeps Creds out of structured logs.
func (c *Creds) LogValue() slog.Value { return slog.StringValue(c.String()) }

// Mailbox is the login name the route is looked up for: the authorization
// identity when one is given (a master user logging in as someone), else
// the user.
func (c *Creds) Mailbox() string {
	if c.Authz != "" {
		return c.Authz
	}
	return c.User
}

// SASLPlain returns the RFC 4616 PLAIN message for c, base64-encoded.
func (c *Creds) SASLPlain() []byte {
	raw := make([]byte, 0, len(c.Authz)+len(c.User)+len(c.Pass)+2)
	raw = append(raw, c.Authz...)
	raw = append(raw, 0)
	raw = append(raw, c.User...)
	raw = append(raw, 0)
	raw = append(raw, c.Pass...)
	out := make([]byte, base64.StdEncoding.EncodedLen(len(raw)))
	base64.StdEncoding.Encode(out, raw)
	clear(raw)
	return out
}

// DecodePlain parses an RFC 4616 PLAIN response, base64-encoded ("=" is
// empty).
func DecodePlain(b64 string) (*Creds, error) {
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
	return &Creds{Authz: parts[0], User: parts[1], Pass: parts[2]}, nil
}

// Client is the client connection as a protocol's login dialog sees it;
// the router's session implements it.
type Client interface {
	// Write sends p under the pre-login write deadline.
	Write(p []byte) error
	// ReadDeadline arms the pre-login read deadline before a command.
	ReadDeadline() error
	// Reader is the client's reader; it changes with StartTLS.
	Reader() *bufio.Reader
	// StartTLS runs the server side of a TLS handshake.
	StartTLS() error
	// CanStartTLS reports whether STARTTLS/STLS may be offered now.
	CanStartTLS() bool
	// PlaintextAllowed reports whether a password may be sent now.
	PlaintextAllowed() bool
	// KickReason is non-empty once the session was kicked or drained.
	KickReason() string
}

// ErrSASLCancelled: the client answered a SASL challenge with "*".
var ErrSASLCancelled = errors.New("SASL exchange cancelled")

// SASLContinue sends an empty SASL challenge ("+ ", the same in IMAP and
// POP3) and reads the client's response line. It returns ErrLineTooLong
// for an over-long response and ErrSASLCancelled for "*".
func SASLContinue(c Client) (string, error) {
	if err := c.Write([]byte("+ \r\n")); err != nil {
		return "", err
	}
	if err := c.ReadDeadline(); err != nil {
		return "", err
	}
	line, err := ReadLine(c.Reader())
	if err != nil {
		return "", err
	}
	if string(line) == "*" {
		return "", ErrSASLCancelled
	}
	return string(line), nil
}

// ReadOutcome classifies a failed read before login, and returns the
// error worth logging (none for a timeout or a hang-up).
func ReadOutcome(err error) (route.Outcome, error) {
	switch {
	case isTimeout(err):
		return route.OutcomeTimeout, nil
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), errors.Is(err, io.ErrUnexpectedEOF):
		return route.OutcomeClientQuit, nil
	default:
		return route.OutcomeClientQuit, err
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Backend is a dialled, greeted backend connection as a protocol's
// backend login sees it.
type Backend struct {
	Conn     net.Conn      // for deadlines
	TCP      *net.TCPConn  // the TCP connection under Conn, if any
	W        io.Writer     // writes to Conn
	R        *bufio.Reader // reads from Conn
	Addr     string        // the address dialled, for logs and the capability cache
	Greeting []byte        // the backend's first line, without CRLF
	// Sent is called with TCP once the login is written: the router
	// asks the kernel to acknowledge the answers at once.
	Sent func(*net.TCPConn)
	// Timeout bounds the whole login.
	Timeout time.Duration
	// Caps remembers what backends announced.
	Caps CapCache
	// Log gets the login's warnings, with the session's attributes.
	Log *slog.Logger
}

// CapCache remembers each backend's capabilities by address.
type CapCache interface {
	Get(addr string) ([]string, bool)
	Put(addr string, caps []string)
}

// Forward is what a backend is told of the client, so its logs and
// limits see the real one (IMAP ID x-originating-ip, POP3 XCLIENT).
type Forward struct {
	Client  netip.AddrPort // the real client (PROXY header or peer)
	Local   netip.AddrPort // the address the client connected to
	Session string         // the session ID, for both logs
}

// Errors of a backend login, classified for the client's answer.
var (
	// ErrAuthFailed: the backend refused the credentials.
	ErrAuthFailed = errors.New("authentication failed")
)

// UnavailableError wraps why a login could not be served; the client
// gets [UNAVAILABLE] (IMAP) or [SYS/TEMP] (POP3) at once.
type UnavailableError struct{ Err error }

func (e *UnavailableError) Error() string { return e.Err.Error() }
func (e *UnavailableError) Unwrap() error { return e.Err }

// Unavailable returns an *UnavailableError.
func Unavailable(format string, args ...any) error {
	return &UnavailableError{fmt.Errorf(format, args...)}
}

// RefusedError is a refusal from the backend other than a failed
// authentication (in use, over quota…); its line is passed to the client.
type RefusedError struct{ Line []byte }

func (e *RefusedError) Error() string { return "backend refused: " + string(e.Line) }

// TransportError marks a failure talking to a backend before it judged
// the credentials: the next standby may be tried.
type TransportError struct{ Err error }

func (e *TransportError) Error() string { return e.Err.Error() }
func (e *TransportError) Unwrap() error { return e.Err }

// HasCap reports whether caps holds name, ignoring case.
func HasCap(caps []string, name string) bool {
	for _, c := range caps {
		if strings.EqualFold(c, name) {
			return true
		}
	}
	return false
}

// Truncate returns a short, printable form of a protocol line for logs.
func Truncate(line []byte) string {
	const max = 120
	if len(line) > max {
		line = line[:max]
	}
	return strings.ToValidUTF8(string(line), "?")
}

// RespCode returns the response code at the start of text (" [CODE …] …"),
// in upper case.
func RespCode(text []byte) string {
	for len(text) > 0 && text[0] == ' ' {
		text = text[1:]
	}
	if len(text) == 0 || text[0] != '[' {
		return ""
	}
	end := -1
	for i, c := range text {
		if c == ' ' || c == ']' {
			end = i
			break
		}
	}
	if end < 0 {
		return ""
	}
	return strings.ToUpper(string(text[1:end]))
}
