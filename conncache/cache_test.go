package conncache

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// fakeConn records how often it was closed.
type fakeConn struct {
	name   string
	closed atomic.Int32
}

func (f *fakeConn) Close() error { f.closed.Add(1); return nil }

func conn(name string) *fakeConn { return &fakeConn{name: name} }

// clock is a settable Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// newCache returns a cache on a fake clock with its own registry; it is
// closed when the test ends.
func newCache(t testing.TB, opts Options) (*Cache, *clock, *prometheus.Registry) {
	t.Helper()
	clk := newClock()
	reg := prometheus.NewRegistry()
	if opts.Now == nil {
		opts.Now = clk.now
	}
	opts.Registerer = reg
	c, err := New(&opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c, clk, reg
}

// metric returns the value of the counter or gauge name whose labels
// include the given name-value pairs, or 0 if there is none.
func metric(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

func wantClosed(t testing.TB, f *fakeConn, n int32) {
	t.Helper()
	if got := f.closed.Load(); got != n {
		t.Fatalf("%s closed %d times, want %d", f.name, got, n)
	}
}

func TestKeySafety(t *testing.T) {
	const backend, pw = "10.0.0.1:143", "s3cret"
	tests := []struct {
		name                       string
		account, backend, password string
		otherCache                 bool
		hit                        bool
	}{
		{"same key", "alice", backend, pw, false, true},
		{"folded account", "ALICE", backend, pw, false, true},
		{"wrong password", "alice", backend, "s3cret ", false, false},
		{"password prefix", "alice", backend, "s3cre", false, false},
		{"empty password", "alice", backend, "", false, false},
		{"another account", "bob", backend, pw, false, false},
		{"account prefix", "alic", backend, pw, false, false},
		{"same password, another backend", "alice", "10.0.0.2:143", pw, false, false},
		{"field boundary moved", "alice1", "0.0.0.1:143", pw, false, false},
		{"key of another cache", "alice", backend, pw, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _, reg := newCache(t, Options{})
			parked := conn("parked")
			if !c.Put(c.Key("alice", backend, pw), parked, []byte("IMAP4rev1"), time.Time{}) {
				t.Fatal("Put refused")
			}
			kc := c
			if tt.otherCache {
				kc, _, _ = newCache(t, Options{})
			}
			got, caps, _, ok := c.Take(kc.Key(tt.account, tt.backend, tt.password))
			if ok != tt.hit {
				t.Fatalf("Take ok = %v, want %v", ok, tt.hit)
			}
			if tt.hit && (got != parked || string(caps) != "IMAP4rev1") {
				t.Fatalf("Take = %v %q, want the parked conn and its caps", got, caps)
			}
			if !tt.hit && c.Len() != 1 {
				t.Fatalf("after a miss Len = %d, want the conn still parked", c.Len())
			}
			wantClosed(t, parked, 0)
			hits, misses := metric(t, reg, "switchboard_conncache_hits_total"), metric(t, reg, "switchboard_conncache_misses_total")
			if tt.hit && (hits != 1 || misses != 0) || !tt.hit && (hits != 0 || misses != 1) {
				t.Fatalf("hits %v, misses %v", hits, misses)
			}
		})
	}
}

func TestKeyHidesMAC(t *testing.T) {
	c, _, _ := newCache(t, Options{})
	k := c.Key("Alice", "b:143", "hunter2")
	if k.Account() != "alice" || k.Backend() != "b:143" {
		t.Fatalf("Account, Backend = %q, %q", k.Account(), k.Backend())
	}
	var sb strings.Builder
	slog.New(slog.NewTextHandler(&sb, nil)).Info("x", "key", k)
	for _, s := range []string{k.String(), sb.String()} {
		if strings.Contains(s, "hunter2") || strings.Contains(s, fmt.Sprintf("%x", k.mac[:4])) || !strings.Contains(s, "alice") {
			t.Fatalf("%q: want the account and neither password nor MAC", s)
		}
	}
	if k2 := c.Key("alice", "b:143", "hunter2"); k2 != k {
		t.Fatal("the same inputs gave two keys")
	}
}

func TestTakeNewestFirst(t *testing.T) {
	c, clk, _ := newCache(t, Options{PerUser: 3})
	k := c.Key("alice", "b", "pw")
	c1, c2 := conn("c1"), conn("c2")
	c.Put(k, c1, nil, time.Time{})
	clk.advance(time.Second)
	c.Put(k, c2, nil, time.Time{})
	for _, want := range []*fakeConn{c2, c1} {
		if got, _, _, ok := c.Take(k); !ok || got != want {
			t.Fatalf("Take = %v, %v; want %s", got, ok, want.name)
		}
	}
	if _, _, _, ok := c.Take(k); ok || c.Len() != 0 {
		t.Fatalf("third Take ok = %v, Len %d", ok, c.Len())
	}
}

func TestTakeKeepsLoginTime(t *testing.T) {
	c, clk, _ := newCache(t, Options{})
	k := c.Key("alice", "b", "pw")
	login := clk.now().Add(-time.Minute)
	c.Put(k, conn("c"), nil, login)
	if _, _, got, _ := c.Take(k); !got.Equal(login) {
		t.Fatalf("loggedIn = %v, want %v", got, login)
	}
	c.Put(k, conn("d"), nil, time.Time{})
	if _, _, got, _ := c.Take(k); !got.Equal(clk.now()) {
		t.Fatalf("zero loggedIn came back as %v, want now %v", got, clk.now())
	}
}

func TestCaps(t *testing.T) {
	tests := []struct {
		name    string
		perUser int
		total   int
		puts    []string // "account/conn"
		closed  []string // conns closed by the cache
		reason  string
	}{
		{"per user evicts the account's oldest", 2, 10,
			[]string{"alice/a1", "bob/b1", "alice/a2", "alice/a3"}, []string{"a1"}, "per_user"},
		{"per user counts across passwords", 1, 10,
			[]string{"alice/a1", "ALICE/a2"}, []string{"a1"}, "per_user"},
		{"total evicts the least recently parked", 3, 3,
			[]string{"alice/a1", "bob/b1", "carol/c1", "dave/d1"}, []string{"a1"}, "lru"},
		{"total twice", 2, 2,
			[]string{"alice/a1", "bob/b1", "carol/c1", "dave/d1"}, []string{"a1", "b1"}, "lru"},
		{"within bounds", 2, 4,
			[]string{"alice/a1", "alice/a2", "bob/b1", "bob/b2"}, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, clk, reg := newCache(t, Options{PerUser: tt.perUser, Total: tt.total})
			conns := map[string]*fakeConn{}
			for i, p := range tt.puts {
				acct, name, _ := strings.Cut(p, "/")
				conns[name] = conn(name)
				clk.advance(time.Second)
				if !c.Put(c.Key(acct, "b", fmt.Sprint("pw", i)), conns[name], nil, time.Time{}) {
					t.Fatalf("Put %s refused", p)
				}
			}
			for name, f := range conns {
				want := int32(0)
				for _, cl := range tt.closed {
					if cl == name {
						want = 1
					}
				}
				wantClosed(t, f, want)
			}
			if want := len(tt.puts) - len(tt.closed); c.Len() != want {
				t.Fatalf("Len = %d, want %d", c.Len(), want)
			}
			if got := metric(t, reg, "switchboard_conncache_parked"); got != float64(c.Len()) {
				t.Fatalf("parked gauge = %v, want %d", got, c.Len())
			}
			if tt.reason != "" {
				got := metric(t, reg, "switchboard_conncache_evictions_total", "reason", tt.reason)
				if got != float64(len(tt.closed)) {
					t.Fatalf("evictions{%s} = %v, want %d", tt.reason, got, len(tt.closed))
				}
			}
		})
	}
}

func TestLRUFollowsReuse(t *testing.T) {
	c, clk, _ := newCache(t, Options{PerUser: 1, Total: 2})
	ka, kb, kc := c.Key("alice", "b", "p"), c.Key("bob", "b", "p"), c.Key("carol", "b", "p")
	a, b, cc := conn("a"), conn("b"), conn("c")
	c.Put(ka, a, nil, time.Time{})
	clk.advance(time.Second)
	c.Put(kb, b, nil, time.Time{})
	clk.advance(time.Second)
	// alice's connection is used again: bob's becomes the least recent.
	got, caps, li, _ := c.Take(ka)
	c.Put(ka, got, caps, li)
	clk.advance(time.Second)
	c.Put(kc, cc, nil, time.Time{})
	wantClosed(t, a, 0)
	wantClosed(t, b, 1)
	wantClosed(t, cc, 0)
}

func TestExpiry(t *testing.T) {
	const idle, age = 5 * time.Minute, 30 * time.Minute
	tests := []struct {
		name     string
		loginAgo time.Duration // before parking
		wait     time.Duration // after parking
		expired  bool
		reason   string
	}{
		{"fresh", 0, idle - time.Nanosecond, false, ""},
		{"idle", 0, idle, true, "idle"},
		{"old login, short park", age - time.Minute, time.Minute - time.Nanosecond, false, ""},
		{"aged", age - time.Minute, time.Minute, true, "age"},
		{"aged and idle counts age", age - time.Second, idle, true, "age"},
	}
	for _, tt := range tests {
		for _, via := range []string{"Take", "Expire"} {
			t.Run(tt.name+"/"+via, func(t *testing.T) {
				c, clk, reg := newCache(t, Options{IdleTimeout: idle, MaxAge: age})
				k := c.Key("alice", "b", "pw")
				f := conn("c")
				if !c.Put(k, f, nil, clk.now().Add(-tt.loginAgo)) {
					t.Fatal("Put refused")
				}
				clk.advance(tt.wait)
				var gone bool
				if via == "Take" {
					_, _, _, ok := c.Take(k)
					gone = !ok
				} else {
					gone = c.Expire() == 1
				}
				if gone != tt.expired {
					t.Fatalf("expired = %v, want %v", gone, tt.expired)
				}
				if tt.expired {
					wantClosed(t, f, 1)
					if got := metric(t, reg, "switchboard_conncache_evictions_total", "reason", tt.reason); got != 1 {
						t.Fatalf("evictions{%s} = %v, want 1", tt.reason, got)
					}
					if c.Len() != 0 {
						t.Fatalf("Len = %d after expiry", c.Len())
					}
				} else {
					wantClosed(t, f, 0)
				}
			})
		}
	}
}

func TestTakeSkipsExpiredForNext(t *testing.T) {
	c, clk, _ := newCache(t, Options{PerUser: 2, MaxAge: 10 * time.Minute})
	k := c.Key("alice", "b", "pw")
	young, old := conn("young"), conn("old")
	c.Put(k, young, nil, time.Time{})
	clk.advance(time.Second)
	// Parked later but logged in long ago: newest, and past MaxAge first.
	c.Put(k, old, nil, clk.now().Add(-10*time.Minute+2*time.Second))
	clk.advance(3 * time.Second)
	if got, _, _, ok := c.Take(k); !ok || got != young {
		t.Fatalf("Take = %v, %v; want young", got, ok)
	}
	wantClosed(t, old, 1)
	wantClosed(t, young, 0)
}

func TestPutRefused(t *testing.T) {
	c, clk, reg := newCache(t, Options{MaxAge: 10 * time.Minute})
	k := c.Key("alice", "b", "pw")
	f := conn("aged")
	if c.Put(k, f, nil, clk.now().Add(-10*time.Minute)) {
		t.Fatal("Put of a connection at MaxAge accepted")
	}
	c.Close()
	g := conn("late")
	if c.Put(k, g, nil, time.Time{}) {
		t.Fatal("Put after Close accepted")
	}
	z := conn("zero key")
	if c.Put(Key{}, z, nil, time.Time{}) {
		t.Fatal("Put under the zero Key accepted")
	}
	wantClosed(t, f, 0) // the caller closes what is refused
	wantClosed(t, g, 0)
	wantClosed(t, z, 0)
	for _, r := range []string{"age", "closed", "other"} {
		if got := metric(t, reg, "switchboard_conncache_park_refusals_total", "reason", r); got != 1 {
			t.Fatalf("refusals{%s} = %v, want 1", r, got)
		}
	}
}

func TestDrop(t *testing.T) {
	tests := []struct {
		name    string
		drop    func(c *Cache) int
		dropped []string
	}{
		{"user", func(c *Cache) int { return c.DropUser("Alice") }, []string{"a1", "a2", "a3"}},
		{"user unknown", func(c *Cache) int { return c.DropUser("nobody") }, nil},
		{"backend", func(c *Cache) int { return c.DropBackend("b1:143") }, []string{"a1", "a3", "b1"}},
		{"backend unknown", func(c *Cache) int { return c.DropBackend("b9:143") }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _, reg := newCache(t, Options{PerUser: 3})
			puts := []struct{ acct, backend, name string }{
				{"alice", "b1:143", "a1"}, {"alice", "b2:143", "a2"}, {"alice", "b1:143", "a3"},
				{"bob", "b1:143", "b1"}, {"bob", "b2:143", "b2"},
			}
			conns := map[string]*fakeConn{}
			for _, p := range puts {
				conns[p.name] = conn(p.name)
				c.Put(c.Key(p.acct, p.backend, "pw"), conns[p.name], nil, time.Time{})
			}
			if n := tt.drop(c); n != len(tt.dropped) {
				t.Fatalf("dropped %d, want %d", n, len(tt.dropped))
			}
			for name, f := range conns {
				want := int32(0)
				for _, d := range tt.dropped {
					if d == name {
						want = 1
					}
				}
				wantClosed(t, f, want)
			}
			if c.Len() != len(puts)-len(tt.dropped) {
				t.Fatalf("Len = %d", c.Len())
			}
			if got := metric(t, reg, "switchboard_conncache_evictions_total", "reason", "dropped"); got != float64(len(tt.dropped)) {
				t.Fatalf("evictions{dropped} = %v", got)
			}
			// What is left can still be taken.
			for _, p := range puts {
				if conns[p.name].closed.Load() == 0 {
					if _, _, _, ok := c.Take(c.Key(p.acct, p.backend, "pw")); !ok {
						t.Fatalf("%s not taken after the drop", p.name)
					}
				}
			}
		})
	}
}

func TestClose(t *testing.T) {
	c, _, reg := newCache(t, Options{})
	var all []*fakeConn
	for i := range 5 {
		f := conn(fmt.Sprint("c", i))
		all = append(all, f)
		c.Put(c.Key(fmt.Sprint("user", i), "b", "pw"), f, nil, time.Time{})
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for _, f := range all {
		wantClosed(t, f, 1)
	}
	if _, _, _, ok := c.Take(c.Key("user0", "b", "pw")); ok || c.Len() != 0 {
		t.Fatal("Take after Close hit")
	}
	if err := c.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	if got := metric(t, reg, "switchboard_conncache_evictions_total", "reason", "closed"); got != 5 {
		t.Fatalf("evictions{closed} = %v", got)
	}
	select {
	case <-c.janitorc:
	default:
		t.Fatal("janitor still running after Close")
	}
}

func TestDeadSkipped(t *testing.T) {
	var c *Cache
	dead := map[Conn]bool{}
	var calls atomic.Int32
	alive := func(conn Conn) bool {
		calls.Add(1)
		// Called without the lock: the cache can be used from here.
		_ = c.DropBackend("elsewhere")
		return !dead[conn]
	}
	c, clk, reg := newCache(t, Options{PerUser: 3, Alive: alive})
	k := c.Key("alice", "b", "pw")
	c1, c2, c3 := conn("c1"), conn("c2"), conn("c3")
	for _, f := range []*fakeConn{c1, c2, c3} {
		clk.advance(time.Second)
		c.Put(k, f, nil, time.Time{})
	}
	dead[c3], dead[c2] = true, true
	if got, _, _, ok := c.Take(k); !ok || got != c1 {
		t.Fatalf("Take = %v, %v; want c1", got, ok)
	}
	wantClosed(t, c3, 1)
	wantClosed(t, c2, 1)
	wantClosed(t, c1, 0)
	if calls.Load() != 3 {
		t.Fatalf("Alive called %d times, want 3", calls.Load())
	}
	if got := metric(t, reg, "switchboard_conncache_evictions_total", "reason", "dead"); got != 2 {
		t.Fatalf("evictions{dead} = %v", got)
	}
	// All dead: a miss.
	dead[c1] = true
	c.Put(k, c1, nil, time.Time{})
	if _, _, _, ok := c.Take(k); ok {
		t.Fatal("Take of a dead connection hit")
	}
	wantClosed(t, c1, 1)
}

func TestRefuseParkLabelsBounded(t *testing.T) {
	c, _, reg := newCache(t, Options{})
	c.RefusePark("enable")
	c.RefusePark("enable")
	c.RefusePark("Not A Label")
	c.RefusePark(strings.Repeat("x", maxReasonLen+1))
	for i := range 100 {
		c.RefusePark(fmt.Sprint("r", i))
	}
	if got := metric(t, reg, "switchboard_conncache_park_refusals_total", "reason", "enable"); got != 2 {
		t.Fatalf("refusals{enable} = %v", got)
	}
	mfs, _ := reg.Gather()
	total, series := 0.0, 0
	for _, mf := range mfs {
		if mf.GetName() == "switchboard_conncache_park_refusals_total" {
			for _, m := range mf.GetMetric() {
				series++
				total += m.GetCounter().GetValue()
			}
		}
	}
	if series > maxRefusalReasons || total != 104 {
		t.Fatalf("%d label values, %v refusals; want at most %d and 104", series, total, maxRefusalReasons)
	}
	if got := metric(t, reg, "switchboard_conncache_park_refusals_total", "reason", "other"); got < 2 {
		t.Fatalf("refusals{other} = %v, want the invalid labels counted there", got)
	}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		errs []string // substrings, one per error
	}{
		{"zero", Options{}, nil},
		{"explicit", Options{PerUser: 4, Total: 100, IdleTimeout: time.Minute, MaxAge: time.Hour}, nil},
		{"negative", Options{PerUser: -1, Total: -1, IdleTimeout: -1, MaxAge: -1},
			[]string{"PerUser", "Total", "IdleTimeout", "MaxAge"}},
		{"per user above total", Options{PerUser: 5, Total: 4}, []string{"more than Total"}},
		{"per user above default total", Options{PerUser: DefaultTotal + 1}, []string{"more than Total"}},
		{"idle too long", Options{IdleTimeout: 30 * time.Minute}, []string{"RFC 9051"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := tt.opts.Check()
			if len(errs) != len(tt.errs) {
				t.Fatalf("Check = %v, want %d errors", errs, len(tt.errs))
			}
			for i, want := range tt.errs {
				if !strings.Contains(errs[i].Error(), want) {
					t.Fatalf("error %d = %q, want it to mention %q", i, errs[i], want)
				}
			}
			c, err := New(&tt.opts)
			if err == nil {
				c.Close()
			}
			if (err != nil) != (len(tt.errs) > 0) || err != nil && !errors.Is(err, ErrInvalidOptions) {
				t.Fatalf("New: %v", err)
			}
		})
	}
}

func TestJanitorExpires(t *testing.T) {
	clk := newClock()
	c, _, _ := newCache(t, Options{IdleTimeout: time.Second, Now: clk.now})
	f := conn("c")
	c.Put(c.Key("alice", "b", "pw"), f, nil, time.Time{})
	clk.advance(time.Hour)
	// The janitor runs every second; give it ample time on a busy machine.
	deadline := time.Now().Add(20 * time.Second)
	for c.Len() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the janitor did not expire an idle connection")
		}
		time.Sleep(10 * time.Millisecond)
	}
	wantClosed(t, f, 1)
}

// TestConcurrent runs Put, Take, drops and expiry at once (under -race):
// every connection ends closed exactly once, by the cache or by its taker.
func TestConcurrent(t *testing.T) {
	c, clk, _ := newCache(t, Options{PerUser: 2, Total: 8})
	const workers, rounds = 8, 500
	var mu sync.Mutex
	var all []*fakeConn
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go concurrentWorker(c, clk, w, rounds, &mu, &all, &wg)
	}
	wg.Wait()
	c.Close()
	for _, f := range all {
		wantClosed(t, f, 1)
	}
	if c.Len() != 0 {
		t.Fatalf("Len = %d after Close", c.Len())
	}
}

func concurrentWorker(c *Cache, clk *clock, w, rounds int, mu *sync.Mutex, all *[]*fakeConn, wg *sync.WaitGroup) {
	defer wg.Done()
	for i := range rounds {
		acct := fmt.Sprint("user", (w+i)%5)
		k := c.Key(acct, fmt.Sprint("b", i%2), "pw")
		switch i % 7 {
		case 0:
			c.DropUser(acct)
		case 1:
			c.DropBackend("b1")
		case 2:
			clk.advance(time.Minute)
			c.Expire()
		}
		conn, caps, li, ok := c.Take(k)
		if !ok {
			f := &fakeConn{name: fmt.Sprint(w, "/", i)}
			mu.Lock()
			*all = append(*all, f)
			mu.Unlock()
			conn = f
		}
		if i%3 == 0 {
			conn.Close() // the session ends dirty
			continue
		}
		if !c.Put(k, conn, caps, li) {
			conn.Close()
		}
	}
}

func BenchmarkKeyTakePut(b *testing.B) {
	c, _, _ := newCache(b, Options{})
	k := c.Key("alice@example.org", "10.0.0.1:143", "correct horse")
	c.Put(k, conn("c"), []byte("IMAP4rev1 SORT"), time.Time{})
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		k := c.Key("alice@example.org", "10.0.0.1:143", "correct horse")
		conn, caps, li, ok := c.Take(k)
		if !ok {
			b.Fatal("miss")
		}
		c.Put(k, conn, caps, li)
	}
}

func BenchmarkKey(b *testing.B) {
	c, _, _ := newCache(b, Options{})
	b.ReportAllocs()
	for b.Loop() {
		c.Key("alice@example.org", "10.0.0.1:143", "correct horse")
	}
}
