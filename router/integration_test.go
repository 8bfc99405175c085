package router_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	proxyproto "github.com/pires/go-proxyproto"

	"switchboard/internal/testbed"
	"switchboard/ldapmap"
	"switchboard/route"
	"switchboard/router"
)

// env is one testbed (slapd, Dovecot mx1 and mx2) with a Switchboard in
// front of it, shared by the integration tests of this package.
type env struct {
	tb      *testbed.Testbed
	srv     *router.Server
	cache   *ldapmap.Cache
	hosts   *route.HostMap
	logs    *syncBuffer
	clientT *tls.Config
	// listener addresses
	imap, imaps, pop3, pop3s string
	// trustedIP is a loopback source address in TrustedNets; clients
	// dialling from elsewhere on loopback are untrusted.
	trustedIP string
	down      map[string]bool
	downMu    sync.Mutex
}

var (
	envOnce sync.Once
	theEnv  *env
	envErr  error
)

const testFailDelay = 300 * time.Millisecond

// standbyUser lives on a dead primary and a live standby (mx1).
var standbyUser = testbed.User{Mail: "erin@example.org", Password: "erin-pw", Hosts: []string{"mxdead", "mx1"}}

func getEnv(t testing.TB) *env {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: needs slapd and Dovecot (skipped with -short)")
	}
	if err := testbed.Check(); err != nil {
		t.Fatalf("integration test prerequisites: %v", err)
	}
	envOnce.Do(func() { theEnv, envErr = startEnv() })
	if envErr != nil {
		t.Fatalf("starting the testbed: %v", envErr)
	}
	return theEnv
}

func TestMain(m *testing.M) {
	code := m.Run()
	if theEnv != nil {
		theEnv.srv.Close()
		theEnv.tb.Close()
	}
	os.Exit(code)
}

func startEnv() (*env, error) {
	tb, err := testbed.Start(testbed.Options{ExtraUsers: []testbed.User{standbyUser}})
	if err != nil {
		return nil, err
	}
	e := &env{tb: tb, logs: &syncBuffer{}, down: map[string]bool{}}
	ldap, err := ldapmap.NewLDAP(&ldapmap.Options{
		URIs:         []string{tb.LDAP.URI},
		BindDN:       tb.LDAP.BindDN,
		BindPassword: ldapmap.Secret(tb.LDAP.BindPassword),
		BaseDN:       tb.LDAP.PeopleDN,
		DialTimeout:  time.Second,
		Timeout:      2 * time.Second,
	})
	if err != nil {
		tb.Close()
		return nil, err
	}
	e.cache = ldapmap.NewCache(ldap, &ldapmap.CacheOptions{TTL: time.Minute, NegativeTTL: time.Second, ServeStale: true})
	hosts := &route.HostMap{Hosts: map[string]route.HostAddrs{}}
	for name, d := range tb.Backends {
		hosts.Hosts[name] = route.HostAddrs{IMAP: d.IMAPAddr, POP3: d.POP3Addr}
	}
	deadIP := testbed.AllocIP()
	deadPort, _ := testbed.FreePort(deadIP)
	hosts.Hosts["mxdead"] = route.HostAddrs{Addr: fmt.Sprintf("%s:%d", deadIP, deadPort)}
	e.hosts = hosts

	ip := testbed.AllocIP()
	certFile, keyFile, err := tb.CA.Issue("mail.example.org", ip)
	if err != nil {
		tb.Close()
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		tb.Close()
		return nil, err
	}
	e.clientT = tb.CA.ClientConfig("mail.example.org")
	e.trustedIP = testbed.AllocIP()
	e.srv = router.New(&router.Options{
		Hostname:      "mail.example.org",
		Mapper:        e.cache,
		Hosts:         hosts,
		TLS:           &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		TrustedNets:   []netip.Prefix{netip.MustParsePrefix(e.trustedIP + "/32")},
		AuthFailDelay: testFailDelay,
		DialTimeout:   time.Second,
		LookupTimeout: 3 * time.Second,
		BackendDown:   e.isDown,
		Logger:        slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	listen := func(proto string, mode router.TLSMode) (string, error) {
		a, err := e.srv.Listen(router.ListenerConfig{Protocol: proto, Addr: ip + ":0", TLS: mode})
		if err != nil {
			return "", err
		}
		return a.String(), nil
	}
	for _, l := range []struct {
		dst   *string
		proto string
		mode  router.TLSMode
	}{
		{&e.imap, route.IMAP, router.TLSStartTLS},
		{&e.imaps, route.IMAP, router.TLSImplicit},
		{&e.pop3, route.POP3, router.TLSStartTLS},
		{&e.pop3s, route.POP3, router.TLSImplicit},
	} {
		if *l.dst, err = listen(l.proto, l.mode); err != nil {
			e.srv.Close()
			tb.Close()
			return nil, err
		}
	}
	return e, nil
}

func (e *env) isDown(host string) bool {
	e.downMu.Lock()
	defer e.downMu.Unlock()
	return e.down[host]
}

func (e *env) user(t *testing.T, mail string) testbed.User {
	u, ok := e.tb.User(mail)
	if !ok {
		t.Fatalf("no test user %s", mail)
	}
	return u
}

// dial connects to addr from src (a loopback address; "" for any).
func dial(t *testing.T, addr, src string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rawConn is a line-oriented test client for exact protocol answers.
type rawConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func newRaw(t *testing.T, c net.Conn) *rawConn {
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return &rawConn{t: t, c: c, br: bufio.NewReader(c)}
}

func (r *rawConn) send(s string) {
	r.t.Helper()
	if _, err := io.WriteString(r.c, s); err != nil {
		r.t.Fatalf("send %q: %v", s, err)
	}
}

func (r *rawConn) line() string {
	r.t.Helper()
	l, err := r.br.ReadString('\n')
	if err != nil {
		r.t.Fatalf("read: %v (got %q)", err, l)
	}
	return strings.TrimRight(l, "\r\n")
}

// until reads lines until one starts with prefix and returns it.
func (r *rawConn) until(prefix string) string {
	r.t.Helper()
	for {
		l := r.line()
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
}

func (r *rawConn) startTLS(conf *tls.Config) {
	tc := tls.Client(r.c, conf)
	if err := tc.Handshake(); err != nil {
		r.t.Fatalf("TLS handshake: %v", err)
	}
	r.c = tc
	r.br = bufio.NewReader(tc)
}

// imapClient logs in with the go-imap v2 client over the given mode.
func (e *env) imapClient(t *testing.T, mode, mail, pass string) *imapclient.Client {
	t.Helper()
	var c *imapclient.Client
	var err error
	opts := &imapclient.Options{TLSConfig: e.clientT}
	switch mode {
	case "imaps":
		c, err = imapclient.DialTLS(e.imaps, opts)
	case "starttls":
		c, err = imapclient.DialStartTLS(e.imap, opts)
	case "trusted":
		c = imapclient.New(dial(t, e.imap, e.trustedIP), opts)
	default:
		t.Fatalf("mode %q", mode)
	}
	if err != nil {
		t.Fatalf("%s: dial: %v", mode, err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login(mail, pass).Wait(); err != nil {
		t.Fatalf("%s: login %s: %v", mode, mail, err)
	}
	return c
}

// backendOf returns which backend logged the user in last, from the
// backends' logs and the session id.
func (e *env) loggedInOn(t *testing.T, mail string) map[string]int {
	t.Helper()
	n := map[string]int{}
	for name, d := range e.tb.Backends {
		log, err := d.Log()
		if err != nil {
			t.Fatal(err)
		}
		n[name] = strings.Count(log, "Login: user=<"+mail+">")
	}
	return n
}

// waitLogin waits until the home backend's log shows a login of mail that
// was not there before (Dovecot's log process writes asynchronously) and
// returns the counts then.
func (e *env) waitLogin(t *testing.T, mail, home string, before map[string]int) map[string]int {
	t.Helper()
	var after map[string]int
	within(3*time.Second, func() bool {
		after = e.loggedInOn(t, mail)
		return after[home] > before[home]
	})
	return after
}

func TestRoutesEachUserToItsBackend(t *testing.T) {
	e := getEnv(t)
	for _, mode := range []string{"imaps", "starttls", "trusted"} {
		for _, mail := range []string{"alice@example.org", "bob@example.org"} {
			t.Run(mode+"/"+mail, func(t *testing.T) {
				u := e.user(t, mail)
				before := e.loggedInOn(t, mail)
				c := e.imapClient(t, mode, u.Mail, u.Password)
				sel, err := c.Select("INBOX", nil).Wait()
				if err != nil {
					t.Fatalf("SELECT: %v", err)
				}
				if sel.NumMessages == 0 {
					t.Fatalf("INBOX empty: landed on a backend that does not hold %s", mail)
				}
				if !c.Caps().Has(imap.CapIdle) {
					t.Errorf("post-login capabilities lack IDLE: %v", c.Caps())
				}
				c.Logout().Wait()
				home := u.Hosts[0]
				after := e.waitLogin(t, mail, home, before)
				for name := range e.tb.Backends {
					grew := after[name] - before[name]
					if name == home && grew != 1 {
						t.Errorf("%s: %d new logins on home backend %s, want 1", mail, grew, name)
					}
					if name != home && grew != 0 {
						t.Errorf("%s: %d logins on %s, which is not its backend", mail, grew, name)
					}
				}
			})
		}
	}
}

func TestPOP3RoutesEachUserToItsBackend(t *testing.T) {
	e := getEnv(t)
	for _, mode := range []string{"pop3s", "stls"} {
		for _, mail := range []string{"carol@example.org", "dave@example.org"} {
			t.Run(mode+"/"+mail, func(t *testing.T) {
				u := e.user(t, mail)
				before := e.loggedInOn(t, mail)
				var r *rawConn
				if mode == "pop3s" {
					c, err := tls.Dial("tcp", e.pop3s, e.clientT)
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { c.Close() })
					r = newRaw(t, c)
					r.until("+OK")
				} else {
					r = newRaw(t, dial(t, e.pop3, ""))
					r.until("+OK")
					r.send("CAPA\r\n")
					if capa := readMulti(r); !strings.Contains(capa, "STLS") || strings.Contains(capa, "USER") {
						t.Fatalf("plaintext CAPA = %q, want STLS and no USER", capa)
					}
					r.send("STLS\r\n")
					r.until("+OK")
					r.startTLS(e.clientT)
				}
				r.send("USER " + u.Mail + "\r\n")
				r.until("+OK")
				r.send("PASS " + u.Password + "\r\n")
				if l := r.line(); !strings.HasPrefix(l, "+OK") {
					t.Fatalf("PASS: %q", l)
				}
				r.send("STAT\r\n")
				stat := r.line()
				var n, size int
				if _, err := fmt.Sscanf(stat, "+OK %d %d", &n, &size); err != nil || n == 0 {
					t.Fatalf("STAT = %q: landed on a backend without %s's mail", stat, mail)
				}
				r.send("QUIT\r\n")
				r.until("+OK")
				after := e.waitLogin(t, mail, u.Hosts[0], before)
				if grew := after[u.Hosts[0]] - before[u.Hosts[0]]; grew != 1 {
					t.Errorf("%d new logins on home backend %s, want 1", grew, u.Hosts[0])
				}
			})
		}
	}
}

func readMulti(r *rawConn) string {
	var b strings.Builder
	for {
		l := r.line()
		if l == "." {
			return b.String()
		}
		b.WriteString(l + "\n")
	}
}

func TestIMAPLoginForms(t *testing.T) {
	e := getEnv(t)
	carol := e.user(t, "carol@example.org") // a password with space, quote, backslash, non-ASCII
	plain := func(authz, user, pass string) string {
		return b64(authz + "\x00" + user + "\x00" + pass)
	}
	tests := []struct {
		name string
		// steps alternate: a line to send, then the prefix expected.
		steps []string
	}{
		{"login literal", []string{
			fmt.Sprintf("a LOGIN {%d}\r\n", len(carol.Mail)), "+ ",
			fmt.Sprintf("%s {%d}\r\n", carol.Mail, len(carol.Password)), "+ ",
			carol.Password + "\r\n", "a OK [CAPABILITY ",
		}},
		{"login literal plus", []string{
			fmt.Sprintf("a LOGIN %s {%d+}\r\n%s\r\n", carol.Mail, len(carol.Password), carol.Password), "a OK [CAPABILITY ",
		}},
		{"authenticate sasl-ir", []string{
			"a AUTHENTICATE PLAIN " + plain("", carol.Mail, carol.Password) + "\r\n", "a OK [CAPABILITY ",
		}},
		{"authenticate continuation", []string{
			"a AUTHENTICATE PLAIN\r\n", "+",
			plain("", carol.Mail, carol.Password) + "\r\n", "a OK [CAPABILITY ",
		}},
		{"authenticate cancelled", []string{
			"a AUTHENTICATE PLAIN\r\n", "+",
			"*\r\n", "a BAD ",
		}},
		{"pipelined after login", []string{
			fmt.Sprintf("a LOGIN %s {%d+}\r\n%s\r\nb SELECT INBOX\r\n", carol.Mail, len(carol.Password), carol.Password), "a OK ",
			"", "b OK [READ-WRITE]",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRaw(t, tlsDial(t, e.imaps, e.clientT))
			r.until("* OK [CAPABILITY ")
			for i := 0; i < len(tt.steps); i += 2 {
				if tt.steps[i] != "" {
					r.send(tt.steps[i])
				}
				if l := r.until(tt.steps[i+1][:1]); !strings.HasPrefix(l, tt.steps[i+1]) {
					t.Fatalf("after %q: got %q, want prefix %q", tt.steps[i], l, tt.steps[i+1])
				}
			}
		})
	}
}

func tlsDial(t *testing.T, addr string, conf *tls.Config) net.Conn {
	c, err := tls.Dial("tcp", addr, conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestPlaintextLoginRefusedWithoutTLS(t *testing.T) {
	e := getEnv(t)
	alice := e.user(t, "alice@example.org")
	r := newRaw(t, dial(t, e.imap, ""))
	if g := r.line(); !strings.Contains(g, "LOGINDISABLED") || !strings.Contains(g, "STARTTLS") || strings.Contains(g, "AUTH=PLAIN") {
		t.Fatalf("greeting = %q, want LOGINDISABLED and STARTTLS, no AUTH=PLAIN", g)
	}
	r.send("a LOGIN " + alice.Mail + " x\r\n")
	if l := r.line(); l != "a NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure connections." {
		t.Fatalf("LOGIN in plaintext: %q", l)
	}
	r.send("b AUTHENTICATE PLAIN " + b64("\x00"+alice.Mail+"\x00x") + "\r\n")
	if l := r.line(); !strings.HasPrefix(l, "b NO [PRIVACYREQUIRED]") {
		t.Fatalf("AUTHENTICATE in plaintext: %q", l)
	}

	p := newRaw(t, dial(t, e.pop3, ""))
	p.line()
	p.send("USER " + alice.Mail + "\r\n")
	if l := p.line(); !strings.HasPrefix(l, "-ERR [AUTH] Plaintext") {
		t.Fatalf("POP3 USER in plaintext: %q", l)
	}
}

func TestAuthFailuresLookAlike(t *testing.T) {
	e := getEnv(t)
	alice := e.user(t, "alice@example.org")
	try := func(user, pass string) (string, time.Duration) {
		r := newRaw(t, tlsDial(t, e.imaps, e.clientT))
		r.line()
		t0 := time.Now()
		r.send("a LOGIN " + user + " " + pass + "\r\n")
		l := r.line()
		return l, time.Since(t0)
	}
	wrong, dWrong := try(alice.Mail, "not-the-password")
	unknown, dUnknown := try("nobody@example.org", "whatever")
	const want = "a NO [AUTHENTICATIONFAILED] Authentication failed."
	if wrong != want || unknown != want {
		t.Fatalf("wrong password: %q; unknown user: %q; want both %q", wrong, unknown, want)
	}
	for _, d := range []time.Duration{dWrong, dUnknown} {
		if d < testFailDelay {
			t.Errorf("failure answered after %v, before the %v delay", d, testFailDelay)
		}
	}

	pop := func(user, pass string) string {
		r := newRaw(t, tlsDial(t, e.pop3s, e.clientT))
		r.line()
		r.send("USER " + user + "\r\n")
		r.line()
		r.send("PASS " + pass + "\r\n")
		return r.line()
	}
	if a, b := pop(alice.Mail, "nope"), pop("nobody@example.org", "nope"); a != "-ERR [AUTH] Authentication failed." || a != b {
		t.Fatalf("POP3 wrong password %q, unknown user %q", a, b)
	}
}

func TestPreauthGarbage(t *testing.T) {
	e := getEnv(t)
	r := newRaw(t, dial(t, e.imap, ""))
	r.line()
	r.send("GET / HTTP/1.1\r\n")
	if l := r.line(); !strings.HasPrefix(l, "GET BAD ") {
		t.Fatalf("garbage 1: %q", l)
	}
	r.send("a SELECT INBOX\r\n")
	if l := r.line(); !strings.HasPrefix(l, "a BAD ") {
		t.Fatalf("garbage 2: %q", l)
	}
	r.send("\r\n")
	if l := r.line(); !strings.HasPrefix(l, "* BAD") {
		t.Fatalf("garbage 3: %q", l)
	}
	if l := r.line(); !strings.HasPrefix(l, "* BYE ") {
		t.Fatalf("after 3 bad commands: %q, want BYE", l)
	}
	if _, err := r.br.ReadByte(); err != io.EOF {
		t.Fatalf("connection still open after BYE: %v", err)
	}

	r = newRaw(t, dial(t, e.imap, ""))
	r.line()
	r.send("a LOGIN {99999999}\r\n")
	if l := r.line(); l != "a BAD [TOOBIG] Literal too big." {
		t.Fatalf("huge literal: %q", l)
	}
	r.send("a LOGIN " + strings.Repeat("x", 5000) + "\r\n")
	if l := r.line(); !strings.HasPrefix(l, "* BYE [TOOBIG]") {
		t.Fatalf("long line: %q", l)
	}
}

func TestLDAPUnavailable(t *testing.T) {
	e := getEnv(t)
	// A user never looked up has no cached route.
	u := testbed.User{Mail: "frank@example.org", Password: "frank-pw", Hosts: []string{"mx1"}}
	if err := e.tb.LDAP.AddUsers(u); err != nil {
		t.Fatal(err)
	}
	deleteAtEnd(t, e, e.tb.LDAP.UserDN(u.Mail)) // after slapd's restart below
	alice := e.user(t, "alice@example.org")
	e.imapClient(t, "imaps", alice.Mail, alice.Password).Logout().Wait() // warm alice's route
	if err := e.tb.LDAP.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { restartLDAP(t, e) })

	r := newRaw(t, tlsDial(t, e.imaps, e.clientT))
	r.line()
	t0 := time.Now()
	r.send("a LOGIN " + u.Mail + " " + u.Password + "\r\n")
	l := r.line()
	if !strings.HasPrefix(l, "a NO [UNAVAILABLE]") {
		t.Fatalf("LDAP down, uncached user: %q", l)
	}
	if d := time.Since(t0); d > 3*time.Second {
		t.Errorf("[UNAVAILABLE] took %v; it must come at once, not after a client time-out", d)
	}
	p := newRaw(t, tlsDial(t, e.pop3s, e.clientT))
	p.line()
	p.send("AUTH PLAIN " + b64("\x00"+u.Mail+"\x00"+u.Password) + "\r\n")
	if l := p.line(); !strings.HasPrefix(l, "-ERR [SYS/TEMP]") {
		t.Fatalf("POP3, LDAP down: %q", l)
	}
	// A cached route still serves while LDAP is down.
	e.imapClient(t, "imaps", alice.Mail, alice.Password).Logout().Wait()
}

// deleteAtEnd removes directory entries a test added, once it is done.
func deleteAtEnd(t *testing.T, e *env, dns ...string) {
	t.Cleanup(func() {
		if err := e.tb.LDAP.Delete(dns...); err != nil {
			t.Error(err)
		}
	})
}

// restartLDAP starts slapd again and waits until the map has noticed.
func restartLDAP(t *testing.T, e *env) {
	if err := e.tb.LDAP.Start(); err != nil {
		t.Fatalf("restarting slapd: %v", err)
	}
	var err error
	if !within(15*time.Second, func() bool {
		e.cache.Invalidate("alice@example.org")
		_, err = e.cache.Lookup(context.Background(), "alice@example.org")
		return err == nil
	}) {
		t.Fatalf("the map does not see slapd again: %v", err)
	}
}

func TestBackendUnavailableThenBack(t *testing.T) {
	e := getEnv(t)
	dave := e.user(t, "dave@example.org")
	mx2 := e.tb.Backends["mx2"]
	e.imapClient(t, "imaps", dave.Mail, dave.Password).Logout().Wait()
	if err := mx2.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !mx2.Running() {
			mx2.Start()
		}
	})
	r := newRaw(t, tlsDial(t, e.imaps, e.clientT))
	r.line()
	t0 := time.Now()
	r.send("a LOGIN " + dave.Mail + " " + dave.Password + "\r\n")
	if l := r.line(); !strings.HasPrefix(l, "a NO [UNAVAILABLE]") {
		t.Fatalf("backend down: %q", l)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("[UNAVAILABLE] took %v, longer than the 1s dial timeout allows", d)
	}
	// The cluster's health view makes it fail without dialling at all.
	e.downMu.Lock()
	e.down["mx2"] = true
	e.downMu.Unlock()
	r.send("b LOGIN " + dave.Mail + " " + dave.Password + "\r\n")
	if l := r.line(); !strings.HasPrefix(l, "b NO [UNAVAILABLE]") {
		t.Fatalf("backend marked down: %q", l)
	}
	e.downMu.Lock()
	delete(e.down, "mx2")
	e.downMu.Unlock()

	if err := mx2.Start(); err != nil {
		t.Fatal(err)
	}
	e.imapClient(t, "imaps", dave.Mail, dave.Password).Logout().Wait()
}

func TestStandbyBackend(t *testing.T) {
	e := getEnv(t)
	before := e.loggedInOn(t, standbyUser.Mail)
	c := e.imapClient(t, "imaps", standbyUser.Mail, standbyUser.Password)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	c.Logout().Wait()
	if after := e.waitLogin(t, standbyUser.Mail, "mx1", before); after["mx1"]-before["mx1"] != 1 {
		t.Fatalf("login did not land on the standby mx1: before %v after %v", before, after)
	}
	if !strings.Contains(e.logs.String(), "logged in on a standby backend") {
		t.Errorf("no warning logged for the standby login")
	}
}

func TestBackendSeesClientIP(t *testing.T) {
	e := getEnv(t)
	bob := e.user(t, "bob@example.org")
	src := testbed.AllocIP()
	c := imapclient.New(tlsClient(t, dial(t, e.imaps, src), e.clientT), nil)
	if err := c.Login(bob.Mail, bob.Password).Wait(); err != nil {
		t.Fatal(err)
	}
	c.Logout().Wait()
	r := newRaw(t, tlsClient(t, dial(t, e.pop3s, src), e.clientT))
	r.line()
	r.send("AUTH PLAIN " + b64("\x00"+bob.Mail+"\x00"+bob.Password) + "\r\n")
	if l := r.line(); !strings.HasPrefix(l, "+OK") {
		t.Fatalf("POP3 login: %q", l)
	}
	r.send("QUIT\r\n")
	r.line()
	// Dovecot writes its log lines asynchronously: wait for them.
	var log string
	found := map[string]bool{}
	within(10*time.Second, func() bool {
		log, _ = e.tb.Backends["mx2"].Log()
		for _, proto := range []string{"imap-login", "pop3-login"} {
			for _, l := range strings.Split(log, "\n") {
				if strings.Contains(l, proto+": Info: Login: user=<"+bob.Mail+">") && strings.Contains(l, "rip="+src) {
					found[proto] = true
				}
			}
		}
		return len(found) == 2
	})
	for _, proto := range []string{"imap-login", "pop3-login"} {
		if !found[proto] {
			t.Errorf("%s: backend log has no login of %s from the real client IP %s:\n%s", proto, bob.Mail, src, lastLines(log, 10))
		}
	}
}

func tlsClient(t *testing.T, c net.Conn, conf *tls.Config) net.Conn {
	tc := tls.Client(c, conf)
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	return tc
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

func TestIdleAndLargeAppend(t *testing.T) {
	e := getEnv(t)
	alice := e.user(t, "alice@example.org")
	for _, mode := range []string{"trusted", "imaps"} {
		t.Run(mode, func(t *testing.T) {
			updates := make(chan uint32, 8)
			opts := &imapclient.Options{
				TLSConfig: e.clientT,
				UnilateralDataHandler: &imapclient.UnilateralDataHandler{
					Mailbox: func(d *imapclient.UnilateralDataMailbox) {
						if d.NumMessages != nil {
							updates <- *d.NumMessages
						}
					},
				},
			}
			var idler *imapclient.Client
			if mode == "trusted" {
				idler = imapclient.New(dial(t, e.imap, e.trustedIP), opts)
			} else {
				var err error
				if idler, err = imapclient.DialTLS(e.imaps, opts); err != nil {
					t.Fatal(err)
				}
			}
			defer idler.Close()
			if err := idler.Login(alice.Mail, alice.Password).Wait(); err != nil {
				t.Fatal(err)
			}
			sel, err := idler.Select("INBOX", nil).Wait()
			if err != nil {
				t.Fatal(err)
			}
			idle, err := idler.Idle()
			if err != nil {
				t.Fatal(err)
			}

			msg := testbed.Message("big@example.net", alice.Mail, "large append "+mode, 20<<20)
			writer := e.imapClient(t, mode, alice.Mail, alice.Password)
			cmd := writer.Append("INBOX", int64(len(msg)), nil)
			if _, err := cmd.Write(msg); err != nil {
				t.Fatal(err)
			}
			if err := cmd.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := cmd.Wait(); err != nil {
				t.Fatalf("APPEND of %d bytes: %v", len(msg), err)
			}
			select {
			case n := <-updates:
				if n != sel.NumMessages+1 {
					t.Errorf("IDLE saw %d messages, want %d", n, sel.NumMessages+1)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("IDLE saw no EXISTS after the APPEND")
			}
			if err := idle.Close(); err != nil {
				t.Fatal(err)
			}
			if err := idle.Wait(); err != nil {
				t.Fatal(err)
			}
			// Read the message back whole through the proxy.
			if _, err := writer.Select("INBOX", nil).Wait(); err != nil {
				t.Fatal(err)
			}
			seq := imap.SeqSetNum(sel.NumMessages + 1)
			fetch := writer.Fetch(seq, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Peek: true}}})
			m := fetch.Next()
			if m == nil {
				t.Fatal("FETCH returned nothing")
			}
			var body []byte
			for item := m.Next(); item != nil; item = m.Next() {
				if bs, ok := item.(imapclient.FetchItemDataBodySection); ok {
					body, _ = io.ReadAll(bs.Literal)
				}
			}
			fetch.Close()
			if !bytes.Equal(body, msg) {
				t.Fatalf("fetched %d bytes, appended %d; content differs", len(body), len(msg))
			}
		})
	}
}

func TestKickSendsBye(t *testing.T) {
	e := getEnv(t)
	bob := e.user(t, "bob@example.org")
	r := newRaw(t, tlsDial(t, e.imaps, e.clientT))
	r.line()
	r.send("a LOGIN " + bob.Mail + " " + bob.Password + "\r\n")
	r.until("a OK")
	r.send("b SELECT INBOX\r\n")
	r.until("b OK")
	if n := e.srv.Kick(strings.ToUpper(bob.Mail), "Mailbox moved, please reconnect."); n < 1 {
		t.Fatalf("Kick closed %d sessions", n)
	}
	if l := r.until("* BYE"); !strings.Contains(l, "Mailbox moved") {
		t.Fatalf("kick: %q", l)
	}
	if _, err := r.br.ReadByte(); err == nil {
		t.Fatal("connection still open after kick")
	}
}

func TestNoPasswordInLogs(t *testing.T) {
	e := getEnv(t)
	// Each failed login's session ends, and is logged, when its client
	// hangs up; the other tests' sessions may or may not have run yet.
	before := strings.Count(e.logs.String(), "msg=session")
	for _, u := range e.tb.Users {
		r := newRaw(t, tlsDial(t, e.imaps, e.clientT))
		r.line()
		r.send("a LOGIN " + u.Mail + " wrong-" + u.Password + "\r\n")
		r.line()
		r.c.Close()
	}
	var logs string
	var n int
	if !within(5*time.Second, func() bool {
		logs = e.logs.String()
		n = strings.Count(logs, "msg=session") - before
		return n >= len(e.tb.Users)
	}) {
		t.Fatalf("%d of %d failed logins' sessions logged:\n%s", n, len(e.tb.Users), lastLines(logs, 5))
	}
	for _, u := range e.tb.Users {
		for _, secret := range []string{u.Password, b64("\x00" + u.Mail + "\x00" + u.Password)} {
			if strings.Contains(logs, secret) {
				t.Errorf("the logs contain %s's password", u.Mail)
			}
		}
	}
}

func TestNoGoroutineLeak(t *testing.T) {
	e := getEnv(t)
	alice := e.user(t, "alice@example.org")
	waitQuiet(t, e)
	base := runtime.NumGoroutine()
	for i := 0; i < 10; i++ {
		c := e.imapClient(t, "trusted", alice.Mail, alice.Password)
		c.Select("INBOX", nil).Wait()
		if i%2 == 0 {
			c.Logout().Wait()
		}
		c.Close() // half of them just hang up
	}
	waitQuiet(t, e)
	within(10*time.Second, func() bool { return runtime.NumGoroutine() <= base+2 })
	if n := runtime.NumGoroutine(); n > base+2 {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines, %d before the sessions:\n%s", n, base, buf[:runtime.Stack(buf, true)])
	}
}

func waitQuiet(t *testing.T, e *env) {
	if !within(10*time.Second, func() bool {
		st := e.srv.Stats()
		return st.ActiveIMAP == 0 && st.ActivePOP3 == 0
	}) {
		t.Fatalf("sessions still active: %+v", e.srv.Stats())
	}
}

// within polls cond until it holds or limit has passed, and says which.
func within(limit time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(limit); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

func TestShutdownDrains(t *testing.T) {
	// Runs its own server so the shared one stays up.
	e := getEnv(t)
	alice := e.user(t, "alice@example.org")
	srv := router.New(&router.Options{
		Mapper: e.cache, Hosts: &route.HostMap{Hosts: map[string]route.HostAddrs{
			"mx1": {IMAP: e.tb.Backends["mx1"].IMAPAddr},
		}},
		TrustedNets: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	a, err := srv.Listen(router.ListenerConfig{Protocol: route.IMAP, Addr: testbed.AllocIP() + ":0", TLS: router.TLSNone})
	if err != nil {
		t.Fatal(err)
	}
	r := newRaw(t, dial(t, a.String(), ""))
	r.line()
	r.send("a LOGIN " + alice.Mail + " {" + fmt.Sprint(len(alice.Password)) + "+}\r\n" + alice.Password + "\r\n")
	r.until("a OK")
	pre := newRaw(t, dial(t, a.String(), "")) // not logged in yet
	pre.line()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); err != context.DeadlineExceeded {
		t.Fatalf("Shutdown with a live session: %v", err)
	}
	if l := r.until("* BYE"); !strings.Contains(l, "shutting down") {
		t.Fatalf("drain: %q", l)
	}
	if l := pre.until("* BYE"); !strings.Contains(l, "shutting down") {
		t.Fatalf("drain before login: %q", l)
	}
	if _, err := net.DialTimeout("tcp", a.String(), time.Second); err == nil {
		t.Fatal("listener still accepting after Shutdown")
	}
}

func b64(s string) string {
	return encodeB64([]byte(s))
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestPythonClients logs in with Python's imaplib and poplib, clients
// written by others, over each TLS mode.
func TestPythonClients(t *testing.T) {
	e := getEnv(t)
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 is needed for the foreign-client test (scripts/setup.sh installs it): %v", err)
	}
	for _, tt := range []struct{ mode, addr, mail string }{
		{"imaps", e.imaps, "alice@example.org"},
		{"starttls", e.imap, "bob@example.org"},
		{"pop3s", e.pop3s, "carol@example.org"},
		{"stls", e.pop3, "dave@example.org"},
	} {
		t.Run(tt.mode, func(t *testing.T) {
			u := e.user(t, tt.mail)
			host, port, _ := net.SplitHostPort(tt.addr)
			// The certificate names the listeners' IP too, which Python checks.
			cmd := exec.Command(py, "testdata/pyclient.py", tt.mode, host, port, e.tb.CA.File, u.Mail, u.Password)
			outb, err := cmd.CombinedOutput()
			out := string(outb)
			if err != nil {
				t.Fatalf("%s: %v\n%s", tt.mode, err, out)
			}
			if !strings.HasPrefix(out, "messages ") || strings.HasPrefix(out, "messages 0") {
				t.Fatalf("%s: %q", tt.mode, out)
			}
		})
	}
}

func TestProxyProtocol(t *testing.T) {
	e := getEnv(t)
	lbIP := testbed.AllocIP() // the load balancer's address
	srv := router.New(&router.Options{
		Mapper: e.cache,
		Hosts: &route.HostMap{Hosts: map[string]route.HostAddrs{
			"mx2": {IMAP: e.tb.Backends["mx2"].IMAPAddr},
		}},
		TrustedNets: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	defer srv.Close()
	a, err := srv.Listen(router.ListenerConfig{
		Protocol: route.IMAP, Addr: testbed.AllocIP() + ":0", TLS: router.TLSNone,
		ProxyProtocol: true, ProxyFrom: []netip.Prefix{netip.MustParsePrefix(lbIP + "/32")},
	})
	if err != nil {
		t.Fatal(err)
	}
	bob := e.user(t, "bob@example.org")
	for _, version := range []byte{1, 2} {
		client := testbed.AllocIP()
		c := dial(t, a.String(), lbIP)
		h := proxyproto.HeaderProxyFromAddrs(version,
			&net.TCPAddr{IP: net.ParseIP(client), Port: 40000 + int(version)},
			&net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 993})
		if _, err := h.WriteTo(c); err != nil {
			t.Fatal(err)
		}
		r := newRaw(t, c)
		r.until("* OK")
		r.send(fmt.Sprintf("a LOGIN %s {%d+}\r\n%s\r\n", bob.Mail, len(bob.Password), bob.Password))
		r.until("a OK")
		r.send("b LOGOUT\r\n")
		r.until("b OK")
		time.Sleep(100 * time.Millisecond)
		log, _ := e.tb.Backends["mx2"].Log()
		if !strings.Contains(log, "Login: user=<"+bob.Mail+">, method=PLAIN, rip="+client+",") {
			t.Errorf("PROXY v%d: backend did not log the client address %s", version, client)
		}
	}
	// Not from the load balancer: no greeting, closed.
	c := dial(t, a.String(), testbed.AllocIP())
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 64)); err == nil {
		t.Fatalf("a peer outside proxy_from got %d bytes", n)
	}
}

func TestPreDialledConnections(t *testing.T) {
	e := getEnv(t)
	carol := e.user(t, "carol@example.org")
	backend := e.tb.Backends[carol.Hosts[0]].IMAPAddr
	before := e.srv.Stats().PreDialUsed
	for i := 0; i < 4; i++ {
		c := e.imapClient(t, "imaps", carol.Mail, carol.Password)
		if _, err := c.Select("INBOX", nil).Wait(); err != nil {
			t.Fatal(err)
		}
		c.Logout().Wait()
		// Let the pool refill, as it would between two page loads.
		if !within(10*time.Second, func() bool { return e.srv.PreDialReady(route.IMAP, backend) > 0 }) {
			t.Fatalf("login %d: no pre-dialled connection to %s after 10 s", i+1, backend)
		}
	}
	if used := e.srv.Stats().PreDialUsed - before; used < 3 {
		t.Fatalf("%d of 4 logins used a pre-dialled connection, want at least 3", used)
	}
}

// TestIdleSessionsPark checks that quiet sessions give up their goroutines
// to the parker and still work afterwards, plaintext and TLS.
func TestIdleSessionsPark(t *testing.T) {
	e := getEnv(t)
	alice := e.user(t, "alice@example.org")
	waitQuiet(t, e)
	base := runtime.NumGoroutine()
	const n = 20
	var conns []*rawConn
	for i := 0; i < n; i++ {
		var c net.Conn
		if i%2 == 0 {
			c = dial(t, e.imap, e.trustedIP)
		} else {
			c = tlsDial(t, e.imaps, e.clientT)
		}
		r := newRaw(t, c)
		r.line()
		r.send(fmt.Sprintf("a LOGIN %s {%d+}\r\n%s\r\nb SELECT INBOX\r\nc IDLE\r\n", alice.Mail, len(alice.Password), alice.Password))
		r.until("+ idling")
		conns = append(conns, r)
	}
	within(10*time.Second, func() bool { return e.srv.Stats().Parked >= 2*n })
	if p := e.srv.Stats().Parked; p < 2*n {
		t.Fatalf("%d directions parked, want %d", p, 2*n)
	}
	if g := runtime.NumGoroutine(); g > base+n/2 {
		t.Errorf("%d goroutines for %d parked sessions (%d before): idle sessions should hold none", g, n, base)
	}
	// Parked sessions wake for both directions.
	for i, r := range conns {
		r.c.SetDeadline(time.Now().Add(10 * time.Second))
		r.send("DONE\r\n")
		r.until("c OK")
		r.send("d NOOP\r\n")
		r.until("d OK")
		r.send("e LOGOUT\r\n")
		r.until("e OK")
		if i == 0 {
			continue
		}
	}
	waitQuiet(t, e)
	if p := e.srv.Stats().Parked; p != 0 {
		t.Errorf("%d directions still parked after every session ended", p)
	}
}

// TestIdleTimeout checks that a session where neither side says anything
// is closed after the idle timeout, and one that talks is not.
func TestIdleTimeout(t *testing.T) {
	e := getEnv(t)
	alice := e.user(t, "alice@example.org")
	srv := router.New(&router.Options{
		Mapper: e.cache,
		Hosts: &route.HostMap{Hosts: map[string]route.HostAddrs{
			"mx1": {IMAP: e.tb.Backends["mx1"].IMAPAddr},
		}},
		TrustedNets: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		IdleTimeout: 3 * time.Second,
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	defer srv.Close()
	a, err := srv.Listen(router.ListenerConfig{Protocol: route.IMAP, Addr: testbed.AllocIP() + ":0", TLS: router.TLSNone})
	if err != nil {
		t.Fatal(err)
	}
	login := func() *rawConn {
		r := newRaw(t, dial(t, a.String(), ""))
		r.line()
		r.send(fmt.Sprintf("a LOGIN %s {%d+}\r\n%s\r\n", alice.Mail, len(alice.Password), alice.Password))
		r.until("a OK")
		return r
	}
	quiet, chatty := login(), login()
	t0 := time.Now()
	for i := 0; time.Since(t0) < 6*time.Second; i++ {
		chatty.send(fmt.Sprintf("n%d NOOP\r\n", i))
		chatty.until(fmt.Sprintf("n%d OK", i))
		time.Sleep(time.Second)
	}
	quiet.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(quiet.br); err != nil {
		t.Fatalf("quiet session: %v, want it closed by the idle timeout", err)
	}
	chatty.send("z NOOP\r\n")
	chatty.until("z OK")
}

// TestAmbiguousEntryIsARoutingError: two entries with one mail must never
// be resolved by taking the first; the login is refused as unavailable
// and the error is logged loudly.
func TestAmbiguousEntryIsARoutingError(t *testing.T) {
	e := getEnv(t)
	twin := testbed.User{Mail: "twin@example.org", Password: "twin-pw", Hosts: []string{"mx1"}}
	if err := e.tb.LDAP.AddUsers(twin); err != nil {
		t.Fatal(err)
	}
	deleteAtEnd(t, e, e.tb.LDAP.UserDN(twin.Mail), "uid=twin2,"+e.tb.LDAP.PeopleDN)
	ldif := fmt.Sprintf(`dn: uid=twin2,%s
objectClass: top
objectClass: inetOrgPerson
objectClass: switchboardUser
uid: twin2
cn: twin
sn: twin
mail: %s
host: mx2
status: active
`, e.tb.LDAP.PeopleDN, twin.Mail)
	if err := e.tb.LDAP.Add(ldif); err != nil {
		t.Fatal(err)
	}
	r := newRaw(t, tlsDial(t, e.imaps, e.clientT))
	r.line()
	r.send("a LOGIN " + twin.Mail + " " + twin.Password + "\r\n")
	if l := r.line(); !strings.HasPrefix(l, "a NO [UNAVAILABLE]") {
		t.Fatalf("ambiguous user: %q", l)
	}
	if !strings.Contains(e.logs.String(), "routing error: more than one directory entry matches") {
		t.Fatal("no loud log line for the ambiguous entry")
	}
}

func TestPreauthTimeout(t *testing.T) {
	e := getEnv(t)
	srv := router.New(&router.Options{
		Mapper:         e.cache,
		PreauthTimeout: time.Second,
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	defer srv.Close()
	for _, proto := range []string{route.IMAP, route.POP3} {
		a, err := srv.Listen(router.ListenerConfig{Protocol: proto, Addr: testbed.AllocIP() + ":0", TLS: router.TLSNone})
		if err != nil {
			t.Fatal(err)
		}
		r := newRaw(t, dial(t, a.String(), ""))
		r.line()
		want := map[string]string{route.IMAP: "* BYE Disconnected for inactivity.", route.POP3: "-ERR Disconnected for inactivity."}[proto]
		if l := r.line(); l != want {
			t.Fatalf("%s idle before login: %q, want %q", proto, l, want)
		}
		if _, err := r.br.ReadByte(); err != io.EOF {
			t.Fatalf("%s: still open after the inactivity BYE: %v", proto, err)
		}
	}
}

// TestKickClientNotReading: a session whose client has stopped reading in
// the middle of a large FETCH (its direction blocked writing) still ends
// on a kick.
func TestKickClientNotReading(t *testing.T) {
	e := getEnv(t)
	dave := e.user(t, "dave@example.org")
	msg := testbed.Message("big@example.net", dave.Mail, "stuck reader", 24<<20)
	w := e.imapClient(t, "trusted", dave.Mail, dave.Password)
	cmd := w.Append("INBOX", int64(len(msg)), nil)
	cmd.Write(msg)
	cmd.Close()
	if _, err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	w.Logout().Wait()
	waitQuiet(t, e)

	r := newRaw(t, dial(t, e.imap, e.trustedIP))
	r.line()
	r.send(fmt.Sprintf("a LOGIN %s {%d+}\r\n%s\r\n", dave.Mail, len(dave.Password), dave.Password))
	r.until("a OK")
	r.send("b SELECT INBOX\r\n")
	r.until("b OK")
	r.send("c FETCH * BODY.PEEK[]\r\n") // and read nothing more
	time.Sleep(time.Second)
	if n := e.srv.Kick(dave.Mail, "Moved."); n != 1 {
		t.Fatalf("Kick = %d, want 1", n)
	}
	waitQuiet(t, e)
}

// TestBackendTLS: with BackendTLS, Switchboard dials the backends' implicit
// TLS ports, verifying their certificates, for IMAP and POP3; a backend
// whose certificate does not verify is unavailable, not a wrong password.
func TestBackendTLS(t *testing.T) {
	e := getEnv(t)
	alice := e.user(t, "alice@example.org")
	mx1 := e.tb.Backends["mx1"]
	newServer := func(conf *tls.Config) (imapAddr, pop3Addr string) {
		srv := router.New(&router.Options{
			Mapper: e.cache,
			Hosts: &route.HostMap{Hosts: map[string]route.HostAddrs{
				"mx1": {IMAP: mx1.IMAPSAddr, POP3: mx1.POP3SAddr},
			}},
			BackendTLS:  conf,
			TrustedNets: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
			Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		t.Cleanup(func() { srv.Close() })
		ip := testbed.AllocIP()
		a, err := srv.Listen(router.ListenerConfig{Protocol: route.IMAP, Addr: ip + ":0", TLS: router.TLSNone})
		if err != nil {
			t.Fatal(err)
		}
		p, err := srv.Listen(router.ListenerConfig{Protocol: route.POP3, Addr: ip + ":0", TLS: router.TLSNone})
		if err != nil {
			t.Fatal(err)
		}
		return a.String(), p.String()
	}
	// The backends' certificates name their IP; ServerName comes from the
	// address dialled.
	imapAddr, pop3Addr := newServer(&tls.Config{RootCAs: e.tb.CA.Pool, MinVersion: tls.VersionTLS12})
	r := newRaw(t, dial(t, imapAddr, ""))
	r.line()
	r.send(fmt.Sprintf("a LOGIN %s {%d+}\r\n%s\r\nb SELECT INBOX\r\nc LOGOUT\r\n", alice.Mail, len(alice.Password), alice.Password))
	r.until("a OK")
	r.until("b OK")
	r.until("c OK")
	p := newRaw(t, dial(t, pop3Addr, ""))
	p.line()
	p.send("USER " + alice.Mail + "\r\n")
	p.line()
	p.send("PASS " + alice.Password + "\r\n")
	if l := p.line(); !strings.HasPrefix(l, "+OK") {
		t.Fatalf("POP3 over TLS to the backend: %q", l)
	}
	p.send("QUIT\r\n")
	p.line()

	// A CA that did not sign the backend's certificate.
	other, err := testbed.NewCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	imapAddr, _ = newServer(&tls.Config{RootCAs: other.Pool, MinVersion: tls.VersionTLS12})
	r = newRaw(t, dial(t, imapAddr, ""))
	r.line()
	r.send(fmt.Sprintf("a LOGIN %s {%d+}\r\n%s\r\n", alice.Mail, len(alice.Password), alice.Password))
	if l := r.line(); !strings.HasPrefix(l, "a NO [UNAVAILABLE]") {
		t.Fatalf("backend certificate from an unknown CA: %q", l)
	}
}

// TestSessionEnds checks how a spliced session ends on either side. A
// client that half-closes after its last command still gets the answer
// (its end is passed on to the backend as a half-close); a backend that
// hangs up after LOGOUT ends the session at once, the client reading
// every byte the backend sent and then the end of the stream.
func TestSessionEnds(t *testing.T) {
	e := getEnv(t)
	alice := e.user(t, "alice@example.org")
	login := func(t *testing.T) *rawConn {
		r := newRaw(t, dial(t, e.imap, e.trustedIP))
		r.until("* OK")
		r.send("a LOGIN " + alice.Mail + " " + alice.Password + "\r\n")
		if l := r.until("a "); !strings.HasPrefix(l, "a OK") {
			t.Fatalf("LOGIN: %q", l)
		}
		return r
	}
	t.Run("client half-closes", func(t *testing.T) {
		r := login(t)
		start := time.Now()
		r.send("b SELECT INBOX\r\nc NOOP\r\n")
		if err := r.c.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if l := r.until("b "); !strings.HasPrefix(l, "b OK") {
			t.Fatalf("SELECT after the client's half-close: %q", l)
		}
		if l := r.until("c "); !strings.HasPrefix(l, "c OK") {
			t.Fatalf("NOOP after the client's half-close: %q", l)
		}
		if rest, err := io.ReadAll(r.br); err != nil {
			t.Fatalf("after the answers: %v (read %q)", err, rest)
		}
		// The FIN came right behind the commands: it must be passed on
		// at once, not found by a timeout (activeWait is 2 s).
		if d := time.Since(start); d > 1500*time.Millisecond {
			t.Fatalf("the session ended %v after the client's half-close", d)
		}
	})
	t.Run("backend hangs up", func(t *testing.T) {
		r := login(t)
		start := time.Now()
		r.send("z LOGOUT\r\n")
		if l := r.until("* BYE"); l == "" {
			t.Fatal("no BYE")
		}
		if l := r.until("z "); !strings.HasPrefix(l, "z OK") {
			t.Fatalf("LOGOUT: %q", l)
		}
		// The client has not closed its side: the proxy must end the
		// session by itself, well before the linger time.
		rest, err := io.ReadAll(r.br)
		if err != nil || len(rest) != 0 {
			t.Fatalf("after LOGOUT: %q, %v; want the end of the stream", rest, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("the session ended %v after LOGOUT", d)
		}
	})
}
