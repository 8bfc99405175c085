package ldapmap

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"switchboard/route"
)

// fakeClock is a settable clock for CacheOptions.Now.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// fakeMapper answers from a map and counts calls. A user missing from the
// map is unknown; err, when set, is returned for everyone.
type fakeMapper struct {
	mu    sync.Mutex
	hosts map[string][]string
	err   error
	calls atomic.Int32
}

func (m *fakeMapper) Lookup(_ context.Context, user string) (route.Result, error) {
	m.calls.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return route.Result{}, m.err
	}
	h, ok := m.hosts[user]
	if !ok {
		return route.Result{}, fmt.Errorf("fake: %q: %w", user, route.ErrUnknownUser)
	}
	return route.Result{Hosts: h, DN: "uid=" + user, Source: "ldap", Fetched: time.Now()}, nil
}

func (m *fakeMapper) setHosts(user string, hosts []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.hosts[user] = hosts
}

func (m *fakeMapper) setErr(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.err = err
}

var errDown = fmt.Errorf("fake: directory down: %w", route.ErrUnavailable)

func TestCache(t *testing.T) {
	type step struct {
		advance time.Duration
		user    string
		down    bool     // inner fails with ErrUnavailable from this step on
		up      bool     // inner answers again from this step on
		setHost []string // new hosts for user from this step on
		invAll  bool     // InvalidateAll before the lookup
		inv     bool     // Invalidate(user) before the lookup
		source  string   // want Source; "" means want an error
		wantErr error
		calls   int32 // inner calls so far
	}
	tests := []struct {
		name  string
		stale bool
		steps []step
	}{
		{"positive ttl", false, []step{
			{user: "alice@example.org", source: "ldap", calls: 1},
			{advance: 4 * time.Minute, user: "alice@example.org", source: "cache", calls: 1},
			{user: "ALICE@Example.ORG", source: "cache", calls: 1},
			{advance: time.Minute, user: "alice@example.org", source: "ldap", calls: 2},
			{user: "alice@example.org", source: "cache", calls: 2},
		}},
		{"negative ttl", false, []step{
			{user: "nobody@example.org", wantErr: route.ErrUnknownUser, calls: 1},
			{advance: 29 * time.Second, user: "nobody@example.org", wantErr: route.ErrUnknownUser, calls: 1},
			{advance: time.Second, user: "nobody@example.org", wantErr: route.ErrUnknownUser, calls: 2},
			{setHost: []string{"imap9"}, user: "nobody@example.org", wantErr: route.ErrUnknownUser, calls: 2},
			{advance: 30 * time.Second, user: "nobody@example.org", source: "ldap", calls: 3},
		}},
		{"unavailable not cached", false, []step{
			{down: true, user: "alice@example.org", wantErr: route.ErrUnavailable, calls: 1},
			{user: "alice@example.org", wantErr: route.ErrUnavailable, calls: 2},
		}},
		{"no stale unless asked", false, []step{
			{user: "alice@example.org", source: "ldap", calls: 1},
			{advance: 6 * time.Minute, down: true, user: "alice@example.org", wantErr: route.ErrUnavailable, calls: 2},
		}},
		{"stale served", true, []step{
			{user: "alice@example.org", source: "ldap", calls: 1},
			{advance: 6 * time.Minute, down: true, user: "alice@example.org", source: "stale", calls: 2},
			{advance: time.Hour, user: "alice@example.org", source: "stale", calls: 3},
			{user: "bob@example.org", wantErr: route.ErrUnavailable, calls: 4},
			{up: true, user: "alice@example.org", source: "ldap", calls: 5},
			{user: "alice@example.org", source: "cache", calls: 5},
		}},
		{"no stale for negative", true, []step{
			{user: "nobody@example.org", wantErr: route.ErrUnknownUser, calls: 1},
			{advance: time.Minute, down: true, user: "nobody@example.org", wantErr: route.ErrUnavailable, calls: 2},
		}},
		{"no stale after invalidate", true, []step{
			{user: "alice@example.org", source: "ldap", calls: 1},
			{advance: 6 * time.Minute, down: true, inv: true, user: "alice@example.org", wantErr: route.ErrUnavailable, calls: 2},
		}},
		{"invalidate", false, []step{
			{user: "alice@example.org", source: "ldap", calls: 1},
			{user: "alice@example.org", source: "cache", calls: 1},
			{inv: true, user: "Alice@example.org", source: "ldap", calls: 2},
			{user: "alice@example.org", source: "cache", calls: 2},
		}},
		{"invalidate all", false, []step{
			{user: "alice@example.org", source: "ldap", calls: 1},
			{user: "nobody@example.org", wantErr: route.ErrUnknownUser, calls: 2},
			{invAll: true, user: "alice@example.org", source: "ldap", calls: 3},
			{user: "nobody@example.org", wantErr: route.ErrUnknownUser, calls: 4},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			inner := &fakeMapper{hosts: map[string][]string{
				"alice@example.org": {"imap1", "imap2"},
				"Alice@example.org": {"imap1", "imap2"},
				"ALICE@Example.ORG": {"imap1", "imap2"},
				"bob@example.org":   {"imap3"},
			}}
			c := NewCache(inner, &CacheOptions{ServeStale: tt.stale, Now: clock.Now})
			for i, s := range tt.steps {
				clock.Add(s.advance)
				if s.setHost != nil {
					inner.setHosts(s.user, s.setHost)
				}
				if s.down {
					inner.setErr(errDown)
				}
				if s.up {
					inner.setErr(nil)
				}
				if s.invAll {
					c.InvalidateAll()
				}
				if s.inv {
					c.Invalidate(s.user)
				}
				res, err := c.Lookup(context.Background(), s.user)
				if s.source == "" {
					if !errors.Is(err, s.wantErr) {
						t.Fatalf("step %d: Lookup(%q) = %+v, %v; want %v", i, s.user, res, err, s.wantErr)
					}
				} else {
					if err != nil || res.Source != s.source || len(res.Hosts) == 0 {
						t.Fatalf("step %d: Lookup(%q) = %+v, %v; want Source %q", i, s.user, res, err, s.source)
					}
				}
				if n := inner.calls.Load(); n != s.calls {
					t.Fatalf("step %d: %d inner calls, want %d", i, n, s.calls)
				}
			}
		})
	}
}

func TestCacheStats(t *testing.T) {
	clock := newFakeClock()
	inner := &fakeMapper{hosts: map[string][]string{"alice@example.org": {"imap1"}}}
	c := NewCache(inner, &CacheOptions{ServeStale: true, Now: clock.Now})
	ctx := context.Background()
	c.Lookup(ctx, "alice@example.org")  // miss
	c.Lookup(ctx, "alice@example.org")  // hit
	c.Lookup(ctx, "nobody@example.org") // miss
	c.Lookup(ctx, "nobody@example.org") // negative hit
	clock.Add(time.Hour)                //
	inner.setErr(errDown)               //
	c.Lookup(ctx, "alice@example.org")  // miss, stale
	want := CacheStats{Hits: 1, NegativeHits: 1, Misses: 3, StaleServed: 1, Entries: 2}
	if got := c.Stats(); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
}

func TestCacheEviction(t *testing.T) {
	clock := newFakeClock()
	inner := route.MapperFunc(func(_ context.Context, user string) (route.Result, error) {
		return route.Result{Hosts: []string{"imap1"}, Source: "ldap"}, nil
	})
	// One entry per shard.
	c := NewCache(inner, &CacheOptions{MaxEntries: cacheShards, Now: clock.Now})
	const n = 500
	for i := range n {
		clock.Add(time.Second)
		c.Lookup(context.Background(), fmt.Sprintf("user%d@example.org", i))
	}
	st := c.Stats()
	if st.Entries > cacheShards || st.Entries+st.Evictions != n {
		t.Errorf("Entries %d, Evictions %d; want at most %d entries and %d in all", st.Entries, st.Evictions, cacheShards, n)
	}
	// The newest entry expires last, so it is never the victim.
	if res, _ := c.Lookup(context.Background(), fmt.Sprintf("user%d@example.org", n-1)); res.Source != "cache" {
		t.Errorf("newest entry evicted")
	}
}

func TestCacheSkipsHugeKeys(t *testing.T) {
	inner := &fakeMapper{hosts: map[string][]string{}}
	c := NewCache(inner, nil)
	long := string(make([]byte, maxLoginLen+1))
	c.Lookup(context.Background(), long)
	if n := c.Stats().Entries; n != 0 {
		t.Errorf("%d entries after a %d-byte login", n, len(long))
	}
}

// blockingMapper blocks every lookup until release is closed, and counts
// calls.
type blockingMapper struct {
	release chan struct{}
	calls   atomic.Int32
	result  route.Result
	err     error
}

func (m *blockingMapper) Lookup(ctx context.Context, _ string) (route.Result, error) {
	m.calls.Add(1)
	select {
	case <-m.release:
		return m.result, m.err
	case <-ctx.Done():
		return route.Result{}, fmt.Errorf("blocking: %w: %w", ctx.Err(), route.ErrUnavailable)
	}
}

// waitFor polls cond for up to 5s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestCacheSingleflight(t *testing.T) {
	const n = 20
	inner := &blockingMapper{release: make(chan struct{}),
		result: route.Result{Hosts: []string{"imap1"}, Source: "ldap"}}
	c := NewCache(inner, nil)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		// Mixed case: the key is folded, so all share one lookup.
		user := "alice@example.org"
		if i%2 == 1 {
			user = "ALICE@example.org"
		}
		go lookupInto(&wg, c, user, errs)
	}
	waitFor(t, "all lookups to join", func() bool { return c.Stats().Shared == n-1 })
	close(inner.release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := inner.calls.Load(); got != 1 {
		t.Errorf("%d inner calls, want 1", got)
	}
	if res, err := c.Lookup(context.Background(), "alice@example.org"); err != nil || res.Source != "cache" {
		t.Errorf("after the flight: %+v, %v; want a cache hit", res, err)
	}
}

// lookupInto runs one Lookup and reports a failure on errs.
func lookupInto(wg *sync.WaitGroup, c *Cache, user string, errs chan<- error) {
	defer wg.Done()
	res, err := c.Lookup(context.Background(), user)
	if err != nil || len(res.Hosts) != 1 || res.Hosts[0] != "imap1" {
		errs <- fmt.Errorf("Lookup(%q) = %+v, %v", user, res, err)
	}
}

// TestCacheLeaderCanceled checks that waiters do not inherit the leading
// caller's cancellation: one of them runs the lookup again.
func TestCacheLeaderCanceled(t *testing.T) {
	inner := &blockingMapper{release: make(chan struct{}),
		result: route.Result{Hosts: []string{"imap1"}, Source: "ldap"}}
	c := NewCache(inner, nil)
	ctx, cancel := context.WithCancel(context.Background())
	leaderErr := make(chan error, 1)
	go lookupErr(ctx, c, leaderErr)
	waitFor(t, "leader to start", func() bool { return inner.calls.Load() == 1 })

	var wg sync.WaitGroup
	errs := make(chan error, 1)
	wg.Add(1)
	go lookupInto(&wg, c, "alice@example.org", errs)
	waitFor(t, "waiter to join", func() bool { return c.Stats().Shared == 1 })
	cancel()
	if err := <-leaderErr; !errors.Is(err, context.Canceled) {
		t.Errorf("leader: %v, want context.Canceled", err)
	}
	waitFor(t, "waiter to lead", func() bool { return inner.calls.Load() == 2 })
	close(inner.release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// lookupErr runs one Lookup for alice and sends its error.
func lookupErr(ctx context.Context, c *Cache, errc chan<- error) {
	_, err := c.Lookup(ctx, "alice@example.org")
	errc <- err
}

// TestCacheInvalidateDuringLookup checks that an answer fetched before an
// invalidation is not stored after it.
func TestCacheInvalidateDuringLookup(t *testing.T) {
	for _, all := range []bool{false, true} {
		t.Run(fmt.Sprintf("all=%v", all), func(t *testing.T) {
			inner := &blockingMapper{release: make(chan struct{}),
				result: route.Result{Hosts: []string{"old"}, Source: "ldap"}}
			c := NewCache(inner, nil)
			var wg sync.WaitGroup
			errs := make(chan error, 1)
			wg.Add(1)
			go lookupOld(&wg, c, errs)
			waitFor(t, "lookup to start", func() bool { return inner.calls.Load() == 1 })
			if all {
				c.InvalidateAll()
			} else {
				c.Invalidate("Alice@example.org")
			}
			close(inner.release)
			wg.Wait()
			if n := c.Stats().Entries; n != 0 {
				t.Errorf("%d entries: the pre-invalidation answer was stored", n)
			}
		})
	}
}

func lookupOld(wg *sync.WaitGroup, c *Cache, errs chan<- error) {
	defer wg.Done()
	c.Lookup(context.Background(), "alice@example.org")
}

func BenchmarkCacheHit(b *testing.B) {
	inner := &fakeMapper{hosts: map[string][]string{"alice@example.org": {"imap1", "imap2"}}}
	c := NewCache(inner, nil)
	ctx := context.Background()
	if _, err := c.Lookup(ctx, "alice@example.org"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Lookup(ctx, "alice@example.org"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCacheHitParallel(b *testing.B) {
	inner := &fakeMapper{hosts: map[string][]string{}}
	users := make([]string, 64)
	for i := range users {
		users[i] = fmt.Sprintf("user%d@example.org", i)
		inner.hosts[users[i]] = []string{"imap1"}
	}
	c := NewCache(inner, nil)
	ctx := context.Background()
	for _, u := range users {
		c.Lookup(ctx, u)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := c.Lookup(ctx, users[i%len(users)]); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

func BenchmarkCacheHitFold(b *testing.B) {
	inner := &fakeMapper{hosts: map[string][]string{"Alice@Example.org": {"imap1"}}}
	c := NewCache(inner, nil)
	ctx := context.Background()
	c.Lookup(ctx, "Alice@Example.org")
	b.ReportAllocs()
	for b.Loop() {
		c.Lookup(ctx, "Alice@Example.org")
	}
}

// TestCacheKeyFolding checks that the allocation-free ASCII fold of a hit
// and the strings.ToLower key of a store find the same entry, for ASCII
// and non-ASCII logins.
func TestCacheKeyFolding(t *testing.T) {
	inner := &fakeMapper{hosts: map[string][]string{
		"Jörg@Example.org":  {"imap1"},
		"Alice@Example.org": {"imap2"},
	}}
	c := NewCache(inner, nil)
	ctx := context.Background()
	for _, group := range [][]string{
		{"Jörg@Example.org", "jörg@example.org", "JÖRG@EXAMPLE.ORG"},
		{"Alice@Example.org", "alice@example.org", "ALICE@EXAMPLE.ORG"},
	} {
		if _, err := c.Lookup(ctx, group[0]); err != nil {
			t.Fatal(err)
		}
		for _, u := range group[1:] {
			if res, err := c.Lookup(ctx, u); err != nil || res.Source != "cache" {
				t.Errorf("Lookup(%q) = %+v, %v; want a hit", u, res, err)
			}
		}
	}
	if n := inner.calls.Load(); n != 2 {
		t.Errorf("%d inner calls, want 2", n)
	}
}

// TestCacheInnerPanic checks that a panicking inner mapper does not leave
// a flight behind that would answer later lookups with a zero Result.
func TestCacheInnerPanic(t *testing.T) {
	calls := 0
	inner := route.MapperFunc(func(_ context.Context, user string) (route.Result, error) {
		calls++
		if calls == 1 {
			panic("inner mapper bug")
		}
		return route.Result{Hosts: []string{"imap1"}, Source: "ldap"}, nil
	})
	c := NewCache(inner, nil)
	if !panics(func() { c.Lookup(context.Background(), "alice@example.org") }) {
		t.Fatal("panic swallowed")
	}
	res, err := c.Lookup(context.Background(), "alice@example.org")
	if err != nil || len(res.Hosts) != 1 {
		t.Fatalf("after a panic: %+v, %v", res, err)
	}
}

// panics reports whether f panics.
func panics(f func()) (did bool) {
	defer func() { did = recover() != nil }()
	f()
	return false
}
