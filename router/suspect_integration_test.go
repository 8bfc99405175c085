package router_test

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"switchboard/internal/testbed"
	"switchboard/route"
	"switchboard/router"
)

// hangingBackend accepts connections and, until greet is set, never
// greets (a hung Dovecot); once it is, it relays them to real.
type hangingBackend struct {
	ln    net.Listener
	real  string
	greet atomic.Bool
}

func (h *hangingBackend) serve() {
	for {
		c, err := h.ln.Accept()
		if err != nil {
			return
		}
		if !h.greet.Load() {
			go func() { time.Sleep(30 * time.Second); c.Close() }()
			continue
		}
		go relayTo(c, h.real)
	}
}

func relayTo(c net.Conn, addr string) {
	defer c.Close()
	b, err := net.Dial("tcp", addr)
	if err != nil {
		return
	}
	defer b.Close()
	go io.Copy(b, c)
	io.Copy(c, b)
}

// TestHungBackendFailsFast checks that once a backend accepted TCP but
// did not greet within the login timeout, the next logins for it are
// answered [UNAVAILABLE] at once instead of waiting that long again, and
// that it is used again soon after it greets.
func TestHungBackendFailsFast(t *testing.T) {
	e := getEnv(t)
	ln, err := net.Listen("tcp", testbed.AllocIP()+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	h := &hangingBackend{ln: ln, real: e.tb.Backends["mx1"].IMAPAddr}
	go h.serve()
	src := testbed.AllocIP()
	const loginTimeout = time.Second
	srv := router.New(&router.Options{
		Mapper:        e.cache,
		Hosts:         &route.HostMap{Hosts: map[string]route.HostAddrs{"mx1": {IMAP: ln.Addr().String()}}},
		TrustedNets:   []netip.Prefix{netip.MustParsePrefix(src + "/32")},
		AuthFailDelay: testFailDelay,
		LoginTimeout:  loginTimeout,
		PreDial:       -1,
		Logger:        slog.New(slog.NewTextHandler(e.logs, nil)),
	})
	defer srv.Close()
	a, err := srv.Listen(router.ListenerConfig{Protocol: route.IMAP, Addr: testbed.AllocIP() + ":0", TLS: router.TLSNone})
	if err != nil {
		t.Fatal(err)
	}
	alice := e.user(t, "alice@example.org")
	login := func() (string, time.Duration) {
		r := newRaw(t, dial(t, a.String(), src))
		r.line()
		t0 := time.Now()
		r.send("a LOGIN " + alice.Mail + " " + alice.Password + "\r\n")
		return r.until("a "), time.Since(t0)
	}
	if l, d := login(); !strings.HasPrefix(l, "a NO [UNAVAILABLE]") || d < loginTimeout {
		t.Fatalf("first login to a hung backend: %q after %v, want [UNAVAILABLE] after the login timeout", l, d)
	}
	l, d := login()
	if !strings.HasPrefix(l, "a NO [UNAVAILABLE]") || d > 300*time.Millisecond {
		t.Fatalf("second login to the suspect backend: %q after %v, want [UNAVAILABLE] at once", l, d)
	}
	t.Logf("login to a suspect backend answered in %v", d.Round(time.Microsecond))

	h.greet.Store(true)
	var ok bool
	within(5*time.Second, func() bool {
		l, _ := login()
		ok = strings.HasPrefix(l, "a OK")
		return ok
	})
	if !ok {
		t.Fatal("the backend greets again, but logins are still refused")
	}
}
