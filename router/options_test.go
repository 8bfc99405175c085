package router

import (
	"testing"
	"time"
)

// TestOptionsDefaults checks that a zero Options gets the exported
// defaults, which the configuration fills in and documents: the accessor
// and the constant cannot drift apart.
func TestOptionsDefaults(t *testing.T) {
	var o Options
	tests := []struct {
		name      string
		got, want time.Duration
	}{
		{"PreauthTimeout", o.preauthTimeout(), DefaultPreauthTimeout},
		{"IdleTimeout", o.idleTimeout(), DefaultIdleTimeout},
		{"DialTimeout", o.dialTimeout(), DefaultDialTimeout},
		{"LoginTimeout", o.loginTimeout(), DefaultLoginTimeout},
		{"LookupTimeout", o.lookupTimeout(), DefaultLookupTimeout},
		{"AuthFailDelay", o.authFailDelay(), DefaultAuthFailDelay},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("zero %s: %v, want %v", tt.name, tt.got, tt.want)
		}
	}
	if got := o.maxErrors(); got != DefaultMaxPreauthErrors {
		t.Errorf("zero MaxPreauthErrors: %d, want %d", got, DefaultMaxPreauthErrors)
	}
	if DefaultIdleTimeout < 30*time.Minute {
		t.Errorf("DefaultIdleTimeout %v is below RFC 9051's 30 minutes", DefaultIdleTimeout)
	}
	o = Options{AuthFailDelay: -1, IdleTimeout: time.Hour}
	if o.authFailDelay() != 0 || o.idleTimeout() != time.Hour {
		t.Errorf("set values: AuthFailDelay -1 -> %v, IdleTimeout 1h -> %v; want 0, 1h", o.authFailDelay(), o.idleTimeout())
	}
}
