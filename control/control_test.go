package control

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"switchboard/cluster"
	"switchboard/gate"
)

// recorder records what Control does to the things it acts on. It is
// Sessions, Cache, route.Invalidator and Cluster at once.
type recorder struct {
	mu    sync.Mutex
	calls []string
	hosts map[string][]string // user -> hosts of their sessions
	err   error               // returned by the Cluster methods
}

func (r *recorder) add(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, fmt.Sprintf(format, args...))
}

func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.calls
	r.calls = nil
	return c
}

func (r *recorder) Kick(user, reason string) int {
	r.add("kick %s %q", user, reason)
	return len(r.hosts[user])
}
func (r *recorder) Hosts(user string) []string { return r.hosts[user] }
func (r *recorder) DropUser(account string) int {
	r.add("drop %s", account)
	return 1
}
func (r *recorder) Invalidate(user string) { r.add("invalidate %s", user) }

// clusterRec is a Cluster that records its calls.
type clusterRec struct{ r *recorder }

func (c clusterRec) Invalidate(user string, kick bool) error {
	c.r.add("cluster invalidate %s %v", user, kick)
	return c.r.err
}
func (c clusterRec) Hold(user string, held bool, ttl time.Duration) error {
	c.r.add("cluster hold %s %v %v", user, held, ttl)
	return c.r.err
}

var quiet = slog.New(slog.DiscardHandler)

const kick = `kick alice@example.org "Your mailbox has moved, please reconnect."`

func TestControlAlone(t *testing.T) {
	r := &recorder{}
	local := gate.NewLocal(0)
	c := New(&Options{Holds: local, Routes: r, Cache: r, Logger: quiet})

	// No router yet: nothing to kick, the rest is done.
	if err := c.Invalidate("alice@example.org", true); err != nil {
		t.Fatal(err)
	}
	if got, want := r.take(), []string{"invalidate alice@example.org", "drop alice@example.org", "drop alice@example.org"}; !slices.Equal(got, want) {
		t.Errorf("before SetSessions: %q, want %q", got, want)
	}

	c.SetSessions(r)
	tests := []struct {
		name string
		do   func() error
		want []string
		held bool
	}{
		{"invalidate", func() error { return c.Invalidate("alice@example.org", false) },
			[]string{"invalidate alice@example.org", "drop alice@example.org"}, false},
		{"invalidate and kick", func() error { return c.Invalidate("alice@example.org", true) },
			[]string{"invalidate alice@example.org", "drop alice@example.org", kick, "drop alice@example.org"}, false},
		{"hold", func() error { return c.Hold("alice@example.org", true, time.Minute) },
			[]string{"drop alice@example.org"}, true},
		{"release", func() error { return c.Hold("alice@example.org", false, 0) },
			nil, false},
	}
	for _, tt := range tests {
		if err := tt.do(); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got := r.take(); !slices.Equal(got, tt.want) {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
		if local.Held("alice@example.org") != tt.held {
			t.Errorf("%s: held = %v, want %v", tt.name, !tt.held, tt.held)
		}
	}

	if err := New(&Options{Logger: quiet}).Hold("alice@example.org", true, 0); !errors.Is(err, ErrNoHolds) {
		t.Errorf("Hold without a table = %v, want ErrNoHolds", err)
	}
}

// TestControlNilSafe: a Control with nothing to act on does nothing, and
// does not panic.
func TestControlNilSafe(t *testing.T) {
	c := New(&Options{Logger: quiet})
	c.Invalidate("alice@example.org", true)
	c.EntryChanged([]string{"alice@example.org"}, nil, true)
	h := c.Handler()
	h.Invalidate("alice@example.org")
	h.Kick("alice@example.org")
	h.Hold("alice@example.org", true)
}

func TestControlClustered(t *testing.T) {
	r := &recorder{}
	c := New(&Options{Routes: r, Cache: r, KickReason: "Bye now.", Logger: quiet})
	c.SetCluster(clusterRec{r})
	c.SetSessions(r)

	// Requests go to the cluster only; it calls the Handler, here too.
	r.err = fmt.Errorf("%w: n3: timeout", cluster.ErrNotDelivered)
	if err := c.Invalidate("alice@example.org", true); !errors.Is(err, cluster.ErrNotDelivered) {
		t.Errorf("Invalidate = %v, want the cluster's error", err)
	}
	if err := c.Hold("alice@example.org", true, time.Hour); !errors.Is(err, cluster.ErrNotDelivered) {
		t.Errorf("Hold = %v, want the cluster's error", err)
	}
	if got, want := r.take(), []string{"cluster invalidate alice@example.org true", "cluster hold alice@example.org true 1h0m0s"}; !slices.Equal(got, want) {
		t.Errorf("requests: %q, want %q", got, want)
	}

	var h cluster.Handler = c.Handler()
	h.Invalidate("bob@example.org")
	h.Kick("bob@example.org")
	h.Hold("bob@example.org", true)
	h.Hold("bob@example.org", false)
	want := []string{"invalidate bob@example.org", "drop bob@example.org", `kick bob@example.org "Bye now."`, "drop bob@example.org", "drop bob@example.org"}
	if got := r.take(); !slices.Equal(got, want) {
		t.Errorf("handler: %q, want %q", got, want)
	}
}

func TestEntryChanged(t *testing.T) {
	r := &recorder{hosts: map[string][]string{
		"alice@example.org": {"mx1", "mx1"},
		"al@example.org":    {"mx1"},
		"bob@example.org":   {"mx1", "mx2"},
		"carol@example.org": nil,
		"dave@example.org":  {"MX3"},
	}}
	c := New(&Options{Routes: r, Cache: r, Logger: quiet})
	c.SetSessions(r)
	tests := []struct {
		name    string
		logins  []string
		hosts   []string
		deleted bool
		invalid []string // users invalidated, in order
		kicked  []string // users kicked
	}{
		{"same host: routes dropped, sessions stay", []string{"alice@example.org", "Al@Example.org"}, []string{"mx1"}, false,
			[]string{"alice@example.org", "al@example.org"}, nil},
		{"primary moved", []string{"alice@example.org"}, []string{"mx2", "mx1"}, false,
			[]string{"alice@example.org"}, nil},
		{"moved away", []string{"alice@example.org", "al@example.org"}, []string{"mx2"}, false,
			[]string{"alice@example.org", "al@example.org"}, []string{"alice@example.org", "al@example.org"}},
		{"one session on a host dropped", []string{"bob@example.org"}, []string{"mx1"}, false,
			[]string{"bob@example.org"}, []string{"bob@example.org"}},
		{"no sessions", []string{"carol@example.org"}, []string{"mx9"}, false,
			[]string{"carol@example.org"}, nil},
		{"host names compare without case", []string{"dave@example.org"}, []string{"mx3"}, false,
			[]string{"dave@example.org"}, nil},
		{"no host left", []string{"dave@example.org"}, nil, false,
			[]string{"dave@example.org"}, []string{"dave@example.org"}},
		{"deleted", []string{"alice@example.org"}, []string{"mx1"}, true,
			[]string{"alice@example.org"}, []string{"alice@example.org"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.EntryChanged(tt.logins, tt.hosts, tt.deleted)
			var invalid, kicked []string
			for _, call := range r.take() {
				switch verb, rest, _ := strings.Cut(call, " "); verb {
				case "invalidate":
					invalid = append(invalid, rest)
				case "kick":
					user, _, _ := strings.Cut(rest, " ")
					kicked = append(kicked, user)
				}
			}
			if !slices.Equal(invalid, tt.invalid) || !slices.Equal(kicked, tt.kicked) {
				t.Errorf("invalidated %q, kicked %q; want %q, %q", invalid, kicked, tt.invalid, tt.kicked)
			}
		})
	}
}
