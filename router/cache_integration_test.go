package router_test

import (
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"switchboard/conncache"
	"switchboard/internal/testbed"
	"switchboard/route"
	"switchboard/router"
)

// cacheEnv is a server with one cached IMAP listener over the shared
// testbed, and its pool.
type cacheEnv struct {
	*env
	srv  *router.Server
	pool *conncache.Cache
	addr string // the cached listener
	src  string // the webmail's source address, trusted
}

func newCacheEnv(t *testing.T) *cacheEnv {
	t.Helper()
	e := getEnv(t)
	pool, err := conncache.New(&conncache.Options{Alive: router.ParkedAlive})
	if err != nil {
		t.Fatal(err)
	}
	src := testbed.AllocIP()
	srv := router.New(&router.Options{
		Hostname:      "mail.example.org",
		Mapper:        e.cache,
		Hosts:         e.hosts,
		TrustedNets:   []netip.Prefix{netip.MustParsePrefix(src + "/32")},
		AuthFailDelay: testFailDelay,
		Pool:          pool,
		Logger:        slog.New(slog.NewTextHandler(e.logs, nil)),
	})
	a, err := srv.Listen(router.ListenerConfig{Name: "webmail", Protocol: route.IMAP, Addr: testbed.AllocIP() + ":0", TLS: router.TLSNone, Cache: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close(); pool.Close() })
	return &cacheEnv{env: e, srv: srv, pool: pool, addr: a.String(), src: src}
}

// page does what one webmail page request does: log in, select INBOX,
// fetch the messages' envelopes, log out. It returns the capabilities
// seen after login and the subjects, joined by "|".
func (ce *cacheEnv) page(t *testing.T, mail, pass string) (caps imap.CapSet, subjects string) {
	t.Helper()
	c := imapclient.New(dial(t, ce.addr, ce.src), nil)
	defer c.Close()
	if err := c.Login(mail, pass).Wait(); err != nil {
		t.Fatalf("login %s: %v", mail, err)
	}
	caps = c.Caps()
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatalf("select: %v", err)
	}
	msgs, err := c.Fetch(imap.SeqSet{imap.SeqRange{Start: 1, Stop: 0}}, &imap.FetchOptions{Envelope: true}).Collect()
	if err != nil {
		t.Fatalf("fetch: %v", err)
	}
	var all []string
	for _, m := range msgs {
		if m.Envelope != nil {
			all = append(all, m.Envelope.Subject)
		}
	}
	subjects = strings.Join(all, "|")
	if err := c.Logout().Wait(); err != nil {
		t.Fatalf("logout: %v", err)
	}
	return caps, subjects
}

// TestCacheReusesLogin checks that repeated page requests of one user log
// in to the backend once, that the login answered from the cache carries
// the same post-login capabilities as a real one, and that every page
// sees the mailbox.
func TestCacheReusesLogin(t *testing.T) {
	ce := newCacheEnv(t)
	alice := ce.user(t, "alice@example.org")
	ce.tb.Backends["mx1"].Seed(alice.Mail, testbed.Message("x@example.org", alice.Mail, "cached page", 200))
	before := ce.loggedInOn(t, alice.Mail)
	first, _ := ce.page(t, alice.Mail, alice.Password)
	if !first.Has("IDLE") || first.Has("LOGINDISABLED") {
		t.Fatalf("capabilities after the first login are not the backend's post-login ones: %v", first)
	}
	const pages = 6
	for i := 1; i < pages; i++ {
		caps, subject := ce.page(t, alice.Mail, alice.Password)
		if fmt.Sprint(caps) != fmt.Sprint(first) {
			t.Errorf("page %d: capabilities %v, want the first login's %v", i, caps, first)
		}
		if subject == "" {
			t.Errorf("page %d: no message seen", i)
		}
	}
	after := ce.waitLogin(t, alice.Mail, "mx1", before)
	if n := after["mx1"] - before["mx1"]; n != 1 {
		t.Errorf("%d pages made %d backend logins, want 1", pages, n)
	}
	if !strings.Contains(ce.logs.String(), "cache=hit") {
		t.Errorf("no session logged with cache=hit")
	}
}

// TestCacheKeepsUsersApart checks that a parked connection is never
// handed to another user, nor to its own user with a wrong password.
func TestCacheKeepsUsersApart(t *testing.T) {
	ce := newCacheEnv(t)
	alice := ce.user(t, "alice@example.org")
	carol := ce.user(t, "carol@example.org") // on mx1 too: same backend address
	ce.tb.Backends["mx1"].Seed(alice.Mail, testbed.Message("x@example.org", alice.Mail, "for alice only", 100))
	ce.tb.Backends["mx1"].Seed(carol.Mail, testbed.Message("x@example.org", carol.Mail, "for carol only", 100))
	ce.page(t, alice.Mail, alice.Password) // parks alice's connection

	before := ce.loggedInOn(t, carol.Mail)
	_, subject := ce.page(t, carol.Mail, carol.Password)
	if !strings.Contains(subject, "for carol only") || strings.Contains(subject, "alice") {
		t.Errorf("carol saw %q", subject)
	}
	if after := ce.waitLogin(t, carol.Mail, "mx1", before); after["mx1"] == before["mx1"] {
		t.Errorf("carol was served without a backend login of her own")
	}

	c := imapclient.New(dial(t, ce.addr, ce.src), nil)
	defer c.Close()
	if err := c.Login(alice.Mail, "not-"+alice.Password).Wait(); err == nil {
		t.Fatal("a wrong password logged in from the cache")
	}
	if _, subject := ce.page(t, alice.Mail, alice.Password); !strings.Contains(subject, "for alice only") || strings.Contains(subject, "carol") {
		t.Errorf("alice saw %q", subject)
	}
}

// TestCacheRefusesDirtyConnections checks that a session that changed
// the connection's state (ENABLE) is not parked: the next login is a
// backend login.
func TestCacheRefusesDirtyConnections(t *testing.T) {
	ce := newCacheEnv(t)
	dave := ce.user(t, "dave@example.org")
	r := newRaw(t, dial(t, ce.addr, ce.src))
	r.line()
	r.send("a LOGIN " + dave.Mail + " " + dave.Password + "\r\n")
	r.until("a OK")
	r.send("b ENABLE CONDSTORE\r\nc LOGOUT\r\n")
	r.until("b OK")
	if l := r.until("c "); !strings.HasPrefix(l, "c OK") {
		t.Fatalf("LOGOUT answered %q", l)
	}
	if n := ce.pool.Len(); n != 0 {
		t.Fatalf("%d connections parked after ENABLE, want 0", n)
	}
	before := ce.loggedInOn(t, dave.Mail)
	ce.page(t, dave.Mail, dave.Password)
	if after := ce.waitLogin(t, dave.Mail, "mx2", before); after["mx2"] == before["mx2"] {
		t.Errorf("the login after ENABLE was served from the cache")
	}
	if n := ce.pool.Len(); n != 1 {
		t.Errorf("%d connections parked after a clean page, want 1", n)
	}
}

// TestCacheHitAnswer checks the answer to a login served from the cache:
// one tagged OK with the backend's CAPABILITY, also for AUTHENTICATE
// PLAIN with an initial response (Roundcube's way), and that the
// mailbox selected by the previous page is not selected any more.
func TestCacheHitAnswer(t *testing.T) {
	ce := newCacheEnv(t)
	bob := ce.user(t, "bob@example.org")
	ce.page(t, bob.Mail, bob.Password) // parks, after UNSELECT
	r := newRaw(t, dial(t, ce.addr, ce.src))
	r.line()
	start := time.Now()
	r.send("a AUTHENTICATE PLAIN " + b64("\x00"+bob.Mail+"\x00"+bob.Password) + "\r\n")
	l := r.line()
	took := time.Since(start)
	if !strings.HasPrefix(l, "a OK [CAPABILITY ") || !strings.Contains(l, "IDLE") {
		t.Fatalf("cache hit answered %q", l)
	}
	t.Logf("cache-hit login answered in %v", took)
	r.send("b FETCH 1 FLAGS\r\n")
	if l := r.until("b "); !strings.HasPrefix(l, "b NO") && !strings.HasPrefix(l, "b BAD") {
		t.Errorf("FETCH without a selected mailbox answered %q: the parked connection kept its mailbox", l)
	}
	r.send("c LOGOUT\r\n")
	r.until("c OK")
}

// TestCacheKick checks that a kick ends a relayed session at once with
// BYE [UNAVAILABLE], and that its backend connection is not parked.
func TestCacheKick(t *testing.T) {
	ce := newCacheEnv(t)
	bob := ce.user(t, "bob@example.org")
	r := newRaw(t, dial(t, ce.addr, ce.src))
	r.line()
	r.send("a LOGIN " + bob.Mail + " " + bob.Password + "\r\n")
	r.until("a OK")
	r.send("b SELECT INBOX\r\n")
	r.until("b OK")
	if n := ce.srv.Kick(bob.Mail, "Your mailbox has moved."); n != 1 {
		t.Fatalf("Kick closed %d sessions, want 1", n)
	}
	if l := r.line(); !strings.HasPrefix(l, "* BYE [UNAVAILABLE] Your mailbox has moved.") {
		t.Fatalf("kicked relay answered %q", l)
	}
	if n := ce.pool.Len(); n != 0 {
		t.Errorf("%d connections parked after a kick, want 0", n)
	}
}
