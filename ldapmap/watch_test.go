package ldapmap

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"switchboard/route"
)

// dnMapper answers every login in dns with its DN and one host, and
// counts calls.
type dnMapper struct {
	dns   map[string]string // login to DN
	calls atomic.Int32
}

func (m *dnMapper) Lookup(_ context.Context, user string) (route.Result, error) {
	m.calls.Add(1)
	dn, ok := m.dns[user]
	if !ok {
		return route.Result{}, fmt.Errorf("fake: %q: %w", user, route.ErrUnknownUser)
	}
	return route.Result{Hosts: []string{"mx1"}, DN: dn, Source: "ldap", Fetched: time.Now()}, nil
}

func TestCacheInvalidateDN(t *testing.T) {
	const aliceDN = "mail=alice@example.org,ou=people,dc=example,dc=org"
	inner := &dnMapper{dns: map[string]string{
		"alice@example.org":       aliceDN,
		"Alice.Alias@example.org": aliceDN,
		"bob@example.org":         "mail=bob@example.org,ou=people,dc=example,dc=org",
	}}
	c := NewCache(inner, nil)
	ctx := context.Background()
	for _, u := range []string{"alice@example.org", "Alice.Alias@example.org", "ALICE@example.org", "bob@example.org", "nobody@example.org"} {
		c.Lookup(ctx, u)
	}
	want := []string{"alice.alias@example.org", "alice@example.org"}
	// Another spelling of the same DN: case and spacing differ.
	other := "MAIL=Alice@Example.ORG, ou=People,dc=example,dc=org"
	if got := c.LoginsFor(other); !slices.Equal(got, want) {
		t.Fatalf("LoginsFor = %q, want %q", got, want)
	}
	if got := c.InvalidateDN(other); !slices.Equal(got, want) {
		t.Fatalf("InvalidateDN = %q, want %q", got, want)
	}
	// bob and the negative entry for nobody stay.
	if n := c.Stats().Entries; n != 2 {
		t.Errorf("%d entries left, want 2 (bob, nobody)", n)
	}
	if got := c.LoginsFor(aliceDN); len(got) != 0 {
		t.Errorf("LoginsFor after InvalidateDN = %q, want none", got)
	}
	if got := c.InvalidateDN("mail=nobody@example.org,ou=people,dc=example,dc=org"); len(got) != 0 {
		t.Errorf("InvalidateDN of an unknown DN = %q, want none", got)
	}
	calls := inner.calls.Load()
	c.Lookup(ctx, "alice@example.org")
	if inner.calls.Load() != calls+1 {
		t.Error("a lookup after InvalidateDN was answered from the cache")
	}

	// InvalidateChange adds the change's own logins, folded, and drops
	// their entries too (negative ones included).
	got := c.InvalidateChange(Change{DN: aliceDN, Logins: []string{"Nobody@example.org", "alice@example.org"}})
	if want := []string{"alice@example.org", "nobody@example.org"}; !slices.Equal(got, want) {
		t.Errorf("InvalidateChange = %q, want %q", got, want)
	}
	if n := c.Stats().Entries; n != 1 {
		t.Errorf("%d entries left after InvalidateChange, want 1 (bob)", n)
	}
}

// TestCacheIndexBound checks that the index holds exactly the positive
// entries, so MaxEntries bounds it, through evictions, replacements,
// invalidations and InvalidateAll.
func TestCacheIndexBound(t *testing.T) {
	const maxEntries = 64
	inner := &dnMapper{dns: map[string]string{}}
	for i := range 1000 {
		// Two logins per entry.
		dn := fmt.Sprintf("uid=u%d,dc=example,dc=org", i/2)
		inner.dns[fmt.Sprintf("user%d@example.org", i)] = dn
	}
	c := NewCache(inner, &CacheOptions{MaxEntries: maxEntries})
	ctx := context.Background()
	for i := range 1000 {
		c.Lookup(ctx, fmt.Sprintf("user%d@example.org", i))
		c.Lookup(ctx, fmt.Sprintf("unknown%d@example.org", i))
	}
	st := c.Stats()
	if st.Evictions == 0 {
		t.Fatal("no evictions: the test does not exercise the bound")
	}
	dns, keys := c.index.len()
	if keys > maxEntries || uint64(keys) > st.Entries || dns > keys {
		t.Errorf("index holds %d keys under %d DNs with %d cache entries, MaxEntries %d", keys, dns, st.Entries, maxEntries)
	}
	// Every indexed login is cached: invalidating every DN drops exactly
	// the positive entries.
	positive := 0
	for i := range 500 {
		positive += len(c.InvalidateDN(fmt.Sprintf("uid=u%d,dc=example,dc=org", i)))
	}
	if positive != keys {
		t.Errorf("InvalidateDN over all DNs dropped %d logins, the index held %d", positive, keys)
	}
	if _, keys := c.index.len(); keys != 0 {
		t.Errorf("index holds %d keys after every DN was invalidated", keys)
	}
	for i := range 10 {
		c.Lookup(ctx, fmt.Sprintf("user%d@example.org", i))
	}
	c.InvalidateAll()
	if dns, keys := c.index.len(); dns != 0 || keys != 0 {
		t.Errorf("index holds %d DNs, %d keys after InvalidateAll", dns, keys)
	}
}

// TestCacheInvalidateDNDuringLookup: an answer fetched while InvalidateDN
// ran may predate the change, so it is returned but not stored.
func TestCacheInvalidateDNDuringLookup(t *testing.T) {
	inner := &blockingMapper{release: make(chan struct{}),
		result: route.Result{Hosts: []string{"old"}, DN: "uid=alice,dc=example,dc=org", Source: "ldap"}}
	c := NewCache(inner, nil)
	var wg sync.WaitGroup
	wg.Add(1)
	go lookupOld(&wg, c, nil)
	waitFor(t, "lookup to start", func() bool { return inner.calls.Load() == 1 })
	c.InvalidateDN("uid=alice,dc=example,dc=org")
	close(inner.release)
	wg.Wait()
	if n := c.Stats().Entries; n != 0 {
		t.Errorf("%d entries: the answer fetched during InvalidateDN was stored", n)
	}
}

func TestWatchFilterFromTemplate(t *testing.T) {
	tests := []struct {
		template string
		filter   string
		logins   []string
	}{
		{DefaultFilter, "(&(mail=*)(status=active))", []string{"mail"}},
		{"(|(mail=%s)(mailAlternateAddress=%s))", "(|(mail=*)(mailAlternateAddress=*))", []string{"mail", "mailAlternateAddress"}},
		{"(&(uid=%u)(mailDomain=%d)(accountStatus=active))", "(&(uid=*)(mailDomain=*)(accountStatus=active))", []string{"uid", "mailDomain"}},
		{"(mail=%u@%d)", "(mail=*@*)", []string{"mail"}},
		{"(&(objectClass=person)(MAIL=%s)(mail=%s))", "(&(objectClass=person)(MAIL=*)(mail=*))", []string{"MAIL"}},
		{"(mail:caseExactMatch:=%s)", "(mail:caseExactMatch:=*)", []string{"mail"}},
	}
	for _, tt := range tests {
		t.Run(tt.template, func(t *testing.T) {
			ft, err := parseFilterTemplate(tt.template)
			if err != nil {
				t.Fatal(err)
			}
			if got := ft.watchFilter(); got != tt.filter {
				t.Errorf("watchFilter = %q, want %q", got, tt.filter)
			}
			if got := ft.loginAttributes(); !slices.Equal(got, tt.logins) {
				t.Errorf("loginAttributes = %q, want %q", got, tt.logins)
			}
		})
	}
}

func TestWatchOptionsCheck(t *testing.T) {
	tests := []struct {
		name string
		opts WatchOptions
		want string // substring of the error; "" for none
	}{
		{"zero", WatchOptions{}, ""},
		{"all set", WatchOptions{Filter: "(mail=*)", LoginAttributes: []string{"mail", "uid"},
			PollInterval: time.Second, ListInterval: time.Minute, RetryMin: time.Second, RetryMax: time.Minute}, ""},
		{"bad filter", WatchOptions{Filter: "(mail=*"}, "watch filter"},
		{"bad attribute", WatchOptions{LoginAttributes: []string{"mail address"}}, "not an attribute description"},
		{"negative", WatchOptions{PollInterval: -time.Second}, "negative"},
		{"min above max", WatchOptions{RetryMin: time.Minute, RetryMax: time.Second}, "above RetryMax"},
		{"min above default max", WatchOptions{RetryMin: time.Hour}, "above RetryMax"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.opts.Check()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Check = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Check = %v, want an error with %q", err, tt.want)
			}
		})
	}
}

func TestNewWatcherErrors(t *testing.T) {
	dir := &Options{URIs: []string{"ldap://127.0.0.1:1"}, BaseDN: "dc=example,dc=org"}
	onChange := func(Change) {}
	if _, err := NewWatcher(dir, nil, nil); err == nil {
		t.Error("NewWatcher accepted a nil callback")
	}
	if _, err := NewWatcher(&Options{BaseDN: "dc=example,dc=org"}, nil, onChange); err == nil {
		t.Error("NewWatcher accepted options without URIs")
	}
	w, err := NewWatcher(dir, nil, onChange)
	if err != nil {
		t.Fatal(err)
	}
	if w.Filter() != "(&(mail=*)(status=active))" || !slices.Equal(w.attrs, []string{"host", "mail"}) {
		t.Errorf("watcher filter %q, attributes %q", w.Filter(), w.attrs)
	}
}

// unitWatcher returns a watcher that is never run, with its changes.
func unitWatcher(t *testing.T) (*Watcher, *[]Change) {
	t.Helper()
	var changes []Change
	dir := &Options{URIs: []string{"ldap://127.0.0.1:1"}, BaseDN: "dc=example,dc=org",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	w, err := NewWatcher(dir, nil, func(ch Change) { changes = append(changes, ch) })
	if err != nil {
		t.Fatal(err)
	}
	return w, &changes
}

// syncEntry builds an entry with a Sync State control.
func syncEntry(state ldap.ControlSyncStateState, id byte, dn string, hosts ...string) (*ldap.Entry, []ldap.Control) {
	e := &ldap.Entry{DN: dn}
	if state == ldap.SyncStateAdd || state == ldap.SyncStateModify {
		mail := strings.TrimPrefix(strings.SplitN(dn, ",", 2)[0], "mail=")
		e.Attributes = []*ldap.EntryAttribute{{Name: "mail", Values: []string{mail}}, {Name: "host", Values: hosts},
			{Name: "entryCSN", Values: []string{"20260101000000.000000Z#000000#000#000000"}}}
	}
	return e, []ldap.Control{&ldap.ControlSyncState{State: state, EntryUUID: [16]byte{id}, Cookie: []byte{'c', id}}}
}

// TestWatchSyncProtocol feeds a watcher the messages of RFC 4533 refreshes
// and checks what it reports: nothing for the initial content, a present
// phase that omits an entry, a delete phase by UUID set, a rename, and a
// full refresh after a refused cookie.
func TestWatchSyncProtocol(t *testing.T) {
	w, changes := unitWatcher(t)
	feed := func(rs *refresh, state ldap.ControlSyncStateState, id byte, dn string, hosts ...string) {
		e, ctls := syncEntry(state, id, dn, hosts...)
		w.syncEntry(e, ctls, rs)
	}
	info := func(rs *refresh, ctl *ldap.ControlSyncInfo) { w.syncInfo(ctl, rs) }
	const a, b, c = "mail=a@x,dc=example,dc=org", "mail=b@x,dc=example,dc=org", "mail=c@x,dc=example,dc=org"

	// Initial content, ended the way slapd ends it: refreshDelete.
	rs := &refresh{full: true, seen: make(seenSet)}
	feed(rs, ldap.SyncStateAdd, 1, a, "mx1")
	feed(rs, ldap.SyncStateAdd, 2, b, "mx1")
	feed(rs, ldap.SyncStateAdd, 3, c, "mx2")
	info(rs, &ldap.ControlSyncInfo{Value: ldap.SyncInfoRefreshDelete, RefreshDelete: &ldap.ControlSyncInfoRefreshDelete{Cookie: []byte("k1"), RefreshDone: true}})
	if len(*changes) != 0 || !w.primed || string(w.cookie) != "k1" {
		t.Fatalf("after the initial content: changes %+v, primed %v, cookie %q", *changes, w.primed, w.cookie)
	}

	// Resumed with a cookie: a present phase that mentions a (as a
	// present entry), changes c, and leaves b out.
	rs = &refresh{seen: make(seenSet)}
	feed(rs, ldap.SyncStatePresent, 1, a)
	feed(rs, ldap.SyncStateModify, 3, c, "mx3")
	info(rs, &ldap.ControlSyncInfo{Value: ldap.SyncInfoRefreshPresent, RefreshPresent: &ldap.ControlSyncInfoRefreshPresent{RefreshDone: true}})
	want := []Change{
		{DN: c, Logins: []string{"c@x"}, OldHosts: []string{"mx2"}, NewHosts: []string{"mx3"}},
		{DN: b, Logins: []string{"b@x"}, OldHosts: []string{"mx1"}, Deleted: true},
	}
	checkChanges(t, "present phase", changes, want)

	// Persist: a rename of c (same UUID, new DN), then a delete phase
	// by UUID set naming a.
	const c2 = "mail=c2@x,dc=example,dc=org"
	feed(rs, ldap.SyncStateModify, 3, c2, "mx3")
	set := &ldap.ControlSyncInfoSyncIdSet{RefreshDeletes: true}
	set.SyncUUIDs = append(set.SyncUUIDs, [16]byte{1})
	info(rs, &ldap.ControlSyncInfo{Value: ldap.SyncInfoSyncIdSet, SyncIdSet: set})
	want = []Change{
		{DN: c, Logins: []string{"c@x"}, OldHosts: []string{"mx3"}, Deleted: true},
		{DN: c2, Logins: []string{"c2@x"}, NewHosts: []string{"mx3"}},
		{DN: a, Logins: []string{"a@x"}, OldHosts: []string{"mx1"}, Deleted: true},
	}
	checkChanges(t, "rename and UUID set", changes, want)

	// A full refresh after a refused cookie: the view holds c2 only; the
	// server now has c2 unchanged and a new d.
	const d = "mail=d@x,dc=example,dc=org"
	rs = &refresh{full: true, seen: make(seenSet)}
	feed(rs, ldap.SyncStateAdd, 3, c2, "mx3")
	feed(rs, ldap.SyncStateAdd, 4, d, "mx1")
	info(rs, &ldap.ControlSyncInfo{Value: ldap.SyncInfoRefreshDelete, RefreshDelete: &ldap.ControlSyncInfoRefreshDelete{RefreshDone: true}})
	checkChanges(t, "full refresh", changes, []Change{{DN: d, Logins: []string{"d@x"}, NewHosts: []string{"mx1"}}})
	if w.Stats().Entries != 2 {
		t.Errorf("view holds %d entries, want 2", w.Stats().Entries)
	}

	// A deletion of an entry the view lacks is reported all the same.
	const e = "mail=e@x,dc=example,dc=org"
	feed(rs, ldap.SyncStateDelete, 9, e)
	checkChanges(t, "unknown delete", changes, []Change{{DN: e, Deleted: true}})

	// An entry without entryCSN: the service account cannot read it, so
	// the watcher stops resuming from cookies.
	if w.csnHidden {
		t.Fatal("csnHidden set by entries that had an entryCSN")
	}
	noCSN := &ldap.Entry{DN: d, Attributes: []*ldap.EntryAttribute{{Name: "mail", Values: []string{"d@x"}}, {Name: "host", Values: []string{"mx1"}}}}
	w.syncEntry(noCSN, []ldap.Control{&ldap.ControlSyncState{State: ldap.SyncStateModify, EntryUUID: [16]byte{4}}}, rs)
	if !w.csnHidden {
		t.Error("csnHidden not set by an entry without entryCSN")
	}
	checkChanges(t, "modify without a change", changes, nil)
}

// checkChanges compares the reported changes with want and clears them.
func checkChanges(t *testing.T, what string, got *[]Change, want []Change) {
	t.Helper()
	if len(*got) != len(want) {
		t.Fatalf("%s: %d changes %+v, want %+v", what, len(*got), *got, want)
	}
	for i := range want {
		expect(t, fmt.Sprintf("%s: change %d", what, i), (*got)[i], want[i])
	}
	*got = nil
}
