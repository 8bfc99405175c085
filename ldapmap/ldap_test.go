package ldapmap

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"switchboard/route"
)

const testPassword = "s3cret-Pa55word"

func TestSecretNeverPrints(t *testing.T) {
	opts := Options{URIs: []string{"ldap://127.0.0.1:1"}, BindDN: "cn=x", BindPassword: testPassword}
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	log.Info("options", "opts", opts, "pw", opts.BindPassword)
	log.Info("options", slog.Any("opts", &opts))
	j, err := json.Marshal(opts)
	if err != nil {
		t.Fatal(err)
	}
	outputs := []string{
		fmt.Sprint(opts.BindPassword),
		fmt.Sprintf("%v %+v %#v %s %q %x %X %d", opts.BindPassword, opts.BindPassword, opts.BindPassword,
			opts.BindPassword, opts.BindPassword, opts.BindPassword, opts.BindPassword, opts.BindPassword),
		fmt.Sprintf("%v %+v %#v", opts, opts, opts),
		fmt.Sprintf("%v %+v", &opts, &opts),
		string(j),
		logs.String(),
	}
	for _, out := range outputs {
		if strings.Contains(out, testPassword) || strings.Contains(out, fmt.Sprintf("%x", testPassword)) {
			t.Errorf("password printed: %s", out)
		}
	}
	if !strings.Contains(outputs[0], "***") {
		t.Errorf("Secret prints as %q, want ***", outputs[0])
	}
}

func TestNewLDAPErrors(t *testing.T) {
	valid := func() Options {
		return Options{URIs: []string{"ldap://127.0.0.1:1"}, BaseDN: "dc=example,dc=org",
			BindDN: "cn=svc,dc=example,dc=org", BindPassword: testPassword}
	}
	tests := []struct {
		name   string
		modify func(*Options)
		want   string // "" means success
	}{
		{"valid", func(*Options) {}, ""},
		{"valid anonymous", func(o *Options) { o.BindDN, o.BindPassword = "", "" }, ""},
		{"valid ldaps", func(o *Options) { o.URIs = []string{"ldaps://ldap.example.org"} }, ""},
		{"valid starttls", func(o *Options) { o.StartTLS = true }, ""},
		{"no uris", func(o *Options) { o.URIs = nil }, "no URIs"},
		{"bad scheme", func(o *Options) { o.URIs = []string{"http://x"} }, "scheme must be ldap or ldaps"},
		{"no host", func(o *Options) { o.URIs = []string{"ldap://"} }, "no host"},
		{"url with dn", func(o *Options) { o.URIs = []string{"ldap://h/dc=example,dc=org?mail"} }, "only scheme, host and port"},
		{"starttls on ldaps", func(o *Options) { o.URIs = []string{"ldaps://h"}; o.StartTLS = true }, "StartTLS with ldaps"},
		{"insecure", func(o *Options) { o.TLSConfig = &tls.Config{InsecureSkipVerify: true} }, "InsecureSkipVerify"},
		{"dn without password", func(o *Options) { o.BindPassword = "" }, "empty BindPassword"},
		{"password without dn", func(o *Options) { o.BindDN = "" }, "without BindDN"},
		{"bad bind dn", func(o *Options) { o.BindDN = "not a dn" }, "BindDN"},
		{"no base", func(o *Options) { o.BaseDN = "" }, "no BaseDN"},
		{"bad filter", func(o *Options) { o.Filter = "(mail=%s" }, "filter template"},
		{"filter without login", func(o *Options) { o.Filter = "(mail=x)" }, "no %s"},
		{"bad attribute", func(o *Options) { o.Attribute = "host)(x" }, "Attribute"},
		{"bad scope", func(o *Options) { o.Scope = 7 }, "Scope"},
		{"negative pool", func(o *Options) { o.PoolSize = -1 }, "PoolSize"},
		{"negative timeout", func(o *Options) { o.Timeout = -time.Second }, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := valid()
			tt.modify(&o)
			l, err := NewLDAP(&o)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("NewLDAP: %v", err)
				}
				l.Close()
				return
			}
			if err == nil {
				t.Fatalf("NewLDAP succeeded, want error with %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), testPassword) {
				t.Errorf("error contains the password: %v", err)
			}
		})
	}
}

func TestNewLDAPJoinsErrors(t *testing.T) {
	_, err := NewLDAP(&Options{Filter: "x"})
	if err == nil {
		t.Fatal("NewLDAP succeeded")
	}
	for _, want := range []string{"no URIs", "no BaseDN", "filter template"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// fakeServer is a loopback TCP listener that counts connections and does
// what its handler says with each: it is not LDAP, just enough to make
// the client fail in known ways.
type fakeServer struct {
	ln      net.Listener
	accepts atomic.Int32
	handle  func(net.Conn)
	wg      sync.WaitGroup
}

func newFakeServer(t *testing.T, handle func(net.Conn)) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fs := &fakeServer{ln: ln, handle: handle}
	fs.wg.Add(1)
	go fs.serve()
	t.Cleanup(func() {
		ln.Close()
		fs.wg.Wait()
	})
	return fs
}

func (fs *fakeServer) serve() {
	defer fs.wg.Done()
	for {
		c, err := fs.ln.Accept()
		if err != nil {
			return
		}
		fs.accepts.Add(1)
		fs.wg.Add(1)
		go fs.serveConn(c)
	}
}

func (fs *fakeServer) serveConn(c net.Conn) {
	defer fs.wg.Done()
	fs.handle(c)
}

func (fs *fakeServer) uri() string { return "ldap://" + fs.ln.Addr().String() }

// hangUp closes the connection at once.
func hangUp(c net.Conn) { c.Close() }

// stall reads and never answers, until the client goes away.
func stall(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 512)
	for {
		if _, err := c.Read(buf); err != nil {
			return
		}
	}
}

func newTestLDAP(t *testing.T, o Options) *LDAP {
	t.Helper()
	if o.BaseDN == "" {
		o.BaseDN = "ou=people,dc=example,dc=org"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	l, err := NewLDAP(&o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestLookupInvalidLoginAsksNobody(t *testing.T) {
	fs := newFakeServer(t, hangUp)
	l := newTestLDAP(t, Options{URIs: []string{fs.uri()}})
	for _, user := range []string{"", "a\x00b", "a\nb", "\xff", strings.Repeat("x", 400)} {
		_, err := l.Lookup(context.Background(), user)
		if !errors.Is(err, route.ErrUnknownUser) {
			t.Errorf("Lookup(%q) = %v, want ErrUnknownUser", user, err)
		}
	}
	l2 := newTestLDAP(t, Options{URIs: []string{fs.uri()}, Filter: "(&(uid=%u)(domain=%d))"})
	if _, err := l2.Lookup(context.Background(), "nodomain"); !errors.Is(err, route.ErrUnknownUser) {
		t.Errorf("Lookup without domain = %v, want ErrUnknownUser", err)
	}
	if n := fs.accepts.Load(); n != 0 {
		t.Errorf("server saw %d connections, want 0", n)
	}
}

// TestLookupMarksDown checks that a server that drops connections is
// marked down after one lookup, that lookups then fail without dialing,
// and that it is tried again after RetryDownAfter.
func TestLookupMarksDown(t *testing.T) {
	fs := newFakeServer(t, hangUp)
	const retry = 300 * time.Millisecond
	l := newTestLDAP(t, Options{URIs: []string{fs.uri()}, RetryDownAfter: retry})
	ctx := context.Background()

	_, err := l.Lookup(ctx, "alice@example.org")
	if !errors.Is(err, route.ErrUnavailable) {
		t.Fatalf("first Lookup = %v, want ErrUnavailable", err)
	}
	first := fs.accepts.Load()
	if first == 0 {
		t.Fatal("server saw no connection")
	}
	for range 5 {
		if _, err := l.Lookup(ctx, "alice@example.org"); !errors.Is(err, route.ErrUnavailable) {
			t.Fatalf("Lookup = %v, want ErrUnavailable", err)
		}
	}
	if n := fs.accepts.Load(); n != first {
		t.Errorf("server saw %d connections while marked down, want %d", n, first)
	}
	time.Sleep(retry + 50*time.Millisecond)
	l.Lookup(ctx, "alice@example.org")
	if n := fs.accepts.Load(); n == first {
		t.Error("server not retried after RetryDownAfter")
	}
}

// TestLookupTimeout checks that a server that never answers costs one
// search timeout, fails over to the next URI, and is then skipped.
func TestLookupTimeout(t *testing.T) {
	hung := newFakeServer(t, stall)
	dead := newFakeServer(t, hangUp)
	const timeout = 400 * time.Millisecond
	l := newTestLDAP(t, Options{URIs: []string{hung.uri(), dead.uri()}, Timeout: timeout})
	ctx := context.Background()

	start := time.Now()
	_, err := l.Lookup(ctx, "alice@example.org")
	took := time.Since(start)
	if !errors.Is(err, route.ErrUnavailable) {
		t.Fatalf("Lookup = %v, want ErrUnavailable", err)
	}
	if took < timeout || took > timeout+time.Second {
		t.Errorf("Lookup took %v, want about %v", took, timeout)
	}
	if dead.accepts.Load() == 0 {
		t.Error("second URI not tried")
	}
	start = time.Now()
	if _, err := l.Lookup(ctx, "alice@example.org"); !errors.Is(err, route.ErrUnavailable) {
		t.Fatalf("second Lookup = %v, want ErrUnavailable", err)
	}
	if took := time.Since(start); took > timeout/2 {
		t.Errorf("second Lookup took %v with both servers marked down", took)
	}
}

// TestLookupContextCancel checks that a caller's context ends a search on
// a server that does not answer, and that the server is not marked down
// for it.
func TestLookupContextCancel(t *testing.T) {
	hung := newFakeServer(t, stall)
	l := newTestLDAP(t, Options{URIs: []string{hung.uri()}, Timeout: 10 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := l.Lookup(ctx, "alice@example.org")
	if !errors.Is(err, route.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lookup = %v, want ErrUnavailable and DeadlineExceeded", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("Lookup took %v after a 100ms context", took)
	}
	if l.servers[0].downUntil.Load() != 0 {
		t.Error("server marked down because the caller gave up")
	}
}

// TestDialTimeoutBind checks that a server that accepts but never answers
// the bind costs DialTimeout, not go-ldap's 60s default.
func TestDialTimeoutBind(t *testing.T) {
	hung := newFakeServer(t, stall)
	const dt = 200 * time.Millisecond
	l := newTestLDAP(t, Options{URIs: []string{hung.uri()}, DialTimeout: dt,
		BindDN: "cn=svc,dc=example,dc=org", BindPassword: testPassword})
	start := time.Now()
	_, err := l.Lookup(context.Background(), "alice@example.org")
	if !errors.Is(err, route.ErrUnavailable) {
		t.Fatalf("Lookup = %v, want ErrUnavailable", err)
	}
	if took := time.Since(start); took > dt+time.Second {
		t.Errorf("Lookup took %v with DialTimeout %v", took, dt)
	}
	if strings.Contains(err.Error(), testPassword) {
		t.Errorf("error contains the password: %v", err)
	}
}

func TestLookupAfterClose(t *testing.T) {
	fs := newFakeServer(t, hangUp)
	l := newTestLDAP(t, Options{URIs: []string{fs.uri()}})
	l.Close()
	if _, err := l.Lookup(context.Background(), "alice@example.org"); !errors.Is(err, route.ErrUnavailable) {
		t.Fatalf("Lookup after Close = %v, want ErrUnavailable", err)
	}
}

// TestSearchOnClosedConn pins down why search checks IsClosing: go-ldap's
// SearchAsync on a closing connection ends with no entries and no error,
// which must not read as "no such user".
func TestSearchOnClosedConn(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	c := ldap.NewConn(client, false)
	c.Start()
	c.Close()

	resp := c.SearchAsync(context.Background(), &ldap.SearchRequest{BaseDN: "dc=x", Filter: "(mail=x)"}, 1)
	if next := resp.Next(); next || resp.Err() != nil {
		t.Logf("go-ldap now reports a closed connection (Next %v, Err %v): the IsClosing checks in search are belt and braces", next, resp.Err())
	}

	fs := newFakeServer(t, hangUp)
	l := newTestLDAP(t, Options{URIs: []string{fs.uri()}})
	_, err := l.search(context.Background(), c, &ldap.SearchRequest{BaseDN: "dc=x", Filter: "(mail=x)", Attributes: l.attrs})
	var se *searchError
	if !errors.As(err, &se) || se.kind != failConn {
		t.Fatalf("search on a closed connection = %v, want a connection failure", err)
	}
	if errors.Is(err, route.ErrUnknownUser) {
		t.Fatal("closed connection read as unknown user")
	}
}

// TestCheckURI checks the exported URI check the configuration uses, and
// that NewLDAP refuses exactly what it refuses.
func TestCheckURI(t *testing.T) {
	tests := []struct{ uri, want string }{
		{"ldap://127.0.0.1", ""},
		{"ldaps://ldap.example.org:636", ""},
		{"ldap://[::1]:389/", ""},
		{"http://ldap.example.org", `"http://ldap.example.org": scheme must be ldap or ldaps`},
		{"ldaps://", `"ldaps://": no host`},
		{"ldaps://h/dc=example,dc=org", `"ldaps://h/dc=example,dc=org": only scheme, host and port`},
		{"ldap://h?mail", `"ldap://h?mail": only scheme, host and port`},
		{"ldap://h:0", `"ldap://h:0": port must be 1-65535`},
		{"ldap://h:65536", `"ldap://h:65536": port must be 1-65535`},
		{"ldap://h:x", `"ldap://h:x": `},
	}
	for _, tt := range tests {
		err := CheckURI(tt.uri)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("CheckURI(%q) = %v, want nil", tt.uri, err)
		case tt.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.want)):
			t.Errorf("CheckURI(%q) = %v, want an error starting %q", tt.uri, err, tt.want)
		}
		l, nerr := NewLDAP(&Options{URIs: []string{tt.uri}, BaseDN: "dc=example,dc=org"})
		if nerr == nil {
			l.Close()
		}
		if (nerr == nil) != (err == nil) {
			t.Errorf("NewLDAP with %q: %v, CheckURI: %v: the verdicts differ", tt.uri, nerr, err)
		}
	}
}

func TestValidAttribute(t *testing.T) {
	tests := []struct {
		attr string
		want bool
	}{
		{"host", true},
		{"mailHost", true},
		{"x-host-2", true},
		{"2.5.4.3", true},
		{"host;lang-en", true},
		{"", false},
		{"-host", false},
		{".1", false},
		{";x", false},
		{"ho st", false},
		{"host)(x", false},
		{"hôst", false},
	}
	for _, tt := range tests {
		if got := ValidAttribute(tt.attr); got != tt.want {
			t.Errorf("ValidAttribute(%q) = %v, want %v", tt.attr, got, tt.want)
		}
	}
}

// TestOptionsDefaults checks that zero Options and CacheOptions get the
// exported defaults, which the configuration fills in and documents.
func TestOptionsDefaults(t *testing.T) {
	var o Options
	if o.poolSize() != DefaultPoolSize || o.dialTimeout() != DefaultDialTimeout || o.timeout() != DefaultTimeout ||
		o.retryDownAfter() != DefaultRetryDownAfter || o.attribute() != DefaultAttribute || o.filter() != DefaultFilter {
		t.Errorf("zero Options: pool %d, dial %v, timeout %v, retry %v, attribute %q, filter %q; want the Default constants",
			o.poolSize(), o.dialTimeout(), o.timeout(), o.retryDownAfter(), o.attribute(), o.filter())
	}
	if err := CheckFilter(DefaultFilter); err != nil {
		t.Errorf("DefaultFilter: %v", err)
	}
	if !ValidAttribute(DefaultAttribute) {
		t.Errorf("DefaultAttribute %q is not valid", DefaultAttribute)
	}
	c := NewCache(nil, &CacheOptions{})
	if c.ttl != DefaultCacheTTL || c.negTTL != DefaultNegativeTTL {
		t.Errorf("zero CacheOptions: ttl %v, negative %v; want %v, %v", c.ttl, c.negTTL, DefaultCacheTTL, DefaultNegativeTTL)
	}
}
