package router_test

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"switchboard/internal/testbed"
	"switchboard/route"
	"switchboard/router"
)

// holdingGate admits every login, and puts its user on hold while the
// login is on its way to the backend: the hold of a mailbox move that
// starts between a login's admission and its OK.
type holdingGate struct{ held atomic.Bool }

func (g *holdingGate) Admit(context.Context, *route.Login) error {
	g.held.Store(true)
	return nil
}
func (g *holdingGate) Done(*route.Login, route.Outcome) {}
func (g *holdingGate) Ended(*route.Login)               {}
func (g *holdingGate) Recheck(*route.Login) error {
	if g.held.Load() {
		return &route.Refusal{Code: "UNAVAILABLE", Text: "Held."}
	}
	return nil
}

// TestHoldDuringLogin checks that a login admitted before a hold but
// accepted by the backend after it is refused, not let through to the
// old backend.
func TestHoldDuringLogin(t *testing.T) {
	e := getEnv(t)
	src := testbed.AllocIP()
	srv := router.New(&router.Options{
		Mapper:        e.cache,
		Hosts:         e.hosts,
		TrustedNets:   []netip.Prefix{netip.MustParsePrefix(src + "/32")},
		AuthFailDelay: testFailDelay,
		Gate:          &holdingGate{},
		Logger:        slog.New(slog.NewTextHandler(e.logs, nil)),
	})
	defer srv.Close()
	a, err := srv.Listen(router.ListenerConfig{Protocol: route.IMAP, Addr: testbed.AllocIP() + ":0", TLS: router.TLSNone})
	if err != nil {
		t.Fatal(err)
	}
	alice := e.user(t, "alice@example.org")
	r := newRaw(t, dial(t, a.String(), src))
	r.line()
	r.send("a LOGIN " + alice.Mail + " " + alice.Password + "\r\n")
	if l := r.until("a "); !strings.HasPrefix(l, "a NO [UNAVAILABLE] Held.") {
		t.Fatalf("a login held on its way answered %q", l)
	}
	if n := len(srv.Sessions()); n != 0 {
		t.Errorf("%d sessions logged in after the hold", n)
	}
}
