package webmail

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"switchboard/internal/testbed"
)

// Test bounds.
const (
	testTimeout      = 60 * time.Second       // one driver run
	logSettle        = 300 * time.Millisecond // Dovecot's log is written by its log process, a moment later
	logSettleTimeout = 5 * time.Second
	cacheIterations  = 10 // page requests of one user through a cache
)

// bed is the testbed the integration tests share, started by setup.
type bed struct {
	tb     *testbed.Testbed
	driver *Driver
	dir    string
}

// setup starts a testbed and checks php-cli and Roundcube's library.
func setup(t *testing.T) *bed {
	t.Helper()
	if testing.Short() {
		t.Skip("runs php-cli against real Dovecot; skipped with -short")
	}
	d := &Driver{}
	if err := d.Check(); err != nil {
		t.Fatalf("%v (run scripts/setup.sh)", err)
	}
	t.Cleanup(func() { d.Close() })
	tb, err := testbed.Start(testbed.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("testbed: %v", err)
	}
	t.Cleanup(func() { tb.Close() })
	return &bed{tb: tb, driver: d, dir: t.TempDir()}
}

// run drives n page requests of user through addr and fails the test
// if php could not run.
func (b *bed) run(t *testing.T, addr, user, auth string, n int) []Iteration {
	t.Helper()
	u, ok := b.tb.User(user)
	if !ok {
		t.Fatalf("no user %s", user)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	its, err := b.driver.Run(ctx, Target{Addr: addr, User: u.Mail, Password: u.Password, Auth: auth}, n)
	if err != nil {
		t.Fatalf("driver via %s: %v", addr, err)
	}
	return its
}

// logins returns user's login count on backend once its log has stopped
// growing.
func (b *bed) logins(t *testing.T, backend, user string) int {
	t.Helper()
	d := b.tb.Backends[backend]
	last, err := BackendLogins(d, user)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(logSettleTimeout)
	for time.Now().Before(deadline) {
		time.Sleep(logSettle)
		n, err := BackendLogins(d, user)
		if err != nil {
			t.Fatal(err)
		}
		if n == last {
			return n
		}
		last = n
	}
	return last
}

// checkMailbox fails unless every iteration succeeded and saw only
// user's own seeded messages.
func checkMailbox(t *testing.T, its []Iteration, user string) {
	t.Helper()
	for _, it := range its {
		if !it.OK || len(it.Errors) > 0 {
			t.Errorf("%s iteration %d: ok=%v errors %q", user, it.I, it.OK, it.Errors)
			continue
		}
		if len(it.Messages) != 3 || it.BodyBytes == 0 {
			t.Errorf("%s iteration %d: %d messages, body %d bytes; want 3 and a body", user, it.I, len(it.Messages), it.BodyBytes)
		}
		for _, m := range it.Messages {
			if !strings.HasSuffix(m.Subject, " for "+user) {
				t.Errorf("%s iteration %d saw %q", user, it.I, m.Subject)
			}
		}
	}
}

// directCommands is what one page request sends to Dovecot directly:
// AUTHENTICATE PLAIN (SASL-IR; the greeting's capabilities are trusted,
// the tagged OK carries the post-login ones), LIST (LIST-EXTENDED, with
// SUBSCRIBED), SELECT, SORT, UID FETCH of the headers, UID FETCH of one
// body, LOGOUT.
const directCommands = 7

// TestRoundcubeLibrary drives rcube_imap_generic against Dovecot directly,
// through up-imapproxy and through Switchboard's cached listener.
func TestRoundcubeLibrary(t *testing.T) {
	b := setup(t)
	mx1 := b.tb.Backends["mx1"]
	var direct []Iteration
	t.Run("direct", func(t *testing.T) {
		for _, tc := range []struct {
			user, auth string
		}{
			{"alice@example.org", AuthCheck},
			{"carol@example.org", AuthLogin}, // quotes, backslash, non-ASCII in LOGIN
			{"carol@example.org", AuthPlain},
		} {
			t.Run(tc.user+"/"+tc.auth, func(t *testing.T) {
				before := b.logins(t, "mx1", tc.user)
				its := b.run(t, mx1.IMAPAddr, tc.user, tc.auth, 3)
				checkMailbox(t, its, tc.user)
				for _, it := range its {
					if it.Commands != directCommands {
						t.Errorf("iteration %d sent %d commands, want %d", it.I, it.Commands, directCommands)
					}
					for _, c := range []string{"SORT", "LIST-EXTENDED", "ESEARCH"} {
						if !it.HasCapability(c) {
							t.Errorf("iteration %d: post-login capabilities %v lack %s", it.I, it.Capabilities, c)
						}
					}
					if it.HasCapability("AUTH=PLAIN") {
						t.Errorf("iteration %d kept the pre-login capabilities %v", it.I, it.Capabilities)
					}
				}
				if got := b.logins(t, "mx1", tc.user) - before; got != 3 {
					t.Errorf("backend logins = %d, want 3 (one per page request)", got)
				}
				if tc.auth == AuthCheck {
					direct = its
				}
			})
		}
		if direct != nil {
			t.Logf("roundcube classes loaded: %v", direct[0].Classes)
		}
	})
	if direct == nil {
		t.Fatal("no direct baseline")
	}

	t.Run("up-imapproxy", func(t *testing.T) {
		p, err := StartImapproxy(ImapproxyOptions{Dir: filepath.Join(b.dir, "imapproxy"), Backend: mx1.IMAPAddr})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Stop()
		user := "alice@example.org"
		before := b.logins(t, "mx1", user)
		its := b.run(t, p.Addr, user, AuthCheck, cacheIterations)
		checkMailbox(t, its, user)
		logins := b.logins(t, "mx1", user) - before
		if logins > 2 {
			t.Errorf("backend logins through up-imapproxy = %d for %d page requests, want ≤ 2", logins, cacheIterations)
		}
		// up-imapproxy's tagged OK carries no capabilities: the library
		// keeps the pre-login list, and sends other commands.
		t.Logf("up-imapproxy: %d backend logins for %d page requests; %d commands per request (direct %d); caps %v",
			logins, cacheIterations, its[len(its)-1].Commands, directCommands, its[len(its)-1].Capabilities)
		if its[len(its)-1].HasCapability("SORT") {
			t.Errorf("up-imapproxy passed on the post-login capabilities %v; the harness should see it does not", its[len(its)-1].Capabilities)
		}
	})

	t.Run("switchboard", func(t *testing.T) {
		b.testSwitchboard(t, direct[0])
	})
}

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// switchboardBinary builds cmd/switchboard once per test process.
func switchboardBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "switchboard-webmail-bin-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin, buildErr = BuildSwitchboard(context.Background(), dir)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

// testSwitchboard runs the cache checks against "switchboard serve".
func (b *bed) testSwitchboard(t *testing.T, direct Iteration) {
	bin := switchboardBinary(t)
	t.Cleanup(func() { os.RemoveAll(filepath.Dir(bin)) })
	sb, err := StartSwitchboard(SwitchboardOptions{Binary: bin, Dir: filepath.Join(b.dir, "switchboard"), Testbed: b.tb})
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Stop()
	defer func() {
		if t.Failed() {
			log, _ := sb.Log()
			t.Logf("switchboard log:\n%s", log)
		}
	}()
	ctx := context.Background()
	alice, carol, bob := "alice@example.org", "carol@example.org", "bob@example.org"

	t.Run("one user, ten page requests", func(t *testing.T) {
		before := b.logins(t, "mx1", alice)
		its := b.run(t, sb.WebmailAddr, alice, AuthCheck, cacheIterations)
		checkMailbox(t, its, alice)
		if got := b.logins(t, "mx1", alice) - before; got > 2 {
			t.Errorf("backend logins = %d for %d page requests, want ≤ 2", got, cacheIterations)
		}
		want := slices.Sorted(slices.Values(direct.Capabilities))
		for _, it := range its {
			if got := slices.Sorted(slices.Values(it.Capabilities)); !slices.Equal(got, want) {
				t.Errorf("iteration %d: post-login capabilities\n%v\nwant (direct Dovecot)\n%v", it.I, got, want)
			}
			if it.Commands != direct.Commands {
				t.Errorf("iteration %d sent %d commands, direct %d", it.I, it.Commands, direct.Commands)
			}
		}
		metrics, err := sb.Metrics(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if hits, _ := MetricValue(metrics, "switchboard_conncache_hits_total"); hits < cacheIterations-2 {
			t.Errorf("switchboard_conncache_hits_total = %v, want ≥ %d", hits, cacheIterations-2)
		}
		log, _ := sb.Log()
		if st := CacheStates(log); st["hit"] < cacheIterations-2 || st["miss"] < 1 {
			t.Errorf("session log cache states %v, want ≥ %d hits and a miss", st, cacheIterations-2)
		}
	})

	t.Run("users never see each other's mail", func(t *testing.T) {
		// alice and carol share mx1 (and their cached connections one
		// cache); bob lives on mx2. They run at the same time.
		var wg sync.WaitGroup
		results := make(map[string][]Iteration)
		var mu sync.Mutex
		for _, user := range []string{alice, carol, bob} {
			wg.Add(1)
			go runUser(t, b, sb.WebmailAddr, user, &wg, &mu, results)
		}
		wg.Wait()
		for user, its := range results {
			if len(its) != cacheIterations {
				t.Errorf("%s: %d iterations", user, len(its))
			}
			checkMailbox(t, its, user)
		}
	})

	t.Run("a wrong password is never a hit", func(t *testing.T) {
		its, err := b.driver.Run(ctx, Target{Addr: sb.WebmailAddr, User: alice, Password: "not-alice-secret"}, 1)
		if err != nil {
			t.Fatal(err)
		}
		if its[0].OK || len(its[0].Messages) > 0 {
			t.Errorf("wrong password through the cache: %+v", its[0])
		}
	})

	t.Run("a kick empties the cache", func(t *testing.T) {
		b.run(t, sb.WebmailAddr, alice, AuthCheck, 2) // something parked
		before := b.logins(t, "mx1", alice)
		if out, err := sb.Command(ctx, "invalidate", "-kick", alice); err != nil {
			t.Fatal(err)
		} else {
			t.Logf("invalidate: %s", strings.TrimSpace(out))
		}
		its := b.run(t, sb.WebmailAddr, alice, AuthCheck, 1)
		checkMailbox(t, its, alice)
		if got := b.logins(t, "mx1", alice) - before; got != 1 {
			t.Errorf("backend logins after the kick = %d, want 1 (a new login)", got)
		}
		metrics, err := sb.Metrics(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if v, ok := MetricValue(metrics, `switchboard_conncache_evictions_total{reason="dropped"}`); !ok || v < 1 {
			t.Errorf(`evictions{reason="dropped"} = %v (present %v), want ≥ 1`, v, ok)
		}
	})
}

// runUser is the goroutine that drives one user's page requests for the
// isolation test.
func runUser(t *testing.T, b *bed, addr, user string, wg *sync.WaitGroup, mu *sync.Mutex, results map[string][]Iteration) {
	defer wg.Done()
	u, _ := b.tb.User(user)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	its, err := b.driver.Run(ctx, Target{Addr: addr, User: u.Mail, Password: u.Password}, cacheIterations)
	if err != nil {
		t.Error(fmt.Errorf("%s: %w", user, err))
	}
	mu.Lock()
	results[user] = its
	mu.Unlock()
}
