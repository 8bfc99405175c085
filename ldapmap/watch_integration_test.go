package ldapmap

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"switchboard/internal/testbed"
)

// These tests run a Watcher against a real slapd, with and without the
// syncprov overlay. Only -short skips them.

// changeDeadline is how soon a change pushed by syncprov must be reported
// (the target is one second; syncprov pushes in milliseconds).
const changeDeadline = time.Second

// syncedTimeout bounds the first refresh of a test directory.
const syncedTimeout = 10 * time.Second

// watchUsers are the entries every watch test starts with.
var watchUsers = []testbed.User{
	{Mail: "alice@example.org", Password: "x", Hosts: []string{"mx1"}},
	{Mail: "bob@example.org", Password: "x", Hosts: []string{"mx2", "mx1"}},
	{Mail: "carol@example.org", Password: "x", Hosts: []string{"mx1"}},
	{Mail: "dave@example.org", Password: "x", Hosts: []string{"mx2"}},
}

// startWatchSlapd starts a slapd, with syncprov or without, holding
// watchUsers.
func startWatchSlapd(t *testing.T, syncProv bool) *testbed.Slapd {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test against slapd; skipped with -short")
	}
	s, err := testbed.StartSlapd(testbed.SlapdOptions{Dir: t.TempDir(), SyncProv: syncProv})
	if err != nil {
		t.Fatalf("start slapd: %v", err)
	}
	t.Cleanup(func() { s.Stop() })
	if err := s.AddUsers(watchUsers...); err != nil {
		t.Fatalf("add users: %v", err)
	}
	return s
}

// dirOptions returns the directory options for s.
func dirOptions(s *testbed.Slapd, log *slog.Logger) *Options {
	return &Options{
		URIs:         []string{s.URI},
		BindDN:       s.BindDN,
		BindPassword: Secret(s.BindPassword),
		BaseDN:       s.BaseDN,
		Logger:       log,
	}
}

// watchRun is a running watcher and what it reported.
type watchRun struct {
	w       *Watcher
	changes chan Change
	log     *lockedBuffer
	s       *testbed.Slapd
}

// startWatcher runs a watcher on s until the test ends and waits until it
// is in sync. opts may be nil.
func startWatcher(t *testing.T, s *testbed.Slapd, opts *WatchOptions) *watchRun {
	t.Helper()
	r := &watchRun{changes: make(chan Change, 64), log: &lockedBuffer{}, s: s}
	log := slog.New(slog.NewTextHandler(r.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	w, err := NewWatcher(dirOptions(s, log), opts, func(ch Change) { r.changes <- ch })
	if err != nil {
		t.Fatalf("NewWatcher: %v", err)
	}
	r.w = w
	ctx, cancel := context.WithCancel(context.Background())
	donec := make(chan error, 1)
	go runWatcher(ctx, w, donec)
	t.Cleanup(func() {
		cancel()
		if err := <-donec; err != nil {
			t.Errorf("Run: %v", err)
		}
		if strings.Contains(r.log.String(), s.BindPassword) {
			t.Errorf("the bind password is in the log:\n%s", r.log)
		}
		if t.Failed() || testing.Verbose() {
			t.Logf("watcher log:\n%s", r.log)
		}
	})
	select {
	case <-w.Synced():
	case <-time.After(syncedTimeout):
		t.Fatalf("watcher not in sync after %v", syncedTimeout)
	}
	return r
}

func runWatcher(ctx context.Context, w *Watcher, donec chan<- error) { donec <- w.Run(ctx) }

// next returns the next change, failing the test if none comes within d.
func (r *watchRun) next(t *testing.T, d time.Duration, what string) Change {
	t.Helper()
	select {
	case ch := <-r.changes:
		return ch
	case <-time.After(d):
		t.Fatalf("%s: no change within %v", what, d)
		return Change{}
	}
}

// quiet fails the test if a change arrives within d.
func (r *watchRun) quiet(t *testing.T, d time.Duration, what string) {
	t.Helper()
	select {
	case ch := <-r.changes:
		t.Fatalf("%s: unexpected change %+v", what, ch)
	case <-time.After(d):
	}
}

// expect checks ch against want.
func expect(t *testing.T, what string, ch, want Change) {
	t.Helper()
	if !strings.EqualFold(ch.DN, want.DN) || !slices.Equal(ch.Logins, want.Logins) ||
		!slices.Equal(ch.OldHosts, want.OldHosts) || !slices.Equal(ch.NewHosts, want.NewHosts) ||
		ch.Deleted != want.Deleted {
		t.Fatalf("%s: change\n got %+v\nwant %+v", what, ch, want)
	}
}

// timed runs f and returns how long it took with the change it returns.
func timed(f func() Change) (Change, time.Duration) {
	start := time.Now()
	ch := f()
	return ch, time.Since(start)
}

// TestWatchModifyHost changes a host with the ldapmodify binary and
// expects the change within a second, with the old and new hosts and the
// login names, the cache's included; unrelated modifications and the
// initial refresh report nothing.
func TestWatchModifyHost(t *testing.T) {
	s := startWatchSlapd(t, true)
	log := slog.New(slog.NewTextHandler(&lockedBuffer{}, nil))
	mapper, err := NewLDAP(dirOptions(s, log))
	if err != nil {
		t.Fatal(err)
	}
	defer mapper.Close()
	cache := NewCache(mapper, nil)
	if _, err := cache.Lookup(context.Background(), "Alice@Example.ORG"); err != nil {
		t.Fatalf("lookup: %v", err)
	}
	r := startWatcher(t, s, &WatchOptions{Index: cache})
	if got := r.w.Stats(); got.Mode != ModeSync || got.Entries != len(watchUsers) {
		t.Fatalf("stats after the first refresh = %+v, want mode %q and %d entries", got, ModeSync, len(watchUsers))
	}
	r.quiet(t, 200*time.Millisecond, "after the initial refresh")

	// A change that does not touch routing.
	if err := s.Add("dn: " + s.UserDN("alice@example.org") + "\nchangetype: modify\nreplace: description\ndescription: not routing\n"); err != nil {
		t.Fatal(err)
	}
	r.quiet(t, 300*time.Millisecond, "after a description change")

	alice := s.UserDN("alice@example.org")
	ldif := "dn: " + alice + "\nchangetype: modify\nreplace: host\nhost: mx2\nhost: mx3\n"
	start := time.Now()
	if err := s.Add(ldif); err != nil {
		t.Fatal(err)
	}
	ch := r.next(t, changeDeadline, "host change")
	t.Logf("change reported %v after ldapmodify started", time.Since(start))
	expect(t, "host change", ch, Change{DN: alice, Logins: []string{"alice@example.org"},
		OldHosts: []string{"mx1"}, NewHosts: []string{"mx2", "mx3"}})

	if got := cache.InvalidateChange(ch); !slices.Equal(got, []string{"alice@example.org"}) {
		t.Errorf("InvalidateChange = %q, want [alice@example.org]", got)
	}
	if n := cache.Stats().Entries; n != 0 {
		t.Errorf("cache holds %d entries after InvalidateChange, want 0", n)
	}
	res, err := cache.Lookup(context.Background(), "alice@example.org")
	if err != nil || !slices.Equal(res.Hosts, []string{"mx2", "mx3"}) {
		t.Errorf("lookup after the change = %v, %v; want hosts [mx2 mx3]", res.Hosts, err)
	}
	if !strings.Contains(r.log.String(), `msg="ldap entry changed"`) || !strings.Contains(r.log.String(), "hosts_after=mx2,mx3") {
		t.Errorf("no change line in the log:\n%s", r.log)
	}
}

// TestWatchDeleteAndFilter deletes an entry, disables one (it stops
// matching the filter) and adds one.
func TestWatchDeleteAndFilter(t *testing.T) {
	s := startWatchSlapd(t, true)
	r := startWatcher(t, s, nil)

	carol := s.UserDN("carol@example.org")
	if err := s.Delete(carol); err != nil {
		t.Fatal(err)
	}
	ch, took := timed(func() Change { return r.next(t, changeDeadline, "delete") })
	t.Logf("delete reported in %v", took)
	expect(t, "delete", ch, Change{DN: carol, Logins: []string{"carol@example.org"}, OldHosts: []string{"mx1"}, Deleted: true})

	if err := s.SetStatus("dave@example.org", "disabled"); err != nil {
		t.Fatal(err)
	}
	ch = r.next(t, changeDeadline, "status disabled")
	expect(t, "status disabled", ch, Change{DN: s.UserDN("dave@example.org"), Logins: []string{"dave@example.org"},
		OldHosts: []string{"mx2"}, Deleted: true})

	if err := s.SetStatus("dave@example.org", "active"); err != nil {
		t.Fatal(err)
	}
	ch = r.next(t, changeDeadline, "status active again")
	expect(t, "status active again", ch, Change{DN: s.UserDN("dave@example.org"), Logins: []string{"dave@example.org"},
		NewHosts: []string{"mx2"}})

	if err := s.AddUsers(testbed.User{Mail: "Erin@example.org", Password: "x", Hosts: []string{"mx3"}}); err != nil {
		t.Fatal(err)
	}
	ch = r.next(t, changeDeadline, "add")
	expect(t, "add", ch, Change{DN: s.UserDN("Erin@example.org"), Logins: []string{"erin@example.org"}, NewHosts: []string{"mx3"}})
	if got := r.w.Stats(); got.Entries != len(watchUsers) || got.Changes != 4 {
		t.Errorf("stats = %+v, want %d entries and 4 changes", got, len(watchUsers))
	}
}

// TestWatchSlapdRestart restarts slapd under a watcher: changes made
// while the watcher is disconnected (a modify and a delete) are reported
// once it is back, from its cookie, and a change after that within a
// second.
func TestWatchSlapdRestart(t *testing.T) {
	s := startWatchSlapd(t, true)
	// The watcher waits 1.2–1.8 s before reconnecting: time enough to
	// restart slapd and change it while the watcher is away.
	r := startWatcher(t, s, &WatchOptions{RetryMin: 1500 * time.Millisecond, RetryMax: 3 * time.Second})

	// A change seen before the restart moves the cookie forward.
	if err := s.SetHosts("alice@example.org", "mx2"); err != nil {
		t.Fatal(err)
	}
	r.next(t, changeDeadline, "change before the restart")

	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if err := s.SetHosts("bob@example.org", "mx3"); err != nil {
		t.Fatal(err)
	}
	carol := s.UserDN("carol@example.org")
	if err := s.Delete(carol); err != nil {
		t.Fatal(err)
	}
	got := map[string]Change{}
	for range 2 {
		ch := r.next(t, 10*time.Second, "changes made during the restart")
		got[strings.ToLower(ch.DN)] = ch
	}
	expect(t, "bob after the restart", got[strings.ToLower(s.UserDN("bob@example.org"))], Change{DN: s.UserDN("bob@example.org"),
		Logins: []string{"bob@example.org"}, OldHosts: []string{"mx2", "mx1"}, NewHosts: []string{"mx3"}})
	expect(t, "carol after the restart", got[strings.ToLower(carol)], Change{DN: carol,
		Logins: []string{"carol@example.org"}, OldHosts: []string{"mx1"}, Deleted: true})
	if st := r.w.Stats(); st.Reconnects < 1 || st.Mode != ModeSync {
		t.Errorf("stats = %+v, want a reconnect and mode sync", st)
	}
	r.quiet(t, 200*time.Millisecond, "after the resumed refresh")

	if err := s.SetHosts("alice@example.org", "mx1"); err != nil {
		t.Fatal(err)
	}
	ch := r.next(t, changeDeadline, "change after the restart")
	expect(t, "change after the restart", ch, Change{DN: s.UserDN("alice@example.org"),
		Logins: []string{"alice@example.org"}, OldHosts: []string{"mx2"}, NewHosts: []string{"mx1"}})
	if !strings.Contains(r.log.String(), `msg="ldap watch: reconnected"`) || !strings.Contains(r.log.String(), "resume_cookie=true") {
		t.Errorf("no reconnect line with a cookie in the log:\n%s", r.log)
	}
}

// TestWatchPollFallback watches a slapd without syncprov: the watcher
// polls modifyTimestamp and lists DNs instead.
func TestWatchPollFallback(t *testing.T) {
	s := startWatchSlapd(t, false)
	const poll = 300 * time.Millisecond
	const list = time.Second
	r := startWatcher(t, s, &WatchOptions{PollInterval: poll, ListInterval: list})
	if got := r.w.Stats(); got.Mode != ModePoll || got.Entries != len(watchUsers) {
		t.Fatalf("stats = %+v, want mode %q and %d entries", got, ModePoll, len(watchUsers))
	}
	if !strings.Contains(r.log.String(), "offers no change feed") {
		t.Errorf("no fallback warning in the log:\n%s", r.log)
	}
	r.quiet(t, 2*poll, "after the first listing")

	// A poll interval plus a generous margin for a loaded machine.
	within := poll + 2*time.Second
	if err := s.SetHosts("alice@example.org", "mx3", "mx1"); err != nil {
		t.Fatal(err)
	}
	ch, took := timed(func() Change { return r.next(t, within, "polled host change") })
	t.Logf("polled host change reported in %v", took)
	expect(t, "polled host change", ch, Change{DN: s.UserDN("alice@example.org"), Logins: []string{"alice@example.org"},
		OldHosts: []string{"mx1"}, NewHosts: []string{"mx3", "mx1"}})

	if err := s.SetStatus("dave@example.org", "disabled"); err != nil {
		t.Fatal(err)
	}
	ch = r.next(t, within, "polled status change")
	expect(t, "polled status change", ch, Change{DN: s.UserDN("dave@example.org"), Logins: []string{"dave@example.org"},
		OldHosts: []string{"mx2"}, Deleted: true})

	carol := s.UserDN("carol@example.org")
	if err := s.Delete(carol); err != nil {
		t.Fatal(err)
	}
	ch, took = timed(func() Change { return r.next(t, list+poll+2*time.Second, "listed delete") })
	t.Logf("polled delete reported in %v", took)
	expect(t, "listed delete", ch, Change{DN: carol, Logins: []string{"carol@example.org"}, OldHosts: []string{"mx1"}, Deleted: true})
	r.quiet(t, 2*poll, "after the delete")
}

// TestWatchCookieRefused restores slapd's database from a backup taken
// before the watcher's last change: the watcher's cookie is then newer
// than the directory's state, slapd refuses it ("consumer state is newer
// than provider"), and the watcher falls back to a full refresh that
// reports the entry as the backup has it.
func TestWatchCookieRefused(t *testing.T) {
	s := startWatchSlapd(t, true)
	data := filepath.Join(s.Dir, "data")
	backup := filepath.Join(s.Dir, "data.backup")
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(backup, os.DirFS(data)); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	r := startWatcher(t, s, &WatchOptions{RetryMin: 100 * time.Millisecond, RetryMax: time.Second})
	if err := s.SetHosts("alice@example.org", "mx9"); err != nil {
		t.Fatal(err)
	}
	r.next(t, changeDeadline, "change before the restore")

	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(data); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(data, os.DirFS(backup)); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	ch := r.next(t, 10*time.Second, "change after the restore")
	expect(t, "change after the restore", ch, Change{DN: s.UserDN("alice@example.org"),
		Logins: []string{"alice@example.org"}, OldHosts: []string{"mx9"}, NewHosts: []string{"mx1"}})
	if !strings.Contains(r.log.String(), "refused the sync cookie") {
		t.Errorf("no refusal line in the log:\n%s", r.log)
	}
	r.quiet(t, 200*time.Millisecond, "after the full refresh")
	if err := s.SetHosts("bob@example.org", "mx4"); err != nil {
		t.Fatal(err)
	}
	ch = r.next(t, changeDeadline, "change after the full refresh")
	expect(t, "change after the full refresh", ch, Change{DN: s.UserDN("bob@example.org"),
		Logins: []string{"bob@example.org"}, OldHosts: []string{"mx2", "mx1"}, NewHosts: []string{"mx4"}})
}
