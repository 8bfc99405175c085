package ldapmap

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"switchboard/internal/testbed"
	"switchboard/route"
)

// These tests run against a real slapd started by internal/testbed on a
// loopback address. Only -short skips them.

// startSlapd starts a slapd for one test and seeds the test users.
func startSlapd(t *testing.T) *testbed.Slapd {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test against slapd; skipped with -short")
	}
	return startSlapdWith(t, testbed.SlapdOptions{Dir: t.TempDir()})
}

// startSlapdWith is startSlapd with options.
func startSlapdWith(t *testing.T, opts testbed.SlapdOptions) *testbed.Slapd {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test against slapd; skipped with -short")
	}
	s, err := testbed.StartSlapd(opts)
	if err != nil {
		t.Fatalf("start slapd: %v", err)
	}
	t.Cleanup(func() { s.Stop() })
	users := []testbed.User{
		// Hosts deliberately out of sort order: the answer must keep the
		// order they were added in.
		{Mail: "alice@example.org", Password: "x", Hosts: []string{"mx2", "mx1", "mx3"}},
		{Mail: "bob@example.org", Password: "x", Hosts: []string{"mx1"}},
		{Mail: "disabled@example.org", Password: "x", Hosts: []string{"mx1"}, Status: "disabled"},
		{Mail: "nohost@example.org", Password: "x"},
		{Mail: "dup@example.org", Password: "x", Hosts: []string{"mx1"}},
		{Mail: "*", Password: "x", Hosts: []string{"star"}},
	}
	if err := s.AddUsers(users...); err != nil {
		t.Fatalf("add users: %v", err)
	}
	// A second entry with the same mail, under another RDN.
	err = s.Add(fmt.Sprintf(`dn: uid=dup2,%s
objectClass: top
objectClass: inetOrgPerson
objectClass: switchboardUser
cn: dup2
sn: dup2
uid: dup2
mail: dup@example.org
host: mx2
status: active
`, s.PeopleDN))
	if err != nil {
		t.Fatalf("add duplicate: %v", err)
	}
	return s
}

// lockedBuffer is a goroutine-safe log sink.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// slapdOptions returns Options for s with the service account, logging to
// logs.
func slapdOptions(s *testbed.Slapd, logs *lockedBuffer) Options {
	return Options{
		URIs:         []string{s.URI},
		BindDN:       s.BindDN,
		BindPassword: Secret(s.BindPassword),
		BaseDN:       s.PeopleDN,
		Logger:       slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

// caConfig returns a TLS client config trusting only the testbed CA.
func caConfig(t *testing.T, s *testbed.Slapd) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(s.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("no certificate in", s.CAFile)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// closedPortURI returns an ldap:// URI on which nothing listens.
func closedPortURI(t *testing.T) string {
	t.Helper()
	ip := testbed.AllocIP()
	port, err := testbed.FreePort(ip)
	if err != nil {
		t.Fatal(err)
	}
	return "ldap://" + net.JoinHostPort(ip, strconv.Itoa(port))
}

// checkNoPassword fails if the service account's password is in logs.
func checkNoPassword(t *testing.T, s *testbed.Slapd, logs *lockedBuffer) {
	t.Helper()
	if strings.Contains(logs.String(), s.BindPassword) {
		t.Error("bind password appears in the log")
	}
}

func TestIntegrationLookup(t *testing.T) {
	s := startSlapd(t)
	logs := &lockedBuffer{}
	l := newTestLDAP(t, slapdOptions(s, logs))
	ctx := context.Background()

	tests := []struct {
		name, user string
		hosts      []string // nil: want wantErr
		wantErr    error
	}{
		{"hosts in insertion order", "alice@example.org", []string{"mx2", "mx1", "mx3"}, nil},
		{"case-insensitive mail", "Alice@EXAMPLE.org", []string{"mx2", "mx1", "mx3"}, nil},
		{"single host", "bob@example.org", []string{"mx1"}, nil},
		{"unknown", "nobody@example.org", nil, route.ErrUnknownUser},
		{"status not active", "disabled@example.org", nil, route.ErrUnknownUser},
		{"no host", "nohost@example.org", nil, route.ErrNoHost},
		{"two entries", "dup@example.org", nil, route.ErrAmbiguous},
		{"star matches only the literal star", "*", []string{"star"}, nil},
		{"star suffix", "al*", nil, route.ErrUnknownUser},
		{"filter break-out", ")(mail=*", nil, route.ErrUnknownUser},
		{"status override", "disabled@example.org)(status=*", nil, route.ErrUnknownUser},
		{"or injection", "x)(|(mail=*)", nil, route.ErrUnknownUser},
		{"nul", "alice@example.org\x00", nil, route.ErrUnknownUser},
		{"non-ascii", "jörg@example.org", nil, route.ErrUnknownUser},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := l.Lookup(ctx, tt.user)
			if tt.hosts == nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Lookup(%q) = %+v, %v; want %v", tt.user, res, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Lookup(%q): %v", tt.user, err)
			}
			if !slices.Equal(res.Hosts, tt.hosts) {
				t.Errorf("Hosts = %q, want %q", res.Hosts, tt.hosts)
			}
			if res.Source != "ldap" || res.DN == "" || time.Since(res.Fetched) > time.Minute {
				t.Errorf("Result %+v: want Source ldap, a DN and a recent Fetched", res)
			}
		})
	}

	// The ambiguous entry is logged loudly, with both DNs.
	out := logs.String()
	for _, dn := range []string{s.UserDN("dup@example.org"), "uid=dup2," + s.PeopleDN} {
		if !strings.Contains(out, dn) {
			t.Errorf("log does not name %s:\n%s", dn, out)
		}
	}
	if !strings.Contains(out, "level=ERROR") {
		t.Errorf("ambiguous entry not logged at error level:\n%s", out)
	}

	// A change in the directory shows at the next lookup (no cache here).
	if err := s.SetHosts("bob@example.org", "mx3", "mx1"); err != nil {
		t.Fatal(err)
	}
	if res, err := l.Lookup(ctx, "bob@example.org"); err != nil || !slices.Equal(res.Hosts, []string{"mx3", "mx1"}) {
		t.Errorf("after SetHosts: %+v, %v; want [mx3 mx1]", res, err)
	}
	if err := s.SetStatus("bob@example.org", "disabled"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Lookup(ctx, "bob@example.org"); !errors.Is(err, route.ErrUnknownUser) {
		t.Errorf("after SetStatus disabled: %v; want ErrUnknownUser", err)
	}
	checkNoPassword(t, s, logs)
}

func TestIntegrationFilterVerbs(t *testing.T) {
	s := startSlapd(t)
	logs := &lockedBuffer{}
	o := slapdOptions(s, logs)
	o.Filter = "(&(objectClass=switchboardUser)(mail=%u@%d)(status=active))"
	o.Scope = ScopeOneLevel
	l := newTestLDAP(t, o)
	res, err := l.Lookup(context.Background(), "alice@example.org")
	if err != nil || !slices.Equal(res.Hosts, []string{"mx2", "mx1", "mx3"}) {
		t.Errorf("Lookup = %+v, %v", res, err)
	}
	if _, err := l.Lookup(context.Background(), "alice"); !errors.Is(err, route.ErrUnknownUser) {
		t.Errorf("Lookup without domain = %v, want ErrUnknownUser", err)
	}
}

func TestIntegrationConcurrent(t *testing.T) {
	s := startSlapd(t)
	o := slapdOptions(s, &lockedBuffer{})
	o.PoolSize = 2
	l := newTestLDAP(t, o)
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		user := "alice@example.org"
		if i%3 == 0 {
			user = "nobody@example.org"
		}
		go concurrentLookup(&wg, l, user, errs)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// concurrentLookup checks one answer from the seeded directory.
func concurrentLookup(wg *sync.WaitGroup, l *LDAP, user string, errs chan<- error) {
	defer wg.Done()
	res, err := l.Lookup(context.Background(), user)
	switch {
	case user == "nobody@example.org" && !errors.Is(err, route.ErrUnknownUser):
		errs <- fmt.Errorf("Lookup(%q) = %v, want ErrUnknownUser", user, err)
	case user == "alice@example.org" && (err != nil || len(res.Hosts) != 3):
		errs <- fmt.Errorf("Lookup(%q) = %+v, %v", user, res, err)
	}
}

func TestIntegrationFailover(t *testing.T) {
	s := startSlapd(t)
	logs := &lockedBuffer{}
	o := slapdOptions(s, logs)
	o.URIs = []string{closedPortURI(t), s.URI}
	l := newTestLDAP(t, o)
	ctx := context.Background()
	for i := range 3 {
		start := time.Now()
		res, err := l.Lookup(ctx, "alice@example.org")
		if err != nil || res.Hosts[0] != "mx2" {
			t.Fatalf("lookup %d: %+v, %v", i, res, err)
		}
		t.Logf("lookup %d: %v", i, time.Since(start))
	}
	if l.servers[0].downUntil.Load() == 0 {
		t.Error("closed port not marked down")
	}
	if !strings.Contains(logs.String(), "ldap server down") {
		t.Errorf("no log line for the down server:\n%s", logs)
	}
}

func TestIntegrationTLS(t *testing.T) {
	s := startSlapd(t)
	tests := []struct {
		name    string
		modify  func(*Options)
		wantErr error
	}{
		{"ldaps", func(o *Options) { o.URIs = []string{s.LDAPSURI}; o.TLSConfig = caConfig(t, s) }, nil},
		{"starttls", func(o *Options) { o.StartTLS = true; o.TLSConfig = caConfig(t, s) }, nil},
		{"ldaps with system roots", func(o *Options) { o.URIs = []string{s.LDAPSURI} }, route.ErrUnavailable},
		{"starttls with system roots", func(o *Options) { o.StartTLS = true }, route.ErrUnavailable},
		{"ldaps wrong server name", func(o *Options) {
			o.URIs = []string{s.LDAPSURI}
			o.TLSConfig = caConfig(t, s)
			o.TLSConfig.ServerName = "ldap.elsewhere.example"
		}, route.ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs := &lockedBuffer{}
			o := slapdOptions(s, logs)
			tt.modify(&o)
			l := newTestLDAP(t, o)
			res, err := l.Lookup(context.Background(), "alice@example.org")
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Lookup = %+v, %v; want %v", res, err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), "certificate") {
					t.Errorf("error %q does not say why", err)
				}
				return
			}
			if err != nil || !slices.Equal(res.Hosts, []string{"mx2", "mx1", "mx3"}) {
				t.Fatalf("Lookup = %+v, %v", res, err)
			}
			checkNoPassword(t, s, logs)
		})
	}
}

func TestIntegrationBadBind(t *testing.T) {
	s := startSlapd(t)
	logs := &lockedBuffer{}
	o := slapdOptions(s, logs)
	const wrong = "wrong-Pa55word-xyz"
	o.BindPassword = wrong
	l := newTestLDAP(t, o)
	_, err := l.Lookup(context.Background(), "alice@example.org")
	if !errors.Is(err, route.ErrUnavailable) {
		t.Fatalf("Lookup = %v, want ErrUnavailable", err)
	}
	if !strings.Contains(err.Error(), "Invalid Credentials") {
		t.Errorf("error %q does not say why", err)
	}
	if strings.Contains(err.Error(), wrong) || strings.Contains(logs.String(), wrong) {
		t.Error("password in the error or the log")
	}
}

// TestIntegrationDownAndRecovery stops slapd under a Cache that serves
// stale answers, checks that lookups fail fast and that the stale answer
// is served, then restarts slapd and checks recovery.
func TestIntegrationDownAndRecovery(t *testing.T) {
	s := startSlapd(t)
	logs := &lockedBuffer{}
	o := slapdOptions(s, logs)
	o.DialTimeout = 2 * time.Second
	o.RetryDownAfter = 500 * time.Millisecond
	l := newTestLDAP(t, o)
	clock := newFakeClock()
	c := NewCache(l, &CacheOptions{TTL: time.Minute, ServeStale: true, Now: clock.Now})
	ctx := context.Background()

	if res, err := c.Lookup(ctx, "alice@example.org"); err != nil || res.Source != "ldap" {
		t.Fatalf("first lookup: %+v, %v", res, err)
	}
	if res, err := c.Lookup(ctx, "alice@example.org"); err != nil || res.Source != "cache" {
		t.Fatalf("second lookup: %+v, %v; want from cache", res, err)
	}

	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := l.Lookup(ctx, "bob@example.org")
	first := time.Since(start)
	if !errors.Is(err, route.ErrUnavailable) {
		t.Fatalf("lookup with slapd stopped: %v, want ErrUnavailable", err)
	}
	if limit := o.DialTimeout + time.Second; first > limit {
		t.Errorf("lookup with slapd stopped took %v, want under %v", first, limit)
	}
	if l.servers[0].downUntil.Load() == 0 {
		t.Fatal("stopped slapd not marked down")
	}
	start = time.Now()
	_, err = l.Lookup(ctx, "bob@example.org")
	second := time.Since(start)
	if !errors.Is(err, route.ErrUnavailable) {
		t.Fatalf("second lookup with slapd stopped: %v, want ErrUnavailable", err)
	}
	t.Logf("slapd stopped: first lookup %v, second %v (marked down)", first, second)
	if second > 20*time.Millisecond && second > first {
		t.Errorf("second lookup took %v, first %v: the down mark did not help", second, first)
	}

	// Past its TTL, the cached answer is served stale while slapd is down.
	clock.Add(2 * time.Minute)
	res, err := c.Lookup(ctx, "alice@example.org")
	if err != nil || res.Source != "stale" || !slices.Equal(res.Hosts, []string{"mx2", "mx1", "mx3"}) {
		t.Fatalf("lookup with slapd down: %+v, %v; want stale [mx2 mx1 mx3]", res, err)
	}
	if _, err := c.Lookup(ctx, "bob@example.org"); !errors.Is(err, route.ErrUnavailable) {
		t.Errorf("uncached user with slapd down: %v, want ErrUnavailable", err)
	}
	if st := c.Stats(); st.StaleServed != 1 {
		t.Errorf("StaleServed = %d, want 1", st.StaleServed)
	}

	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		res, err = c.Lookup(ctx, "alice@example.org")
		if err == nil && res.Source == "ldap" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery after slapd restart: %+v, %v", res, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if res, err := c.Lookup(ctx, "alice@example.org"); err != nil || res.Source != "cache" {
		t.Errorf("after recovery: %+v, %v; want from cache", res, err)
	}
	if !strings.Contains(logs.String(), "ldap server up") {
		t.Errorf("no log line for recovery:\n%s", logs)
	}
	checkNoPassword(t, s, logs)
}

// TestIntegrationFailback checks failover to the second server when the
// first stops, and that lookups go back to the first once it is up again.
func TestIntegrationFailback(t *testing.T) {
	const pw = "shared-service-Pa55"
	primary := startSlapdWith(t, testbed.SlapdOptions{Dir: t.TempDir(), BindPassword: pw})
	standby := startSlapdWith(t, testbed.SlapdOptions{Dir: t.TempDir(), BindPassword: pw})
	if err := standby.SetHosts("alice@example.org", "standby"); err != nil {
		t.Fatal(err)
	}
	o := slapdOptions(primary, &lockedBuffer{})
	o.URIs = []string{primary.URI, standby.URI}
	o.RetryDownAfter = 300 * time.Millisecond
	o.PoolSize = 1
	l := newTestLDAP(t, o)
	ctx := context.Background()
	first := func() string {
		t.Helper()
		res, err := l.Lookup(ctx, "alice@example.org")
		if err != nil {
			t.Fatalf("Lookup: %v", err)
		}
		return res.Hosts[0]
	}
	if h := first(); h != "mx2" {
		t.Fatalf("answer from %s, want the primary's mx2", h)
	}
	if err := primary.Stop(); err != nil {
		t.Fatal(err)
	}
	if h := first(); h != "standby" {
		t.Fatalf("with the primary stopped: %s, want standby", h)
	}
	if err := primary.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for first() != "mx2" {
		if time.Now().After(deadline) {
			t.Fatal("no fail back to the primary")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestIntegrationMissingBase checks that a search base that does not
// exist is an outage (logged), not a directory full of unknown users.
func TestIntegrationMissingBase(t *testing.T) {
	s := startSlapd(t)
	logs := &lockedBuffer{}
	o := slapdOptions(s, logs)
	o.BaseDN = "ou=nowhere," + s.BaseDN
	l := newTestLDAP(t, o)
	start := time.Now()
	_, err := l.Lookup(context.Background(), "alice@example.org")
	t.Logf("lookup took %v", time.Since(start))
	if !errors.Is(err, route.ErrUnavailable) || errors.Is(err, route.ErrUnknownUser) {
		t.Fatalf("Lookup = %v, want ErrUnavailable", err)
	}
	if !strings.Contains(logs.String(), "No Such Object") {
		t.Errorf("not logged:\n%s", logs)
	}
	if l.servers[0].downUntil.Load() != 0 {
		t.Error("server marked down for a result code")
	}
}

func BenchmarkIntegrationLookup(b *testing.B) {
	if testing.Short() {
		b.Skip("needs slapd")
	}
	s, err := testbed.StartSlapd(testbed.SlapdOptions{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Stop()
	if err := s.AddUsers(testbed.User{Mail: "alice@example.org", Password: "x", Hosts: []string{"mx1", "mx2"}}); err != nil {
		b.Fatal(err)
	}
	l, err := NewLDAP(&Options{URIs: []string{s.URI}, BindDN: s.BindDN, BindPassword: Secret(s.BindPassword),
		BaseDN: s.PeopleDN, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := l.Lookup(ctx, "alice@example.org"); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
