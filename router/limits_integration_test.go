package router_test

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"switchboard/gate"
	"switchboard/internal/testbed"
	"switchboard/route"
	"switchboard/router"
)

// limitsServer is a Switchboard in front of the shared testbed with a
// gate over a Local state, listening for plaintext IMAP; logins from src
// are allowed without TLS.
func limitsServer(t *testing.T, e *env, src string, failDelay time.Duration, opts *gate.Options) (addr string, local *gate.Local) {
	t.Helper()
	local = gate.NewLocal(time.Hour)
	opts.Logger = slog.New(slog.NewTextHandler(e.logs, nil))
	srv := router.New(&router.Options{
		Mapper:        e.cache,
		Hosts:         e.hosts,
		TrustedNets:   []netip.Prefix{netip.MustParsePrefix(src + "/32")},
		AuthFailDelay: failDelay,
		Gate:          gate.New(local, opts),
		Logger:        slog.New(slog.NewTextHandler(e.logs, nil)),
	})
	t.Cleanup(func() { srv.Close() })
	a, err := srv.Listen(router.ListenerConfig{Protocol: route.IMAP, Addr: testbed.AllocIP() + ":0", TLS: router.TLSNone})
	if err != nil {
		t.Fatal(err)
	}
	return a.String(), local
}

// mismatches counts the password mismatches for mail in every backend's
// log (Dovecot's auth_verbose).
func mismatches(t *testing.T, e *env, mail string) int {
	t.Helper()
	n := 0
	for _, d := range e.tb.Backends {
		log, err := d.Log()
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(log, "\n") {
			if strings.Contains(line, "("+mail+",") && strings.Contains(line, "Password mismatch") {
				n++
			}
		}
	}
	return n
}

// TestParallelWrongLogins sends 100 wrong LOGINs for one account from one
// address at once: with failures_before_refuse = 20, at most 20 reach
// the backend, the others are refused.
func TestParallelWrongLogins(t *testing.T) {
	e := getEnv(t)
	src := testbed.AllocIP()
	addr, _ := limitsServer(t, e, src, testFailDelay, &gate.Options{
		FailuresBeforeDelay:  5,
		FailuresBeforeRefuse: 20,
		FailureDelay:         10 * time.Millisecond,
		MaxFailureDelay:      2 * time.Second,
	})
	const mail = "carol@example.org"
	before := mismatches(t, e, mail)
	var wg sync.WaitGroup
	var mu sync.Mutex
	answers := map[string]int{}
	start := make(chan struct{})
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := newRaw(t, dial(t, addr, src))
			r.line()
			<-start
			r.send(fmt.Sprintf("a LOGIN %s wrong-%d\r\n", mail, i))
			l := r.until("a ")
			mu.Lock()
			answers[strings.SplitN(l, "]", 2)[0]+"]"]++
			mu.Unlock()
		}()
	}
	close(start)
	wg.Wait()
	var reached int
	for range 50 { // the log is written asynchronously
		if reached = mismatches(t, e, mail) - before; reached >= answers["a NO [AUTHENTICATIONFAILED]"] {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%d of 100 parallel wrong logins reached the backend; answers %v", reached, answers)
	if reached > 20 || reached == 0 {
		t.Errorf("%d wrong logins reached the backend, want at most 20 (and some)", reached)
	}
	if answers["a NO [AUTHENTICATIONFAILED]"]+answers["a NO [UNAVAILABLE]"] != 100 {
		t.Errorf("answers %v, want only AUTHENTICATIONFAILED and UNAVAILABLE", answers)
	}
}

// loginTime logs in as user from src and returns the tagged answer and
// how long it took.
func loginTime(t *testing.T, addr, src, user, pass string) (string, time.Duration) {
	t.Helper()
	r := newRaw(t, dial(t, addr, src))
	r.line()
	t0 := time.Now()
	r.send("a LOGIN " + user + " " + pass + "\r\n")
	l := r.until("a ")
	return l, time.Since(t0)
}

// TestNoTimingOracle checks, with penalties active, that an unknown
// name and a wrong password take the same time and get the same text,
// that a hold of a known account is not answered sooner, and that a
// good password is let through once the account's count from the
// source is cleared.
func TestNoTimingOracle(t *testing.T) {
	e := getEnv(t)
	src := testbed.AllocIP()
	// Above the up to 500 ms Dovecot 2.3 takes to answer a wrong
	// password even with auth_failure_delay = 0 (its auth process sends
	// failures on a 500 ms timer), as the 2 s default is.
	const failDelay = 700 * time.Millisecond
	addr, local := limitsServer(t, e, src, failDelay, &gate.Options{
		FailuresBeforeDelay:  2,
		FailuresBeforeRefuse: 50,
		FailureDelay:         400 * time.Millisecond,
		MaxFailureDelay:      time.Second,
	})
	dave := e.user(t, "dave@example.org")
	const unknown = "nobody-at-all@example.org"
	// Three failures each: the next attempt waits 800 ms first.
	for range 3 {
		loginTime(t, addr, src, dave.Mail, "wrong")
		loginTime(t, addr, src, unknown, "wrong")
	}
	wrongLine, wrong := loginTime(t, addr, src, "DAVE@example.org", "wrong")
	unknownLine, unk := loginTime(t, addr, src, unknown, "wrong")
	t.Logf("with 3 failures: wrong password %v, unknown user %v", wrong, unk)
	if wrongLine != unknownLine {
		t.Errorf("answers differ: %q and %q", wrongLine, unknownLine)
	}
	const least = 800*time.Millisecond + failDelay
	for _, d := range []time.Duration{wrong, unk} {
		if d < least {
			t.Errorf("answered after %v, before the penalty plus the fail delay (%v)", d, least)
		}
	}
	if diff := (wrong - unk).Abs(); diff > 250*time.Millisecond {
		t.Errorf("wrong password %v and unknown user %v differ by %v", wrong, unk, diff)
	}
	// Held by name (refused before the lookup) and by account (after).
	if err := local.Hold(dave.Mail, true, time.Minute); err != nil {
		t.Fatal(err)
	}
	heldLine, held := loginTime(t, addr, src, dave.Mail, dave.Password)
	t.Logf("held: %v %q", held, heldLine)
	if !strings.HasPrefix(heldLine, "a NO [UNAVAILABLE]") || held < least {
		t.Errorf("held login answered %q after %v, want [UNAVAILABLE] after at least %v", heldLine, held, least)
	}
	local.Hold(dave.Mail, false, 0)
	// A good password clears dave's count from here: the next login is
	// not delayed.
	if l, _ := loginTime(t, addr, src, dave.Mail, dave.Password); !strings.HasPrefix(l, "a OK") {
		t.Fatalf("good password: %q", l)
	}
	if l, d := loginTime(t, addr, src, dave.Mail, dave.Password); !strings.HasPrefix(l, "a OK") || d > 700*time.Millisecond {
		t.Errorf("after a success: %q after %v, want OK without the 800 ms delay", l, d)
	}
}

// TestAccountKeyedLimits checks that the session limit counts names
// differing in case as one account.
func TestAccountKeyedLimits(t *testing.T) {
	e := getEnv(t)
	src := testbed.AllocIP()
	addr, _ := limitsServer(t, e, src, testFailDelay, &gate.Options{IMAPSessions: 1})
	alice := e.user(t, "alice@example.org")
	r := newRaw(t, dial(t, addr, src))
	r.line()
	r.send("a LOGIN " + alice.Mail + " " + alice.Password + "\r\n")
	if l := r.until("a "); !strings.HasPrefix(l, "a OK") {
		t.Fatalf("first login: %q", l)
	}
	if l, _ := loginTime(t, addr, src, `"ALICE@Example.org"`, alice.Password); !strings.HasPrefix(l, "a NO [LIMIT]") {
		t.Errorf("second login under another case: %q, want [LIMIT]", l)
	}
}

// TestForwardedSource checks that the webmail's forwarded address is the
// source that counts: a client locked out behind the webmail does not
// lock out another one behind it.
func TestForwardedSource(t *testing.T) {
	e := getEnv(t)
	web := testbed.AllocIP()
	addr, _ := limitsServer(t, e, web, testFailDelay, &gate.Options{
		FailuresBeforeRefuse: 3,
		ExemptNetworks:       []netip.Prefix{netip.MustParsePrefix(web + "/32")},
	})
	bob := e.user(t, "bob@example.org")
	try := func(client, pass string) string {
		r := newRaw(t, dial(t, addr, web))
		r.line()
		r.send(`i ID ("x-originating-ip" "` + client + `")` + "\r\n")
		r.until("i ")
		r.send("a LOGIN " + bob.Mail + " " + pass + "\r\n")
		return r.until("a ")
	}
	for range 3 {
		try("203.0.113.7", "wrong")
	}
	if l := try("203.0.113.7", bob.Password); !strings.HasPrefix(l, "a NO [UNAVAILABLE]") {
		t.Errorf("locked-out client behind the webmail: %q", l)
	}
	if l := try("198.51.100.8", bob.Password); !strings.HasPrefix(l, "a OK") {
		t.Errorf("another client behind the webmail: %q", l)
	}
}

// TestGoneClientNotLoggedIn checks that a login whose client hangs up
// while it is delayed is not completed at the backend.
func TestGoneClientNotLoggedIn(t *testing.T) {
	e := getEnv(t)
	src := testbed.AllocIP()
	addr, _ := limitsServer(t, e, src, testFailDelay, &gate.Options{
		FailuresBeforeDelay:  1,
		FailuresBeforeRefuse: 10,
		FailureDelay:         time.Second,
	})
	carol := e.user(t, "carol@example.org")
	loginTime(t, addr, src, carol.Mail, "wrong")
	before := e.loggedInOn(t, carol.Mail)
	c := dial(t, addr, src)
	r := newRaw(t, c)
	r.line()
	r.send("a LOGIN " + carol.Mail + " " + carol.Password + "\r\n")
	time.Sleep(200 * time.Millisecond)
	c.(*net.TCPConn).CloseWrite()
	c.Close()
	time.Sleep(1500 * time.Millisecond)
	after := e.loggedInOn(t, carol.Mail)
	for host, n := range after {
		if n != before[host] {
			t.Errorf("a login whose client left was completed on %s (%d logins before, %d after)", host, before[host], n)
		}
	}
}
