package route

import (
	"net/netip"
	"strings"
	"time"
)

// Fold returns the form of a login name under which per-user state is
// kept: cached routes, live sessions, holds, counts. Every package folds
// with this one function, at the edge where a name comes in.
func Fold(user string) string { return strings.ToLower(user) }

// Login describes a login attempt, as a gate judges it.
type Login struct {
	User     string // as the client typed it
	Protocol string // IMAP or POP3
	Client   netip.AddrPort
}

// Outcome is how a login or a session ended, as logged and counted.
type Outcome string

const (
	OutcomeOK            Outcome = "ok"          // logged in and relayed until either side was done
	OutcomeAuthFailed    Outcome = "auth_failed" // wrong password or unknown user
	OutcomeUnavailable   Outcome = "unavailable" // map or backend unreachable
	OutcomeRefused       Outcome = "refused"     // held or limited by the gate, or refused by the backend for another reason than the credentials
	OutcomeClientQuit    Outcome = "client_quit" // LOGOUT/QUIT or hang-up before login
	OutcomeTimeout       Outcome = "timeout"     // idle before login
	OutcomeProtocolError Outcome = "protocol_error"
	OutcomeTLSFailed     Outcome = "tls_failed"
	OutcomeProxyRefused  Outcome = "proxy_refused" // PROXY header missing, bad, or from an untrusted peer
	OutcomeKicked        Outcome = "kicked"
	OutcomeShutdown      Outcome = "shutdown" // closed by a drain
)

// Refusal is an answer a gate gives a login instead of letting it through.
type Refusal struct {
	// Code is an RFC 5530 response code (UNAVAILABLE, LIMIT, …); POP3
	// clients get SYS/TEMP or IN-USE accordingly.
	Code string
	Text string
	// Delay, if set, is waited before answering.
	Delay time.Duration
}

func (r *Refusal) Error() string { return "refused: " + r.Code + " " + r.Text }
