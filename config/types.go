package config

import (
	"fmt"
	"log/slog"
	"time"
)

// Duration is a length of time written as a string with a unit, as
// time.ParseDuration reads it: "30s", "31m", "1h30m". A bare number is an
// error: the unit is never guessed.
type Duration struct {
	time.Duration
	// text is what the file said and err why it does not parse; the
	// validation pass reports it, so that one bad duration does not hide
	// the other problems of the file.
	text string
	err  error
}

// D returns d as a Duration.
func D(d time.Duration) Duration { return Duration{Duration: d} }

// UnmarshalText parses a duration. It never fails: a bad value is kept and
// reported, with its line, by the validation pass.
func (d *Duration) UnmarshalText(b []byte) error {
	d.text = string(b)
	d.Duration, d.err = time.ParseDuration(d.text)
	return nil
}

// MarshalText writes d the way UnmarshalText reads it.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// redacted is what a Secret prints as, whatever the verb.
const redacted = "***"

// Secret is a credential read from a file named in the configuration
// (a "*_file" key). It prints as "***" through fmt (every verb, %#v
// included), log/slog and encoders that use encoding.TextMarshaler, so a
// dump of the configuration cannot leak it. Convert it with string() only
// where it is used.
type Secret string

// String returns "***".
func (Secret) String() string { return redacted }

// GoString returns "***".
func (Secret) GoString() string { return redacted }

// Format writes "***" for every verb.
func (Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// LogValue returns "***", so slog never sees the value.
func (Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalText returns "***", so JSON or TOML encoders never write the value.
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }
