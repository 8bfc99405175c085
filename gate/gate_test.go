package gate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"switchboard/cluster"
	"switchboard/internal/testbed"
	"switchboard/route"
)

// fakeState is a State whose answers the test sets and whose writes it
// records.
type fakeState struct {
	mu        sync.Mutex
	held      map[string]bool
	sessions  map[string]int // "account/proto"
	pairFails map[string]int // "source account"
	srcFails  map[netip.Addr]int
	calls     []string
}

func newFake() *fakeState {
	return &fakeState{held: map[string]bool{}, sessions: map[string]int{}, pairFails: map[string]int{}, srcFails: map[netip.Addr]int{}}
}

func (f *fakeState) Held(key string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.held[key]
}

func (f *fakeState) Sessions(account, proto string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sessions[account+"/"+proto]
}

func (f *fakeState) SessionDelta(account, proto string, delta int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf("SessionDelta(%s,%s,%+d)", account, proto, delta))
	f.sessions[account+"/"+proto] += delta
}

func (f *fakeState) LoginFailed(src netip.Addr, account string, countSource bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf("LoginFailed(%s,%s,%v)", src, account, countSource))
	f.pairFails[src.String()+" "+account]++
	if countSource {
		f.srcFails[src]++
	}
}

func (f *fakeState) LoginSucceeded(src netip.Addr, account string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf("LoginSucceeded(%s,%s)", src, account))
	delete(f.pairFails, src.String()+" "+account)
}

func (f *fakeState) FailureScore(src netip.Addr, account string) (int, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pairFails[src.String()+" "+account], f.srcFails[src]
}

func (f *fakeState) takeCalls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

var (
	clientA = netip.MustParseAddrPort("192.0.2.1:50000")
	clientB = netip.MustParseAddrPort("192.0.2.2:50000")
	webmail = netip.MustParseAddrPort("127.0.0.1:40000")
)

const (
	aliceDN = "uid=alice,ou=people,dc=example,dc=org"
	bobDN   = "uid=bob,ou=people,dc=example,dc=org"
)

// login is an attempt by user of the account dn ("" for a name the map
// does not know) from client.
func login(user, dn, proto string, client netip.AddrPort) *route.Login {
	return &route.Login{User: user, Protocol: proto, Client: client, Account: route.AccountKey(dn, user)}
}

// attempt runs both checks, as the router does around its lookup; l's
// Account is kept aside during Admit, before which it is unknown.
func attempt(ctx context.Context, g *Gate, l *route.Login) error {
	acct := l.Account
	l.Account = ""
	if err := g.Admit(ctx, l); err != nil {
		l.Account = acct
		return err
	}
	l.Account = acct
	return g.AdmitAccount(ctx, l)
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// testOptions are small numbers, so tests run fast.
func testOptions() *Options {
	return &Options{
		IMAPSessions:               3,
		POP3Sessions:               1,
		FailuresBeforeDelay:        2,
		FailuresBeforeRefuse:       6,
		SourceFailuresBeforeDelay:  3,
		SourceFailuresBeforeRefuse: 5,
		FailureDelay:               20 * time.Millisecond,
		MaxFailureDelay:            60 * time.Millisecond,
		ExemptNetworks:             []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		Logger:                     quiet(),
	}
}

func refusal(t *testing.T, err error) *route.Refusal {
	t.Helper()
	var r *route.Refusal
	if !errors.As(err, &r) {
		t.Fatalf("err = %v, want a *route.Refusal", err)
	}
	return r
}

func TestAdmit(t *testing.T) {
	alice := route.AccountKey(aliceDN, "")
	pair := func(c netip.AddrPort) string { return c.Addr().String() + " " + alice }
	tests := []struct {
		name     string
		setup    func(f *fakeState)
		login    *route.Login
		wantCode string // "" admits
		wantText string
	}{
		{"nothing known", nil, login("alice@example.org", aliceDN, "imap", clientA), "", ""},
		{"name held", func(f *fakeState) { f.held["alice@example.org"] = true },
			login("alice@example.org", aliceDN, "imap", clientA), "UNAVAILABLE", TextHeld},
		{"name held, other case and spaces", func(f *fakeState) { f.held["alice@example.org"] = true },
			login(" Alice@Example.ORG ", aliceDN, "pop3", clientA), "UNAVAILABLE", TextHeld},
		{"account held, alias typed", func(f *fakeState) { f.held[alice] = true },
			login("a.smith@example.org", aliceDN, "imap", clientA), "UNAVAILABLE", TextHeld},
		{"someone else held", func(f *fakeState) { f.held[route.AccountKey(bobDN, "")] = true },
			login("alice@example.org", aliceDN, "imap", clientA), "", ""},
		{"imap below limit", func(f *fakeState) { f.sessions[alice+"/imap"] = 2 },
			login("alice@example.org", aliceDN, "imap", clientA), "", ""},
		{"imap at limit, alias typed", func(f *fakeState) { f.sessions[alice+"/imap"] = 3 },
			login("A.Smith@example.org", aliceDN, "imap", clientA), "LIMIT", TextLimit},
		{"pop3 limit is its own", func(f *fakeState) { f.sessions[alice+"/imap"] = 3 },
			login("alice@example.org", aliceDN, "pop3", clientA), "", ""},
		{"pop3 at limit", func(f *fakeState) { f.sessions[alice+"/pop3"] = 1 },
			login("alice@example.org", aliceDN, "pop3", clientA), "LIMIT", TextLimit},
		{"account failed from the source", func(f *fakeState) { f.pairFails[pair(clientA)] = 6 },
			login("alice@example.org", aliceDN, "imap", clientA), "UNAVAILABLE", TextFailures},
		{"account failed from another source", func(f *fakeState) { f.pairFails[pair(clientB)] = 6 },
			login("alice@example.org", aliceDN, "imap", clientA), "", ""},
		{"source failed for many accounts", func(f *fakeState) { f.srcFails[clientA.Addr()] = 5 },
			login("alice@example.org", aliceDN, "imap", clientA), "UNAVAILABLE", TextFailures},
		{"exempt source failed for many accounts", func(f *fakeState) { f.srcFails[webmail.Addr()] = 50 },
			login("alice@example.org", aliceDN, "imap", webmail), "", ""},
		{"hold wins over limit", func(f *fakeState) {
			f.held[alice] = true
			f.sessions[alice+"/imap"] = 9
		}, login("alice@example.org", aliceDN, "imap", clientA), "UNAVAILABLE", TextHeld},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake()
			if tt.setup != nil {
				tt.setup(f)
			}
			g := New(f, testOptions())
			err := attempt(context.Background(), g, tt.login)
			if tt.wantCode == "" {
				if err != nil {
					t.Fatalf("Admit = %v, want nil", err)
				}
				return
			}
			r := refusal(t, err)
			if r.Code != tt.wantCode || r.Text != tt.wantText {
				t.Errorf("refusal = %q %q, want %q %q", r.Code, r.Text, tt.wantCode, tt.wantText)
			}
		})
	}
}

// TestSource checks which address counts: the client's, or the one an
// exempt peer forwarded; IPv6 per /64.
func TestSource(t *testing.T) {
	fwd := netip.MustParseAddr("203.0.113.9")
	tests := []struct {
		name   string
		client netip.AddrPort
		fwd    netip.Addr
		want   netip.Addr
	}{
		{"direct", clientA, netip.Addr{}, clientA.Addr()},
		{"forwarded by the webmail", webmail, fwd, fwd},
		{"forwarded by anyone else: ignored", clientA, fwd, clientA.Addr()},
		{"webmail without forwarding", webmail, netip.Addr{}, webmail.Addr()},
	}
	g := New(newFake(), testOptions())
	for _, tt := range tests {
		l := &route.Login{User: "alice@example.org", Client: tt.client, Forwarded: tt.fwd}
		if err := g.Admit(context.Background(), l); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		g.Done(l, route.OutcomeRefused)
		if l.Source != tt.want {
			t.Errorf("%s: source %v, want %v", tt.name, l.Source, tt.want)
		}
	}
	// Failures from one /64 count together, from the next /64 not.
	opts := testOptions()
	opts.FailuresBeforeDelay = 0
	g = New(NewLocal(time.Hour), opts)
	ctx := context.Background()
	for i := range 6 {
		c := netip.AddrPortFrom(netip.MustParseAddr(fmt.Sprintf("2001:db8:0:1::%x", i+1)), 1)
		l := login("alice@example.org", aliceDN, "imap", c)
		if err := attempt(ctx, g, l); err != nil {
			t.Fatalf("attempt %d: %v", i+1, err)
		}
		g.Done(l, route.OutcomeAuthFailed)
	}
	other := login("alice@example.org", aliceDN, "imap", netip.MustParseAddrPort("[2001:db8:0:1:ffff::1]:1"))
	if r := refusal(t, attempt(ctx, g, other)); r.Text != TextFailures {
		t.Errorf("same /64: %+v", r)
	}
	g.Done(other, route.OutcomeRefused)
	next := login("alice@example.org", aliceDN, "imap", netip.MustParseAddrPort("[2001:db8:0:2::1]:1"))
	if err := attempt(ctx, g, next); err != nil {
		t.Errorf("next /64: %v", err)
	}
}

// TestDelayGrows checks the delay: none below the threshold, then
// FailureDelay doubling per further failure, capped.
func TestDelayGrows(t *testing.T) {
	g := New(newFake(), testOptions())
	for _, tt := range []struct {
		n    int
		want time.Duration
	}{
		{0, 0}, {1, 0}, {2, 20 * time.Millisecond}, {3, 40 * time.Millisecond}, {4, 60 * time.Millisecond}, {5, 60 * time.Millisecond}, {1000, 60 * time.Millisecond},
	} {
		if got := g.delay(tt.n, 2); got != tt.want {
			t.Errorf("delay(%d) = %v, want %v", tt.n, got, tt.want)
		}
	}
	// Defaults: 2s, then 4s, 8s, capped at 8s.
	g = New(newFake(), &Options{})
	if got := g.delay(5, 5); got != 2*time.Second {
		t.Errorf("default first delay = %v", got)
	}
	if got := g.delay(9, 5); got != DefaultMaxFailureDelay {
		t.Errorf("default capped delay = %v", got)
	}
}

// TestDelayWaitsThenAdmits checks that a login with a few failures waits,
// then goes on, and that the wait ends with the context.
func TestDelayWaitsThenAdmits(t *testing.T) {
	f := newFake()
	l := login("alice@example.org", aliceDN, "imap", clientA)
	f.pairFails[clientA.Addr().String()+" "+l.Account] = 3 // 40ms
	g := New(f, testOptions())
	t0 := time.Now()
	if err := attempt(context.Background(), g, l); err != nil {
		t.Fatalf("Admit = %v", err)
	}
	if el := time.Since(t0); el < 40*time.Millisecond {
		t.Errorf("admitted after %v, want at least 40ms", el)
	}
	if st := g.Stats(); st.Delayed != 1 {
		t.Errorf("stats = %+v", st)
	}
	g.Done(l, route.OutcomeRefused)

	opts := testOptions()
	opts.FailureDelay, opts.MaxFailureDelay = time.Hour, time.Hour
	g = New(f, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	t0 = time.Now()
	l = login("alice@example.org", aliceDN, "imap", clientA)
	err := attempt(ctx, g, l)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Admit = %v, want the context's error", err)
	}
	if el := time.Since(t0); el > time.Second {
		t.Errorf("a cancelled delay took %v", el)
	}
}

// TestRefusalsTakeAFailuresTime checks that a refusal of a known account
// carries the delay a wrong password would wait, so that it is not
// answered sooner.
func TestRefusalsTakeAFailuresTime(t *testing.T) {
	f := newFake()
	acct := route.AccountKey(aliceDN, "")
	f.pairFails[clientA.Addr().String()+" "+acct] = 3 // 40ms
	f.held[acct] = true
	g := New(f, testOptions())
	if r := refusal(t, attempt(context.Background(), g, login("alice@example.org", aliceDN, "imap", clientA))); r.Delay != 40*time.Millisecond {
		t.Errorf("hold of a penalised account: delay %v, want 40ms", r.Delay)
	}
	// Held by name, refused before the lookup: the name's account is
	// known from its failures.
	f.held["alice@example.org"] = true
	l := login("Alice@example.org", aliceDN, "imap", clientA)
	l.Source = clientA.Addr()
	g.Done(l, route.OutcomeAuthFailed) // the 4th: 60ms
	if r := refusal(t, g.Admit(context.Background(), login("alice@example.org", "", "imap", clientA))); r.Delay != 60*time.Millisecond {
		t.Errorf("hold by name of a penalised account: delay %v, want 60ms", r.Delay)
	}
}

// TestDone checks what each outcome records.
func TestDone(t *testing.T) {
	f := newFake()
	g := New(f, testOptions())
	acct := route.AccountKey(aliceDN, "")
	l := login("Alice@Example.org", aliceDN, "imap", clientA)
	l.Source = clientA.Addr()
	g.Done(l, route.OutcomeAuthFailed)
	g.Done(l, route.OutcomeRefused)
	g.Done(l, route.OutcomeUnavailable)
	g.Done(l, route.OutcomeOK)
	g.Ended(l)
	w := &route.Login{User: "x", Client: webmail, Source: webmail.Addr(), Protocol: "imap"}
	g.Done(w, route.OutcomeAuthFailed)
	want := []string{
		"LoginFailed(192.0.2.1," + acct + ",true)",
		"LoginSucceeded(192.0.2.1," + acct + ")",
		"SessionDelta(" + acct + ",imap,+1)",
		"SessionDelta(" + acct + ",imap,-1)",
		"LoginFailed(127.0.0.1,?x,false)",
	}
	if got := f.takeCalls(); !slices.Equal(got, want) {
		t.Errorf("calls = %q, want %q", got, want)
	}
}

// TestLimitCountsSessions runs logins through the gate until the limit
// refuses one, then ends a session and logs in again. Names of one
// account count as one.
func TestLimitCountsSessions(t *testing.T) {
	g := New(NewLocal(0), testOptions())
	ctx := context.Background()
	const dn = "uid=carol,ou=people,dc=example,dc=org"
	names := []string{"carol@example.org", "Carol@Example.org", " carol@example.org"}
	var ls []*route.Login
	for i, name := range names {
		l := login(name, dn, "imap", clientA)
		if err := attempt(ctx, g, l); err != nil {
			t.Fatalf("login %d: %v", i+1, err)
		}
		g.Done(l, route.OutcomeOK)
		ls = append(ls, l)
	}
	l := login("c.smith@example.org", dn, "imap", clientA)
	if r := refusal(t, attempt(ctx, g, l)); r.Code != "LIMIT" {
		t.Fatalf("4th login: %+v", r)
	}
	g.Done(l, route.OutcomeRefused)
	g.Ended(ls[0])
	if err := attempt(ctx, g, l); err != nil {
		t.Fatalf("after a session ended: %v", err)
	}
	if st := g.Stats(); st.Limited != 1 {
		t.Errorf("stats = %+v", st)
	}
}

// TestBruteForce runs failed logins through the gate and checks that it
// first delays, then refuses the account from that source only, that a
// refused attempt does not count, and that unknown names are counted the
// same way.
func TestBruteForce(t *testing.T) {
	for _, dn := range []string{aliceDN, ""} {
		opts := testOptions()
		opts.FailureDelay, opts.MaxFailureDelay = time.Millisecond, time.Millisecond
		opts.SourceFailuresBeforeRefuse = 0
		g := New(NewLocal(time.Hour), opts)
		ctx := context.Background()
		names := []string{"alice@example.org", "ALICE@example.org", "alice@example.org "}
		for i := range 6 {
			l := login(names[i%3], dn, "imap", clientA)
			if err := attempt(ctx, g, l); err != nil {
				t.Fatalf("dn %q: attempt %d: %v", dn, i+1, err)
			}
			g.Done(l, route.OutcomeAuthFailed)
		}
		l := login("Alice@Example.org", dn, "imap", clientA)
		r := refusal(t, attempt(ctx, g, l))
		if r.Code != "UNAVAILABLE" || r.Text != TextFailures || r.Delay <= 0 {
			t.Errorf("dn %q: refusal = %+v", dn, r)
		}
		g.Done(l, route.OutcomeRefused)
		for _, other := range []*route.Login{
			login("alice@example.org", dn, "imap", clientB),  // the account from elsewhere
			login("bob@example.org", bobDN, "imap", clientA), // another account from here
		} {
			if err := attempt(ctx, g, other); err != nil {
				t.Errorf("dn %q: %s from %v: %v", dn, other.User, other.Client, err)
			}
			g.Done(other, route.OutcomeRefused)
		}
		if st := g.Stats(); st.Refused != 1 || st.Delayed != 4 {
			t.Errorf("dn %q: stats = %+v, want 1 refused, 4 delayed (attempts 3 to 6)", dn, st)
		}
	}
}

// TestSpraying checks the per-source limit over distinct accounts, which
// an exempt network escapes and which its forwarded address meets.
func TestSpraying(t *testing.T) {
	opts := testOptions()
	opts.FailuresBeforeDelay, opts.FailureDelay, opts.MaxFailureDelay = 0, time.Millisecond, time.Millisecond
	g := New(NewLocal(time.Hour), opts)
	ctx := context.Background()
	fwd := netip.MustParseAddr("203.0.113.9")
	for _, c := range []struct {
		client netip.AddrPort
		fwd    netip.Addr
	}{{clientA, netip.Addr{}}, {webmail, netip.Addr{}}, {webmail, fwd}} {
		for i := range 5 {
			l := login(fmt.Sprintf("user%d@example.org", i), "", "imap", c.client)
			l.Forwarded = c.fwd
			if err := attempt(ctx, g, l); err != nil {
				t.Fatalf("%v/%v: attempt %d: %v", c.client, c.fwd, i+1, err)
			}
			g.Done(l, route.OutcomeAuthFailed)
			g.Done(l, route.OutcomeAuthFailed) // one account counts once
		}
	}
	try := func(client netip.AddrPort, fwd netip.Addr) error {
		l := login("alice@example.org", aliceDN, "imap", client)
		l.Forwarded = fwd
		defer g.Done(l, route.OutcomeRefused)
		return attempt(ctx, g, l)
	}
	if r := refusal(t, try(clientA, netip.Addr{})); r.Text != TextFailures {
		t.Errorf("sprayer: %+v", r)
	}
	if err := try(webmail, netip.Addr{}); err != nil {
		t.Errorf("webmail: %v", err)
	}
	if r := refusal(t, try(webmail, fwd)); r.Text != TextFailures {
		t.Errorf("sprayer behind the webmail: %+v", r)
	}
	if err := try(webmail, clientB.Addr()); err != nil {
		t.Errorf("someone else behind the webmail: %v", err)
	}
}

// TestSuccessClears checks that a good login clears its account's
// failures from its source, and only those.
func TestSuccessClears(t *testing.T) {
	opts := testOptions()
	g := New(NewLocal(time.Hour), opts)
	ctx := context.Background()
	for range 4 {
		for _, c := range []netip.AddrPort{clientA, clientB} {
			l := login("alice@example.org", aliceDN, "imap", c)
			if err := attempt(ctx, g, l); err != nil {
				t.Fatal(err)
			}
			g.Done(l, route.OutcomeAuthFailed)
		}
	}
	l := login("alice@example.org", aliceDN, "imap", clientA)
	attempt(ctx, g, l)
	g.Done(l, route.OutcomeOK)
	if pf, _ := g.state.FailureScore(clientA.Addr(), l.Account); pf != 0 {
		t.Errorf("after a success: %d failures", pf)
	}
	if pf, _ := g.state.FailureScore(clientB.Addr(), l.Account); pf != 4 {
		t.Errorf("another source's failures: %d, want 4", pf)
	}
}

// TestParallelAttempts starts 100 wrong logins of one account from one
// source at once: no more than FailuresBeforeRefuse reach the "backend",
// and no more than InFlightPerAccount at a time.
func TestParallelAttempts(t *testing.T) {
	opts := testOptions()
	opts.FailuresBeforeDelay, opts.FailuresBeforeRefuse = 0, 20
	opts.SourceFailuresBeforeRefuse = 0
	opts.InFlightPerAccount = 5
	opts.MaxFailureDelay = 10 * time.Second
	g := New(NewLocal(time.Hour), opts)
	var reached, inFlight, most atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := login("alice@example.org", aliceDN, "imap", clientA)
			<-start
			err := attempt(context.Background(), g, l)
			if err == nil {
				reached.Add(1)
				n := inFlight.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				time.Sleep(5 * time.Millisecond) // the backend's verdict
				inFlight.Add(-1)
				g.Done(l, route.OutcomeAuthFailed)
				return
			}
			g.Done(l, route.OutcomeRefused)
		}()
	}
	close(start)
	wg.Wait()
	if n := reached.Load(); n != 20 {
		t.Errorf("%d of 100 parallel attempts reached the backend, want 20", n)
	}
	if m := most.Load(); m > 5 {
		t.Errorf("%d attempts under way at once, want at most 5", m)
	}
	g.fl.mu.Lock()
	defer g.fl.mu.Unlock()
	if len(g.fl.source)+len(g.fl.account)+len(g.fl.pair) != 0 {
		t.Errorf("slots left taken: %v %v %v", g.fl.source, g.fl.account, g.fl.pair)
	}
}

// TestInFlightWait checks that a login over the in-flight cap waits for
// one to end, and is refused as busy if none does in time.
func TestInFlightWait(t *testing.T) {
	opts := testOptions()
	opts.InFlightPerSource = 1
	opts.MaxFailureDelay = 50 * time.Millisecond
	g := New(NewLocal(time.Hour), opts)
	ctx := context.Background()
	first := login("alice@example.org", aliceDN, "imap", clientA)
	if err := attempt(ctx, g, first); err != nil {
		t.Fatal(err)
	}
	second := login("bob@example.org", bobDN, "imap", clientA)
	if r := refusal(t, attempt(ctx, g, second)); r.Text != TextBusy {
		t.Errorf("over the cap: %+v", r)
	}
	g.Done(second, route.OutcomeRefused)
	time.AfterFunc(10*time.Millisecond, func() { g.Done(first, route.OutcomeOK) })
	if err := attempt(ctx, g, second); err != nil {
		t.Errorf("after the first ended: %v", err)
	}
	if err := attempt(ctx, g, login("carol@example.org", "", "imap", webmail)); err != nil {
		t.Errorf("exempt source: %v", err)
	}
}

// TestSharedAcrossNodes runs two gates over two real cluster nodes on
// loopback: failures recorded on one node refuse logins on the other, and
// sessions on one count against the limit on the other.
func TestSharedAcrossNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two cluster nodes on loopback; skipped with -short")
	}
	var nodes [2]*cluster.Cluster
	var addrs []string
	ips := [2]string{testbed.AllocIP(), testbed.AllocIP()}
	for i := range nodes {
		port, err := testbed.FreePort(ips[i])
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, net.JoinHostPort(ips[i], strconv.Itoa(port)))
	}
	for i := range nodes {
		host, port, _ := net.SplitHostPort(addrs[i])
		p, _ := strconv.Atoi(port)
		c, err := cluster.New(&cluster.Options{
			NodeName:      fmt.Sprintf("node%d", i+1),
			BindAddr:      host,
			BindPort:      p,
			Peers:         addrs,
			AllowInsecure: true,
			StateInterval: 50 * time.Millisecond,
			Logger:        quiet(),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Shutdown() })
		nodes[i] = c
	}
	waitFor(t, 10*time.Second, "both nodes alive", func() bool {
		return nodes[0].Stats().AliveMembers == 2 && nodes[1].Stats().AliveMembers == 2
	})

	opts := testOptions()
	opts.FailuresBeforeDelay = 0
	g1, g2 := New(nodes[0], opts), New(nodes[1], opts)
	ctx := context.Background()

	try := func(g *Gate, l *route.Login) error {
		defer g.Done(l, route.OutcomeRefused)
		return attempt(ctx, g, l)
	}
	// Failures on node 1, refusal on node 2: of the account from the
	// source, and of the source after 5 accounts.
	for range 6 {
		l := login("alice@example.org", aliceDN, "imap", clientA)
		l.Source = clientA.Addr()
		g1.Done(l, route.OutcomeAuthFailed)
	}
	waitFor(t, 5*time.Second, "node 2 refuses the account from the address", func() bool {
		return try(g2, login("Alice@example.org", aliceDN, "imap", clientA)) != nil
	})
	if err := try(g2, login("bob@example.org", bobDN, "imap", clientA)); err != nil {
		t.Errorf("another account from the address: %v", err)
	}
	for i := range 4 {
		l := login(fmt.Sprintf("guess%d@example.org", i), "", "imap", clientA)
		l.Source = clientA.Addr()
		g1.Done(l, route.OutcomeAuthFailed)
	}
	waitFor(t, 5*time.Second, "node 2 refuses the address", func() bool {
		return try(g2, login("bob@example.org", bobDN, "imap", clientA)) != nil
	})

	// Sessions on node 1 count against the limit on node 2.
	l := login("dave@example.org", "uid=dave", "pop3", clientB)
	g1.Done(l, route.OutcomeOK)
	waitFor(t, 5*time.Second, "node 2 sees the session", func() bool {
		return try(g2, login("dave@example.org", "uid=dave", "pop3", clientB)) != nil
	})
	if r := refusal(t, try(g2, login("dave@example.org", "uid=dave", "pop3", clientB))); r.Code != "LIMIT" {
		t.Errorf("refusal = %+v", r)
	}
	g1.Ended(l)
	waitFor(t, 5*time.Second, "node 2 sees the session end", func() bool {
		return try(g2, login("dave@example.org", "uid=dave", "pop3", clientB)) == nil
	})

	// A hold set on node 1 refuses on node 2.
	if err := nodes[0].Hold(route.Fold("Bob@example.org"), true, time.Minute); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "node 2 holds bob", func() bool {
		var r *route.Refusal
		return errors.As(try(g2, login("bob@EXAMPLE.org", bobDN, "imap", clientB)), &r) && r.Text == TextHeld
	})
}

func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var _ State = (*cluster.Cluster)(nil)

// TestRecheckRefusesHeld checks that Recheck refuses a login put on hold
// after it was admitted, by name in any case or by account, and lets
// others through.
func TestRecheckRefusesHeld(t *testing.T) {
	local := NewLocal(time.Minute)
	g := New(local, &Options{})
	l := login("Alice@Example.org", aliceDN, route.IMAP, clientA)
	if err := attempt(context.Background(), g, l); err != nil {
		t.Fatalf("Admit before the hold: %v", err)
	}
	if err := local.Hold("alice@example.org", true, time.Minute); err != nil {
		t.Fatal(err)
	}
	var r *route.Refusal
	if err := g.Recheck(l); !errors.As(err, &r) || r.Code != "UNAVAILABLE" {
		t.Fatalf("Recheck of a held user = %v, want an UNAVAILABLE refusal", err)
	}
	alias := login("a.smith@example.org", aliceDN, route.IMAP, clientA)
	if err := g.Recheck(alias); err != nil {
		t.Errorf("Recheck of an alias, account not held = %v", err)
	}
	local.Hold(alias.Account, true, time.Minute)
	if err := g.Recheck(alias); !errors.As(err, &r) {
		t.Errorf("Recheck of an alias of a held account = %v", err)
	}
	if err := g.Recheck(login("bob@example.org", bobDN, route.IMAP, clientA)); err != nil {
		t.Errorf("Recheck of another user = %v", err)
	}
}
