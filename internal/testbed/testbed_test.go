package testbed

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/go-ldap/ldap/v3"
)

// clientTimeout bounds every client operation in these tests.
const clientTimeout = 5 * time.Second

func TestTestbed(t *testing.T) {
	if testing.Short() {
		t.Skip("starts slapd and Dovecot")
	}
	t.Parallel()
	start := time.Now()
	tb, err := Start(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	t.Logf("testbed started in %v: ldap %s, mx1 %s, mx2 %s", time.Since(start).Round(time.Millisecond),
		tb.LDAP.URI, tb.Backends["mx1"].IMAPAddr, tb.Backends["mx2"].IMAPAddr)

	t.Run("IMAP", func(t *testing.T) { testIMAPLogins(t, tb) })
	t.Run("POP3", func(t *testing.T) { testPOP3Logins(t, tb) })
	t.Run("LDAP", func(t *testing.T) { testLDAP(t, tb) })
	t.Run("ClientIP", func(t *testing.T) { testClientIP(t, tb) })
	t.Run("Seed", func(t *testing.T) { testSeedWhileRunning(t, tb) })
	t.Run("RestartDovecot", func(t *testing.T) { testRestartDovecot(t, tb) })
	t.Run("RestartSlapd", func(t *testing.T) { testRestartSlapd(t, tb) })
	t.Run("CrashDovecot", func(t *testing.T) { testCrashDovecot(t, tb) })

	pgids := []int{tb.LDAP.proc.cmd.Process.Pid}
	for _, d := range tb.Backends {
		pgids = append(pgids, d.proc.cmd.Process.Pid)
	}
	start = time.Now()
	if err := tb.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("testbed closed in %v", time.Since(start).Round(time.Millisecond))
	for name, d := range tb.Backends {
		if d.Running() {
			t.Errorf("%s still running after Close", name)
		}
	}
	for _, pgid := range pgids {
		waitGroupGone(t, pgid)
	}
}

// waitGroupGone fails unless every live process of the process group pgid
// is gone within clientTimeout (zombies awaiting their reaper count as
// gone).
func waitGroupGone(t *testing.T, pgid int) {
	t.Helper()
	deadline := time.Now().Add(clientTimeout)
	for {
		var live []string
		stats, _ := filepath.Glob("/proc/[0-9]*/stat")
		for _, path := range stats {
			data, err := os.ReadFile(path)
			if err != nil {
				continue
			}
			// pid (comm) state ppid pgrp …; comm may contain spaces.
			i := bytes.LastIndexByte(data, ')')
			if i < 0 {
				continue
			}
			f := strings.Fields(string(data[i+1:]))
			if len(f) > 2 && f[2] == strconv.Itoa(pgid) && f[0] != "Z" {
				live = append(live, string(data[:i+1]))
			}
		}
		if len(live) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("process group %d still has %v", pgid, live)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// imapMessages logs in as u over IMAP and returns the INBOX message count.
// mode is "plain", "starttls" or "tls".
func imapMessages(t *testing.T, d *Dovecot, ca *CA, u User, mode string) (uint32, error) {
	t.Helper()
	opts := &imapclient.Options{
		TLSConfig: ca.ClientConfig(d.IP),
		Dialer:    &net.Dialer{Timeout: clientTimeout},
	}
	var c *imapclient.Client
	var err error
	switch mode {
	case "plain":
		c, err = imapclient.DialInsecure(d.IMAPAddr, opts)
	case "starttls":
		c, err = imapclient.DialStartTLS(d.IMAPAddr, opts)
	case "tls":
		c, err = imapclient.DialTLS(d.IMAPSAddr, opts)
	default:
		t.Fatalf("unknown mode %q", mode)
	}
	if err != nil {
		return 0, fmt.Errorf("dial %s: %w", mode, err)
	}
	defer c.Close()
	if err := c.Login(u.Mail, u.Password).Wait(); err != nil {
		return 0, fmt.Errorf("login %s: %w", u.Mail, err)
	}
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		return 0, fmt.Errorf("select INBOX: %w", err)
	}
	if err := c.Logout().Wait(); err != nil {
		return 0, fmt.Errorf("logout: %w", err)
	}
	return sel.NumMessages, nil
}

func testIMAPLogins(t *testing.T, tb *Testbed) {
	for _, u := range DefaultUsers() {
		for _, mode := range []string{"plain", "starttls", "tls"} {
			t.Run(u.Mail+"/"+mode, func(t *testing.T) {
				n, err := imapMessages(t, tb.Backends[u.Hosts[0]], tb.CA, u, mode)
				if err != nil {
					t.Fatal(err)
				}
				if n != defaultMessagesPerUser {
					t.Errorf("INBOX has %d messages, want %d", n, defaultMessagesPerUser)
				}
			})
		}
	}
	t.Run("wrong password", func(t *testing.T) {
		u := DefaultUsers()[0]
		u.Password += "x"
		if _, err := imapMessages(t, tb.Backends["mx1"], tb.CA, u, "plain"); err == nil {
			t.Fatal("login with a wrong password succeeded")
		}
	})
	t.Run("user on the other backend", func(t *testing.T) {
		// Every backend knows every user, so a mailbox can be moved.
		u := DefaultUsers()[0] // alice, on mx1
		n, err := imapMessages(t, tb.Backends["mx2"], tb.CA, u, "plain")
		if err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("alice's INBOX on mx2 has %d messages, want 0", n)
		}
	})
}

// pop3 is a minimal POP3 client for the tests.
type pop3 struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dialPOP3(t *testing.T, addr string, tlsConfig *tls.Config, local net.Addr) *pop3 {
	t.Helper()
	dialer := &net.Dialer{Timeout: clientTimeout, LocalAddr: local}
	var conn net.Conn
	var err error
	if tlsConfig != nil {
		conn, err = tls.DialWithDialer(dialer, "tcp", addr, tlsConfig)
	} else {
		conn, err = dialer.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.SetDeadline(time.Now().Add(clientTimeout)); err != nil {
		t.Fatal(err)
	}
	p := &pop3{t: t, conn: conn, r: bufio.NewReader(conn)}
	p.expectOK()
	return p
}

// cmd sends line and returns the response line (which may be -ERR).
func (p *pop3) cmd(line string) string {
	p.t.Helper()
	if _, err := fmt.Fprintf(p.conn, "%s\r\n", line); err != nil {
		p.t.Fatal(err)
	}
	return p.readLine()
}

func (p *pop3) readLine() string {
	p.t.Helper()
	line, err := p.r.ReadString('\n')
	if err != nil {
		p.t.Fatal(err)
	}
	return strings.TrimRight(line, "\r\n")
}

func (p *pop3) expectOK() string {
	p.t.Helper()
	line := p.readLine()
	if !strings.HasPrefix(line, "+OK") {
		p.t.Fatalf("got %q, want +OK", line)
	}
	return line
}

// login logs in with USER/PASS and returns the STAT message count.
func (p *pop3) login(u User) int {
	p.t.Helper()
	if resp := p.cmd("USER " + u.Mail); !strings.HasPrefix(resp, "+OK") {
		p.t.Fatalf("USER: %q", resp)
	}
	if resp := p.cmd("PASS " + u.Password); !strings.HasPrefix(resp, "+OK") {
		p.t.Fatalf("PASS: %q", resp)
	}
	resp := p.cmd("STAT")
	f := strings.Fields(resp)
	if len(f) < 3 || f[0] != "+OK" {
		p.t.Fatalf("STAT: %q", resp)
	}
	n, err := strconv.Atoi(f[1])
	if err != nil {
		p.t.Fatalf("STAT: %q", resp)
	}
	if resp := p.cmd("QUIT"); !strings.HasPrefix(resp, "+OK") {
		p.t.Fatalf("QUIT: %q", resp)
	}
	return n
}

func testPOP3Logins(t *testing.T, tb *Testbed) {
	for _, u := range DefaultUsers() {
		d := tb.Backends[u.Hosts[0]]
		for _, mode := range []string{"plain", "tls"} {
			t.Run(u.Mail+"/"+mode, func(t *testing.T) {
				var p *pop3
				if mode == "tls" {
					p = dialPOP3(t, d.POP3SAddr, tb.CA.ClientConfig(d.IP), nil)
				} else {
					p = dialPOP3(t, d.POP3Addr, nil, nil)
				}
				if n := p.login(u); n != defaultMessagesPerUser {
					t.Errorf("STAT says %d messages, want %d", n, defaultMessagesPerUser)
				}
			})
		}
	}
}

// searchUser looks mail up as the service account over StartTLS and
// returns the entry.
func searchUser(s *Slapd, ca *CA, mail string) (*ldap.Entry, error) {
	conn, err := ldap.DialURL(s.URI, ldap.DialWithDialer(&net.Dialer{Timeout: clientTimeout}))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	conn.SetTimeout(clientTimeout)
	if err := conn.StartTLS(ca.ClientConfig(s.IP)); err != nil {
		return nil, fmt.Errorf("starttls: %w", err)
	}
	if err := conn.Bind(s.BindDN, s.BindPassword); err != nil {
		return nil, fmt.Errorf("bind: %w", err)
	}
	res, err := conn.Search(ldap.NewSearchRequest(s.PeopleDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
		2, 0, false, fmt.Sprintf("(mail=%s)", ldap.EscapeFilter(mail)),
		[]string{"mail", "host", "status", "userPassword", "cn"}, nil))
	if err != nil {
		return nil, fmt.Errorf("search: %w", err)
	}
	if len(res.Entries) != 1 {
		return nil, fmt.Errorf("search for %s found %d entries", mail, len(res.Entries))
	}
	return res.Entries[0], nil
}

func testLDAP(t *testing.T, tb *Testbed) {
	s := tb.LDAP
	alice := DefaultUsers()[0].Mail

	e, err := searchUser(s, tb.CA, alice)
	if err != nil {
		t.Fatal(err)
	}
	if got := e.GetAttributeValues("host"); !slices.Equal(got, []string{"mx1"}) {
		t.Errorf("host = %q, want [mx1]", got)
	}
	if got := e.GetAttributeValue("status"); got != StatusActive {
		t.Errorf("status = %q, want %q", got, StatusActive)
	}
	if e.DN != s.UserDN(alice) {
		t.Errorf("DN = %q, want %q", e.DN, s.UserDN(alice))
	}
	// The service account reads mail, host and status only.
	for _, attr := range []string{"userPassword", "cn"} {
		if v := e.GetAttributeValues(attr); len(v) > 0 {
			t.Errorf("service account can read %s", attr)
		}
	}

	t.Run("ldaps", func(t *testing.T) {
		conn, err := ldap.DialURL(s.LDAPSURI, ldap.DialWithTLSConfig(tb.CA.ClientConfig(s.IP)),
			ldap.DialWithDialer(&net.Dialer{Timeout: clientTimeout}))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if err := conn.Bind(s.BindDN, s.BindPassword); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("SetHosts keeps order", func(t *testing.T) {
		if err := s.SetHosts(alice, "mx2", "mx1"); err != nil {
			t.Fatal(err)
		}
		defer s.SetHosts(alice, "mx1")
		e, err := searchUser(s, tb.CA, alice)
		if err != nil {
			t.Fatal(err)
		}
		if got := e.GetAttributeValues("host"); !slices.Equal(got, []string{"mx2", "mx1"}) {
			t.Errorf("host = %q, want [mx2 mx1]", got)
		}
	})

	t.Run("SetStatus", func(t *testing.T) {
		if err := s.SetStatus(alice, "disabled"); err != nil {
			t.Fatal(err)
		}
		defer s.SetStatus(alice, StatusActive)
		e, err := searchUser(s, tb.CA, alice)
		if err != nil {
			t.Fatal(err)
		}
		if got := e.GetAttributeValue("status"); got != "disabled" {
			t.Errorf("status = %q, want disabled", got)
		}
	})

	t.Run("AddUsers and Add", func(t *testing.T) {
		u := User{Mail: "erin+tag@example.org", Password: "pw", Hosts: []string{"mx2", "mx1"},
			Extra: map[string][]string{"cn": {"Erin"}, "description": {"added by a test"}}}
		if err := s.AddUsers(u); err != nil {
			t.Fatal(err)
		}
		ldif := "dn: mail=frank@example.org," + s.PeopleDN + "\n" +
			"objectClass: inetOrgPerson\nobjectClass: switchboardUser\n" +
			"cn: Frank\nsn: frank\nmail: frank@example.org\nhost: mx1\nstatus: disabled\n"
		if err := s.Add(ldif); err != nil {
			t.Fatal(err)
		}
		if err := s.Add(ldif); err == nil || !strings.Contains(err.Error(), "Already exists") {
			t.Errorf("adding frank twice: err = %v, want ldapmodify's 'Already exists'", err)
		}
		e, err := searchUser(s, tb.CA, u.Mail)
		if err != nil {
			t.Fatal(err)
		}
		if got := e.GetAttributeValues("host"); !slices.Equal(got, u.Hosts) {
			t.Errorf("host = %q, want %q", got, u.Hosts)
		}
		if e, err = searchUser(s, tb.CA, "frank@example.org"); err != nil {
			t.Fatal(err)
		} else if got := e.GetAttributeValue("status"); got != "disabled" {
			t.Errorf("frank's status = %q, want disabled", got)
		}
	})
}

func testClientIP(t *testing.T, tb *Testbed) {
	d := tb.Backends["mx1"]
	u := DefaultUsers()[2] // carol, on mx1

	// A direct connection from a chosen loopback address is logged as such.
	local := AllocIP()
	c, err := imapclient.DialInsecure(d.IMAPAddr, &imapclient.Options{
		Dialer: &net.Dialer{Timeout: clientTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Login(u.Mail, u.Password).Wait(); err != nil {
		t.Fatal(err)
	}
	c.Logout().Wait()
	c.Close()

	// The proxy forwards the client address with IMAP ID (trusted network).
	const imapClientIP = "203.0.113.7"
	conn, err := net.DialTimeout("tcp", d.IMAPAddr, clientTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(clientTimeout))
	r := bufio.NewReader(conn)
	if greeting, _ := r.ReadString('\n'); !strings.HasPrefix(greeting, "* OK") {
		t.Fatalf("greeting %q", greeting)
	}
	fmt.Fprintf(conn, "a ID (\"x-originating-ip\" \"%s\" \"x-originating-port\" \"40000\")\r\n", imapClientIP)
	readTagged(t, r, "a")
	// A literal carries carol's password, which is not a valid atom.
	fmt.Fprintf(conn, "b LOGIN \"%s\" {%d+}\r\n%s\r\n", u.Mail, len(u.Password), u.Password)
	readTagged(t, r, "b")
	fmt.Fprintf(conn, "c LOGOUT\r\n")
	readTagged(t, r, "c")

	// POP3 forwards it with XCLIENT.
	const pop3ClientIP = "198.51.100.9"
	p := dialPOP3(t, d.POP3Addr, nil, nil)
	if resp := p.cmd("XCLIENT ADDR=" + pop3ClientIP + " PORT=40001"); !strings.HasPrefix(resp, "+OK") {
		t.Fatalf("XCLIENT: %q", resp)
	}
	p.login(u)

	wantLogin := func(rip string) {
		t.Helper()
		re := regexp.MustCompile(`Login: user=<` + regexp.QuoteMeta(u.Mail) + `>.* rip=` + regexp.QuoteMeta(rip) + `, lip=` + regexp.QuoteMeta(d.IP))
		deadline := time.Now().Add(clientTimeout)
		for {
			log, err := d.Log()
			if err != nil {
				t.Fatal(err)
			}
			if re.MatchString(log) {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("no login line with rip=%s in the log:\n%s", rip, log)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	wantLogin(local)
	wantLogin(imapClientIP)
	wantLogin(pop3ClientIP)
}

// readTagged reads until the tagged response for tag and fails unless OK.
func readTagged(t *testing.T, r *bufio.Reader, tag string) {
	t.Helper()
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("waiting for %s: %v", tag, err)
		}
		if strings.HasPrefix(line, tag+" ") {
			if !strings.HasPrefix(line, tag+" OK") {
				t.Fatalf("%s: %q", tag, line)
			}
			return
		}
	}
}

func testSeedWhileRunning(t *testing.T, tb *Testbed) {
	u := DefaultUsers()[3] // dave, on mx2
	d := tb.Backends["mx2"]
	if err := d.Seed(u.Mail, Message("x@example.net", u.Mail, "late", 100)); err != nil {
		t.Fatal(err)
	}
	n, err := imapMessages(t, d, tb.CA, u, "plain")
	if err != nil {
		t.Fatal(err)
	}
	if n != defaultMessagesPerUser+1 {
		t.Errorf("INBOX has %d messages, want %d", n, defaultMessagesPerUser+1)
	}
}

func testRestartDovecot(t *testing.T, tb *Testbed) {
	d := tb.Backends["mx2"]
	u := DefaultUsers()[1] // bob, on mx2
	start := time.Now()
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("stopped in %v", time.Since(start).Round(time.Millisecond))
	for _, addr := range []string{d.IMAPAddr, d.IMAPSAddr, d.POP3Addr, d.POP3SAddr} {
		if conn, err := net.DialTimeout("tcp", addr, clientTimeout); err == nil {
			conn.Close()
			t.Errorf("%s accepts connections after Stop", addr)
		}
	}
	start = time.Now()
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Logf("restarted in %v", time.Since(start).Round(time.Millisecond))
	if err := d.Start(); err == nil {
		t.Error("starting a running instance succeeded")
	}
	n, err := imapMessages(t, d, tb.CA, u, "tls")
	if err != nil {
		t.Fatal(err)
	}
	if n != defaultMessagesPerUser {
		t.Errorf("INBOX has %d messages after restart, want %d", n, defaultMessagesPerUser)
	}
}

// testCrashDovecot kills the Dovecot master as a crash would; Running
// notices and Start brings the instance back.
func testCrashDovecot(t *testing.T, tb *Testbed) {
	d := tb.Backends["mx1"]
	if err := d.proc.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-d.proc.donec
	if d.Running() {
		t.Fatal("Running after the master died")
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	if !d.Running() {
		t.Fatal("not Running after Start")
	}
	if _, err := imapMessages(t, d, tb.CA, DefaultUsers()[0], "plain"); err != nil {
		t.Fatal(err)
	}
}

func testRestartSlapd(t *testing.T, tb *Testbed) {
	s := tb.LDAP
	start := time.Now()
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("stopped in %v", time.Since(start).Round(time.Millisecond))
	if _, err := searchUser(s, tb.CA, "alice@example.org"); err == nil {
		t.Fatal("search works after Stop")
	}
	start = time.Now()
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Logf("restarted in %v", time.Since(start).Round(time.Millisecond))
	e, err := searchUser(s, tb.CA, "bob@example.org")
	if err != nil {
		t.Fatal(err)
	}
	if got := e.GetAttributeValues("host"); !slices.Equal(got, []string{"mx2"}) {
		t.Errorf("host = %q after restart, want [mx2]", got)
	}
}

func TestStartBulkUsers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts slapd and Dovecot")
	}
	t.Parallel()
	const per = 5
	tb, err := Start(Options{
		UsersPerBackend: per,
		MessagesPerUser: -1,
		ConfigureBackend: func(name string, o *DovecotOptions) {
			o.HibernateTimeout = time.Second
			o.Debug = true // logs each imap process taking over the session
			o.ExtraConf = "# added by TestStartBulkUsers\n"
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	if got, want := len(tb.Users), len(DefaultUsers())+2*per; got != want {
		t.Fatalf("%d users, want %d", got, want)
	}
	last := tb.Users[len(tb.Users)-1]
	if last.Mail != "user0010@example.org" || last.Hosts[0] != "mx2" {
		t.Fatalf("last user = %+v", last)
	}
	n, err := imapMessages(t, tb.Backends["mx2"], tb.CA, last, "plain")
	if err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("INBOX has %d messages, want 0", n)
	}
	e, err := searchUser(tb.LDAP, tb.CA, last.Mail)
	if err != nil {
		t.Fatal(err)
	}
	if got := e.GetAttributeValues("host"); !slices.Equal(got, []string{"mx2"}) {
		t.Errorf("host = %q, want [mx2]", got)
	}
	t.Run("hibernate", func(t *testing.T) {
		// IDLE without a selected mailbox: hibernating a session with one
		// needs an inotify instance, and the per-user limit
		// (fs.inotify.max_user_instances) may be used up by other Dovecot
		// instances on the machine, since all run as the mail user.
		d := tb.Backends["mx2"]
		conn, err := net.DialTimeout("tcp", d.IMAPAddr, clientTimeout)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(clientTimeout))
		r := bufio.NewReader(conn)
		r.ReadString('\n')
		fmt.Fprintf(conn, "a LOGIN %s %s\r\n", last.Mail, last.Password)
		readTagged(t, r, "a")
		fmt.Fprintf(conn, "b IDLE\r\n")
		if line, _ := r.ReadString('\n'); !strings.HasPrefix(line, "+") {
			t.Fatalf("IDLE: %q", line)
		}
		time.Sleep(1700 * time.Millisecond) // imap_hibernate_timeout is 1 s
		fmt.Fprintf(conn, "DONE\r\n")
		readTagged(t, r, "b")
		fmt.Fprintf(conn, "c NOOP\r\n")
		readTagged(t, r, "c")
		// After hibernation an imap process takes the session over again
		// and sets it up a second time under the same session id. It may
		// be the very process that gave it away (imap processes are
		// reused), so the pid is no evidence either way.
		re := regexp.MustCompile(`imap\(` + regexp.QuoteMeta(last.Mail) + `\)<\d+><([^>]+)>: Debug: Effective uid`)
		deadline := time.Now().Add(clientTimeout)
		for {
			log, err := d.Log()
			if err != nil {
				t.Fatal(err)
			}
			setups := map[string]int{}
			for _, m := range re.FindAllStringSubmatch(log, -1) {
				setups[m[1]]++
				if setups[m[1]] == 2 {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("session not hibernated (set-ups per session %v):\n%s", setups, log)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	dir := tb.Dir
	if err := tb.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("Close left %s behind (err %v)", dir, err)
	}
}

func TestStartDovecotBadExtraConf(t *testing.T) {
	if testing.Short() {
		t.Skip("runs doveconf")
	}
	_, err := StartDovecot(DovecotOptions{Dir: t.TempDir(), ExtraConf: "no_such_setting = 1"})
	if err == nil || !strings.Contains(err.Error(), "no_such_setting") {
		t.Fatalf("err = %v, want doveconf's complaint about no_such_setting", err)
	}
}

func TestSchemaMatchesDocs(t *testing.T) {
	docs, err := os.ReadFile("../../docs/ldap/switchboard.schema")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(docs, schema) {
		t.Fatal("internal/testbed/switchboard.schema differs from docs/ldap/switchboard.schema; copy the docs version over")
	}
}

// TestSchemaLDIF loads docs/ldap/switchboard.ldif into a cn=config
// directory converted from a stock slapd.conf, as an OLC operator would.
func TestSchemaLDIF(t *testing.T) {
	if testing.Short() {
		t.Skip("runs slaptest and slapadd")
	}
	ldif, err := filepath.Abs("../../docs/ldap/switchboard.ldif")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "slapd.conf")
	cfg := filepath.Join(dir, "slapd.d")
	var b strings.Builder
	for _, s := range []string{"core", "cosine", "inetorgperson"} {
		fmt.Fprintf(&b, "include %s/%s.schema\n", slapdSchemaDir, s)
	}
	if err := os.WriteFile(conf, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(cfg, 0o700); err != nil {
		t.Fatal(err)
	}
	run := func(name string, args ...string) {
		t.Helper()
		path, err := lookTool(name)
		if err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(path, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}
	run("slaptest", "-f", conf, "-F", cfg)
	run("slapadd", "-n0", "-F", cfg, "-l", ldif)
	run("slaptest", "-F", cfg)
	matches, err := filepath.Glob(filepath.Join(cfg, "cn=config", "cn=schema", "cn={*}switchboard.ldif"))
	if err != nil || len(matches) != 1 {
		t.Fatalf("switchboard schema not in cn=config: %v %v", matches, err)
	}
	data, err := os.ReadFile(matches[0])
	if err != nil {
		t.Fatal(err)
	}
	unfolded := strings.ReplaceAll(string(data), "\n ", "")
	for _, want := range []string{"NAME 'status'", "SINGLE-VALUE", "NAME 'switchboardUser'", "AUXILIARY MAY ( host $ status )"} {
		if !strings.Contains(unfolded, want) {
			t.Errorf("loaded schema lacks %q:\n%s", want, unfolded)
		}
	}
}

func TestMessage(t *testing.T) {
	for _, size := range []int{0, 1, 2, 3, 100, 1000, 100000} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			raw := Message("a@example.org", "b@example.org", "hello", size)
			m, err := mail.ReadMessage(bytes.NewReader(raw))
			if err != nil {
				t.Fatal(err)
			}
			if got := m.Header.Get("Subject"); got != "hello" {
				t.Errorf("Subject = %q", got)
			}
			if m.Header.Get("Message-Id") == "" {
				t.Error("no Message-ID")
			}
			_, body, _ := bytes.Cut(raw, []byte("\r\n\r\n"))
			if len(body) < size || len(body) > max(size, 3)+2 {
				t.Errorf("body is %d bytes, want about %d", len(body), size)
			}
			for _, line := range bytes.SplitAfter(body, []byte("\r\n")) {
				if len(line) > 0 && !bytes.HasSuffix(line, []byte("\r\n")) {
					t.Errorf("line %q lacks CRLF", line)
				}
				if len(line) > 78 {
					t.Errorf("line is %d bytes", len(line))
				}
			}
		})
	}
}

func TestAllocIP(t *testing.T) {
	for range 1000 {
		s := AllocIP()
		ip := net.ParseIP(s).To4()
		if ip == nil || ip[0] != 127 || ip[1] == 0 || ip[3] == 0 || ip[3] == 255 {
			t.Fatalf("AllocIP() = %q", s)
		}
	}
	port, err := FreePort(AllocIP())
	if err != nil || port <= 0 {
		t.Fatalf("FreePort: %d, %v", port, err)
	}
}

func TestCheck(t *testing.T) {
	if err := Check(); err != nil {
		t.Fatal(err)
	}
}
