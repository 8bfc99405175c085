package ldapmap

import (
	"fmt"
	"log/slog"
)

// redacted is what a Secret prints as, whatever the verb.
const redacted = "***"

// Secret holds a credential such as the LDAP bind password. It prints as
// "***" through fmt (every verb, including %#v), log/slog and encoders
// that use encoding.TextMarshaler, so a config dump or a log line with an
// Options value in it cannot leak the password. Convert it with string()
// only at the point of use.
type Secret string

// String returns "***".
func (Secret) String() string { return redacted }

// GoString returns "***".
func (Secret) GoString() string { return redacted }

// Format writes "***" for every verb.
func (Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// LogValue returns "***" so slog never sees the value.
func (Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalText returns "***", so JSON or TOML encoders never write the value.
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }
