package cluster

import (
	"log/slog"
	"testing"
	"time"
)

// TestOptionsDefaults checks that zero Options and a zero checker interval
// get the exported defaults, which the configuration fills in and
// documents: the accessors and the constants cannot drift apart.
func TestOptionsDefaults(t *testing.T) {
	o := &Options{AllowInsecure: true}
	mc, err := o.memberlistConfig("n1", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	durations := []struct {
		name      string
		got, want time.Duration
	}{
		{"GossipInterval", mc.GossipInterval, DefaultGossipInterval},
		{"ProbeInterval", mc.ProbeInterval, DefaultProbeInterval},
		{"ProbeTimeout", mc.ProbeTimeout, DefaultProbeTimeout},
		{"PushPullInterval", mc.PushPullInterval, DefaultPushPullInterval},
		{"TCPTimeout", mc.TCPTimeout, DefaultTCPTimeout},
		{"StateInterval", o.stateInterval(), DefaultStateInterval},
		{"ReconnectInterval", o.reconnectInterval(), DefaultReconnectInterval},
		{"HealthTTL", o.healthTTL(), DefaultHealthTTL},
		{"FailureWindow", o.failureWindow(), DefaultFailureWindow},
	}
	for _, tt := range durations {
		if tt.got != tt.want {
			t.Errorf("zero %s: %v, want %v", tt.name, tt.got, tt.want)
		}
	}
	if mc.BindAddr != DefaultBindAddr || mc.BindPort != DefaultBindPort || mc.Label != DefaultLabel ||
		mc.SuspicionMult != DefaultSuspicionMult || mc.UDPBufferSize != DefaultUDPBufferSize || o.maxEntries() != DefaultMaxEntries {
		t.Errorf("zero Options: bind %s:%d, label %q, suspicion %d, udp %d, entries %d; want the Default constants",
			mc.BindAddr, mc.BindPort, mc.Label, mc.SuspicionMult, mc.UDPBufferSize, o.maxEntries())
	}
	ch := NewChecker(nil, nil, 0, 0, nil)
	if ch.interval != DefaultCheckInterval || ch.timeout != DefaultCheckTimeout {
		t.Errorf("zero checker: interval %v, timeout %v; want %v, %v", ch.interval, ch.timeout, DefaultCheckInterval, DefaultCheckTimeout)
	}
	if DefaultCheckInterval+DefaultCheckTimeout >= DefaultHealthTTL {
		t.Errorf("check interval plus timeout %v reaches the health TTL %v: reports would expire between probes",
			DefaultCheckInterval+DefaultCheckTimeout, DefaultHealthTTL)
	}
}
