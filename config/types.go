package config

import (
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
