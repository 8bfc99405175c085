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

// AccountKey returns the key under which an account's failures, holds
// and session counts are kept: its directory entry (dn, folded), so that
// every name of the account (case, surrounding spaces, aliases) counts as
// one. A name the map does not know (dn empty) is keyed by the name,
// trimmed and folded, marked so that it cannot pose as an entry: failed
// logins for unknown names are counted exactly like those for known ones.
func AccountKey(dn, user string) string {
	if dn != "" {
		return Fold(dn)
	}
	return unknownPrefix + Fold(strings.TrimSpace(user))
}

// unknownPrefix marks AccountKey's keys for names without an entry; a DN
// never starts with it.
const unknownPrefix = "?"

// Login describes a login attempt, as a gate judges it. The router passes
// the same Login to every Gate call of one attempt, and of the session it
// becomes.
type Login struct {
	User     string // as the client typed it
	Protocol string // IMAP or POP3
	Client   netip.AddrPort
	// Forwarded is the client address a peer sent before the login (IMAP
	// ID x-originating-ip), if any. A gate trusts it only from the
	// networks it exempts (a webmail).
	Forwarded netip.Addr
	// Source is the address the gate counts the attempt against: set by
	// the gate (Client's, or Forwarded from an exempt peer).
	Source netip.Addr
	// Account is the account key (AccountKey), set once the map has
	// answered; empty before.
	Account string
	// Reserved and Deadline are the gate's own records: what it holds
	// for the attempt (in-flight slots) until Done, and when all its
	// waiting for the attempt must end. Callers leave them alone.
	Reserved uint8
	Deadline time.Time
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
