// Package secret holds credentials so that they cannot be printed by
// accident, and keeps the one rule for where a credential may travel in
// clear or be left out: to and on this machine only.
//
// String is the type of every credential read from a file named in the
// configuration (the LDAP bind password, the admin token, the gossip
// keys) and of the options that carry them (ldapmap.Options.BindPassword):
//
//	pw := secret.String(strings.TrimSpace(string(data)))
//	slog.Info("bind", "password", pw) // password=***
//	conn.Bind(dn, string(pw))         // the value, only where it is used
//
// It imports nothing of the project, so every package may use it.
package secret

import (
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
)

// redacted is what a String prints as, whatever the verb.
const redacted = "***"

// String is a credential. It prints as "***" through fmt (every verb, %#v
// included), log/slog and encoders that use encoding.TextMarshaler, so a
// configuration dump or a log line with an Options value in it cannot leak
// it. Convert it with string() only at the point of use.
type String string

// String returns "***".
func (String) String() string { return redacted }

// GoString returns "***".
func (String) GoString() string { return redacted }

// Format writes "***" for every verb.
func (String) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// LogValue returns "***", so slog never sees the value.
func (String) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalText returns "***", so JSON or TOML encoders never write the value.
func (String) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// Local reports whether host, an IP address (IPv6 with or without
// brackets) or a name without port, is this machine: a loopback address or
// "localhost" in any case. Only there may a credential travel in clear
// (plaintext LDAP) or be left out (the admin listener's token). Other
// names are not resolved: a name that happens to resolve to loopback is
// not local.
func Local(host string) bool {
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}
