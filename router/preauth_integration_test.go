package router_test

import (
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"switchboard/internal/testbed"
	"switchboard/route"
	"switchboard/router"
)

// TestLoginPhaseBounds checks the bounds of the login phase: sessions per
// source (the trusted webmail exempt), the absolute login deadline that
// NOOPs cannot push back, and a session that logs in leaving room.
func TestLoginPhaseBounds(t *testing.T) {
	e := getEnv(t)
	trusted := testbed.AllocIP()
	srv := router.New(&router.Options{
		Mapper:              e.cache,
		Hosts:               e.hosts,
		TrustedNets:         []netip.Prefix{netip.MustParsePrefix(trusted + "/32")},
		AuthFailDelay:       testFailDelay,
		MaxPreauthPerSource: 2,
		LoginDeadline:       time.Second,
		Logger:              slog.New(slog.NewTextHandler(e.logs, nil)),
	})
	defer srv.Close()
	a, err := srv.Listen(router.ListenerConfig{Protocol: route.IMAP, Addr: testbed.AllocIP() + ":0", TLS: router.TLSNone})
	if err != nil {
		t.Fatal(err)
	}
	addr := a.String()
	src := testbed.AllocIP()
	greet := func(from string) string {
		r := newRaw(t, dial(t, addr, from))
		return r.line()
	}
	r1 := newRaw(t, dial(t, addr, src))
	r1.line()
	r2 := newRaw(t, dial(t, addr, src))
	r2.line()
	if l := greet(src); !strings.HasPrefix(l, "* BYE [UNAVAILABLE] Too many connections") {
		t.Errorf("a third session from one source in the login phase: %q", l)
	}
	for i := range 3 {
		if l := greet(trusted); !strings.HasPrefix(l, "* OK") {
			t.Errorf("trusted session %d: %q", i, l)
		}
	}

	// NOOPs do not push the login deadline back.
	t0 := time.Now()
	var last string
	for time.Since(t0) < 3*time.Second {
		r1.send("n NOOP\r\n")
		last = r1.line()
		if !strings.HasPrefix(last, "n OK") {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if d := time.Since(t0); !strings.HasPrefix(last, "* BYE") || d > 2500*time.Millisecond {
		t.Errorf("a session kept busy with NOOP: %q after %v, want a BYE at the 1s login deadline", last, d)
	}

	// r1 is gone: its place is free again.
	within(2*time.Second, func() bool { return strings.HasPrefix(greet(src), "* OK") })
	if st := srv.Stats(); st.PreauthLimited == 0 {
		t.Errorf("PreauthLimited = 0 after a refusal")
	}
	_ = r2
}
