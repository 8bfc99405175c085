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
	sessions  map[string]int // "user/proto"
	ipFails   map[netip.Addr]int
	userFails map[string]int
	calls     []string
}

func newFake() *fakeState {
	return &fakeState{held: map[string]bool{}, sessions: map[string]int{}, ipFails: map[netip.Addr]int{}, userFails: map[string]int{}}
}

func (f *fakeState) Held(user string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.held[user]
}

func (f *fakeState) Sessions(user, proto string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sessions[user+"/"+proto]
}

func (f *fakeState) SessionDelta(user, proto string, delta int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf("SessionDelta(%s,%s,%+d)", user, proto, delta))
	f.sessions[user+"/"+proto] += delta
}

func (f *fakeState) LoginFailed(ip netip.Addr, user string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf("LoginFailed(%s,%s)", ip, user))
	f.ipFails[ip]++
	f.userFails[user]++
}

func (f *fakeState) FailureScore(ip netip.Addr, user string) (int, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ipFails[ip], f.userFails[user]
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
)

func login(user, proto string, client netip.AddrPort) *route.Login {
	return &route.Login{User: user, Protocol: proto, Client: client}
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// testOptions are small numbers, so tests run fast.
func testOptions() *Options {
	return &Options{
		IMAPSessions:         3,
		POP3Sessions:         1,
		FailuresBeforeDelay:  2,
		FailuresBeforeRefuse: 6,
		FailureDelay:         20 * time.Millisecond,
		MaxFailureDelay:      60 * time.Millisecond,
		Logger:               quiet(),
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
	tests := []struct {
		name     string
		setup    func(f *fakeState)
		login    *route.Login
		wantCode string // "" admits
		wantText string
	}{
		{"nothing known", nil, login("alice@example.org", "imap", clientA), "", ""},
		{"held", func(f *fakeState) { f.held["alice@example.org"] = true },
			login("alice@example.org", "imap", clientA), "UNAVAILABLE", TextHeld},
		{"held, other case", func(f *fakeState) { f.held["alice@example.org"] = true },
			login("Alice@Example.ORG", "pop3", clientA), "UNAVAILABLE", TextHeld},
		{"someone else held", func(f *fakeState) { f.held["bob@example.org"] = true },
			login("alice@example.org", "imap", clientA), "", ""},
		{"imap below limit", func(f *fakeState) { f.sessions["alice@example.org/imap"] = 2 },
			login("alice@example.org", "imap", clientA), "", ""},
		{"imap at limit", func(f *fakeState) { f.sessions["alice@example.org/imap"] = 3 },
			login("alice@example.org", "imap", clientA), "LIMIT", TextLimit},
		{"pop3 limit is its own", func(f *fakeState) { f.sessions["alice@example.org/imap"] = 3 },
			login("alice@example.org", "pop3", clientA), "", ""},
		{"pop3 at limit", func(f *fakeState) { f.sessions["alice@example.org/pop3"] = 1 },
			login("alice@example.org", "pop3", clientA), "LIMIT", TextLimit},
		{"failures from the address", func(f *fakeState) { f.ipFails[clientA.Addr()] = 6 },
			login("alice@example.org", "imap", clientA), "UNAVAILABLE", TextFailures},
		{"failures for the user from elsewhere", func(f *fakeState) { f.userFails["alice@example.org"] = 7 },
			login("alice@example.org", "imap", clientB), "UNAVAILABLE", TextFailures},
		{"failures of another address", func(f *fakeState) { f.ipFails[clientB.Addr()] = 6 },
			login("alice@example.org", "imap", clientA), "", ""},
		{"hold wins over limit", func(f *fakeState) {
			f.held["alice@example.org"] = true
			f.sessions["alice@example.org/imap"] = 9
		}, login("alice@example.org", "imap", clientA), "UNAVAILABLE", TextHeld},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake()
			if tt.setup != nil {
				tt.setup(f)
			}
			g := New(f, testOptions())
			err := g.Admit(context.Background(), tt.login)
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

func TestUnlimited(t *testing.T) {
	f := newFake()
	f.sessions["alice@example.org/imap"] = 1000
	f.ipFails[clientA.Addr()] = 1000
	g := New(f, &Options{Logger: quiet()})
	if err := g.Admit(context.Background(), login("alice@example.org", "imap", clientA)); err != nil {
		t.Fatalf("zero options refused: %v", err)
	}
}

// TestDelayGrows checks the delay: none below FailuresBeforeDelay, then
// FailureDelay doubling per further failure, capped.
func TestDelayGrows(t *testing.T) {
	g := New(newFake(), testOptions())
	for _, tt := range []struct {
		n    int
		want time.Duration
	}{
		{0, 0}, {1, 0}, {2, 20 * time.Millisecond}, {3, 40 * time.Millisecond}, {4, 60 * time.Millisecond}, {5, 60 * time.Millisecond}, {1000, 60 * time.Millisecond},
	} {
		if got := g.delay(tt.n); got != tt.want {
			t.Errorf("delay(%d) = %v, want %v", tt.n, got, tt.want)
		}
	}
	// Defaults: 2s, then 4s, 8s, 16s, 30s.
	g = New(newFake(), &Options{FailuresBeforeDelay: 5})
	if got := g.delay(5); got != 2*time.Second {
		t.Errorf("default first delay = %v", got)
	}
	if got := g.delay(9); got != 30*time.Second {
		t.Errorf("default capped delay = %v", got)
	}
}

// TestDelayWaitsThenAdmits checks that a login with a few failures waits,
// then goes on, and that the wait ends with the context.
func TestDelayWaitsThenAdmits(t *testing.T) {
	f := newFake()
	f.userFails["alice@example.org"] = 3 // 40ms
	g := New(f, testOptions())
	t0 := time.Now()
	if err := g.Admit(context.Background(), login("alice@example.org", "imap", clientA)); err != nil {
		t.Fatalf("Admit = %v", err)
	}
	if el := time.Since(t0); el < 40*time.Millisecond {
		t.Errorf("admitted after %v, want at least 40ms", el)
	}
	if st := g.Stats(); st.Delayed != 1 {
		t.Errorf("stats = %+v", st)
	}

	opts := testOptions()
	opts.FailureDelay, opts.MaxFailureDelay = time.Hour, time.Hour
	g = New(f, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	t0 = time.Now()
	err := g.Admit(ctx, login("alice@example.org", "imap", clientA))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Admit = %v, want the context's error", err)
	}
	if el := time.Since(t0); el > time.Second {
		t.Errorf("a cancelled delay took %v", el)
	}
}

// TestDone checks what each outcome records.
func TestDone(t *testing.T) {
	f := newFake()
	g := New(f, testOptions())
	l := login("Alice@Example.org", "imap", clientA)
	g.Done(l, route.OutcomeAuthFailed)
	g.Done(l, route.OutcomeRefused)
	g.Done(l, route.OutcomeUnavailable)
	g.Done(l, route.OutcomeOK)
	g.Ended(l)
	want := []string{
		"LoginFailed(192.0.2.1,alice@example.org)",
		"SessionDelta(alice@example.org,imap,+1)",
		"SessionDelta(alice@example.org,imap,-1)",
	}
	if got := f.takeCalls(); !slices.Equal(got, want) {
		t.Errorf("calls = %q, want %q", got, want)
	}
}

// TestLimitCountsSessions runs logins through Admit and Done until the
// limit refuses one, then ends a session and logs in again.
func TestLimitCountsSessions(t *testing.T) {
	g := New(NewLocal(0), testOptions())
	ctx := context.Background()
	l := login("carol@example.org", "imap", clientA)
	for i := range 3 {
		if err := g.Admit(ctx, l); err != nil {
			t.Fatalf("login %d: %v", i+1, err)
		}
		g.Done(l, route.OutcomeOK)
	}
	if r := refusal(t, g.Admit(ctx, l)); r.Code != "LIMIT" {
		t.Fatalf("4th login: %+v", r)
	}
	g.Ended(l)
	if err := g.Admit(ctx, l); err != nil {
		t.Fatalf("after a session ended: %v", err)
	}
	if st := g.Stats(); st.Limited != 1 {
		t.Errorf("stats = %+v", st)
	}
}

// TestBruteForce runs failed logins through Done and checks that the gate
// first delays, then refuses, and that a refused attempt does not count.
func TestBruteForce(t *testing.T) {
	opts := testOptions()
	opts.FailureDelay, opts.MaxFailureDelay = time.Millisecond, time.Millisecond
	g := New(NewLocal(time.Hour), opts)
	ctx := context.Background()
	for i := range 6 {
		l := login(fmt.Sprintf("user%d@example.org", i), "imap", clientA)
		if err := g.Admit(ctx, l); err != nil {
			t.Fatalf("attempt %d: %v", i+1, err)
		}
		g.Done(l, route.OutcomeAuthFailed)
	}
	err := g.Admit(ctx, login("someone@example.org", "imap", clientA))
	if r := refusal(t, err); r.Code != "UNAVAILABLE" || r.Text != TextFailures || r.Delay <= 0 {
		t.Errorf("refusal = %+v", r)
	}
	g.Done(login("someone@example.org", "imap", clientA), route.OutcomeRefused)
	if err := g.Admit(ctx, login("someone@example.org", "imap", clientB)); err != nil {
		t.Errorf("another address: %v", err)
	}
	if st := g.Stats(); st.Refused != 1 || st.Delayed != 4 {
		t.Errorf("stats = %+v, want 1 refused, 4 delayed (attempts 3 to 6)", st)
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

	// Failures on node 1, refusal on node 2.
	for i := range 6 {
		g1.Done(login(fmt.Sprintf("guess%d@example.org", i), "imap", clientA), route.OutcomeAuthFailed)
	}
	waitFor(t, 5*time.Second, "node 2 refuses the address", func() bool {
		return g2.Admit(ctx, login("alice@example.org", "imap", clientA)) != nil
	})

	// Sessions on node 1 count against the limit on node 2.
	l := login("dave@example.org", "pop3", clientB)
	g1.Done(l, route.OutcomeOK)
	waitFor(t, 5*time.Second, "node 2 sees the session", func() bool {
		return g2.Admit(ctx, l) != nil
	})
	if r := refusal(t, g2.Admit(ctx, l)); r.Code != "LIMIT" {
		t.Errorf("refusal = %+v", r)
	}
	g1.Ended(l)
	waitFor(t, 5*time.Second, "node 2 sees the session end", func() bool {
		return g2.Admit(ctx, l) == nil
	})

	// A hold set on node 1 refuses on node 2.
	if err := nodes[0].Hold(route.Fold("Bob@example.org"), true, time.Minute); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "node 2 holds bob", func() bool {
		var r *route.Refusal
		return errors.As(g2.Admit(ctx, login("bob@EXAMPLE.org", "imap", clientB)), &r) && r.Text == TextHeld
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

// TestRecheckRefusesHeld checks that Recheck refuses a user put on hold
// after Admit, whatever the case of the name, and lets others through.
func TestRecheckRefusesHeld(t *testing.T) {
	local := NewLocal(time.Minute)
	g := New(local, &Options{})
	l := &route.Login{User: "Alice@Example.org", Protocol: route.IMAP}
	if err := g.Admit(context.Background(), l); err != nil {
		t.Fatalf("Admit before the hold: %v", err)
	}
	if err := local.Hold("alice@example.org", true, time.Minute); err != nil {
		t.Fatal(err)
	}
	var r *route.Refusal
	if err := g.Recheck(l); !errors.As(err, &r) || r.Code != "UNAVAILABLE" {
		t.Fatalf("Recheck of a held user = %v, want an UNAVAILABLE refusal", err)
	}
	if err := g.Recheck(&route.Login{User: "bob@example.org", Protocol: route.IMAP}); err != nil {
		t.Errorf("Recheck of another user = %v", err)
	}
}
