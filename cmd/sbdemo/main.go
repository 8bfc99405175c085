// Command sbdemo brings up a complete Switchboard setup on loopback: an
// OpenLDAP slapd with users whose host attribute names their backend, two
// Dovecot backends (mx1 and mx2) with seeded mailboxes, and `switchboard
// serve` in front of them. It logs in as a user of each backend through
// Switchboard and shows where each landed, then holds a user (a mailbox
// move: her login is refused with [UNAVAILABLE]), releases her, and kicks
// her live IDLE session (it gets a BYE). It then stays up until Ctrl-C so
// you can try it with any mail client and the admin commands.
//
//	go run ./cmd/sbdemo [-once] [-switchboard bin/switchboard]
//
// Without -switchboard it builds the binary from this checkout first.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"switchboard/internal/testbed"
)

const (
	// startTimeout bounds the wait for switchboard serve to answer.
	startTimeout = 10 * time.Second
	// kickTimeout bounds the wait for a kicked session's BYE.
	kickTimeout = 5 * time.Second
	// stopTimeout bounds switchboard's drain when the demo ends.
	stopTimeout = 5 * time.Second
)

// demo is one run: the testbed, the configuration and the switchboard
// process in front of it.
type demo struct {
	bin, dir, ip string
	tb           *testbed.Testbed
	conf         string
	logPath      string
	imaps        string // IMAPS listener
	ports        []int  // imap, imaps, pop3, pop3s, admin
	cmd          *exec.Cmd
	exited       chan error // switchboard's exit, from waitCmd
}

func main() {
	bin := flag.String("switchboard", "", "the switchboard binary to run (default: build one from this checkout)")
	dir := flag.String("dir", "", "directory for the demo's data (default: a new temporary one)")
	ip := flag.String("ip", "127.0.0.1", "loopback address Switchboard listens on")
	once := flag.Bool("once", false, "exit after the demonstration instead of staying up")
	flag.Parse()
	restore := takeTerminal()
	err := run(*bin, *dir, *ip, *once)
	restore()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sbdemo:", err)
		os.Exit(1)
	}
}

func run(bin, dir, ip string, once bool) error {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if err := testbed.Check(); err != nil {
		return err
	}
	if dir == "" {
		d, err := os.MkdirTemp("", "switchboard-demo-")
		if err != nil {
			return err
		}
		dir = d
		defer os.RemoveAll(d)
	}
	if bin == "" {
		b, err := build(dir)
		if err != nil {
			return err
		}
		bin = b
	}
	step("starting slapd and two Dovecot backends (mx1, mx2) on loopback")
	tb, err := testbed.Start(testbed.Options{Dir: filepath.Join(dir, "testbed")})
	if err != nil {
		return err
	}
	defer tb.Close()
	d := &demo{bin: bin, dir: dir, ip: ip, tb: tb}
	d.printTestbed()
	if err := d.start(); err != nil {
		return err
	}
	defer d.stop()
	if err := d.show(ctx); err != nil || ctx.Err() != nil || once {
		if err == nil {
			step("demo done")
		}
		return err
	}
	d.printTryIt()
	return d.wait(ctx)
}

// build builds switchboard from the checkout into dir.
func build(dir string) (string, error) {
	bin := filepath.Join(dir, "switchboard")
	step("building switchboard: go build -o " + bin + " ./cmd/switchboard")
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(goTool, "build", "-o", bin, "switchboard/cmd/switchboard")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build switchboard (run the demo from the checkout, or `make build` and pass -switchboard bin/switchboard): %w", err)
	}
	return bin, nil
}

// printTestbed prints the services and every user with password and
// backend.
func (d *demo) printTestbed() {
	tb := d.tb
	fmt.Printf("   LDAP      %s  (base %s)\n", tb.LDAP.URI, tb.LDAP.PeopleDN)
	for _, name := range []string{"mx1", "mx2"} {
		b := tb.Backends[name]
		fmt.Printf("   %-9s IMAP %s  POP3 %s\n", name, b.IMAPAddr, b.POP3Addr)
	}
	fmt.Println("   users (login, password, LDAP host):")
	for _, u := range tb.Users {
		fmt.Printf("     %-20s %-24s %s\n", u.Mail, fmt.Sprintf("%q", u.Password), strings.Join(u.Hosts, ","))
	}
}

// start writes and checks the configuration and starts switchboard serve
// in a process group of its own, so that Ctrl-C reaches the demo only
// and the demo stops switchboard in order.
func (d *demo) start() error {
	ports, err := freePorts(d.ip, 5)
	if err != nil {
		return err
	}
	d.ports = ports
	if d.conf, err = writeConfig(d.dir, d.ip, ports, d.tb); err != nil {
		return err
	}
	step("checking the configuration: switchboard check -config " + d.conf)
	out, err := exec.Command(d.bin, "check", "-config", d.conf).CombinedOutput()
	if err != nil {
		return fmt.Errorf("switchboard check: %v\n%s", err, out)
	}
	fmt.Print(indent(string(out)))

	step("starting switchboard serve")
	d.logPath = filepath.Join(d.dir, "switchboard.log")
	logFile, err := os.Create(d.logPath)
	if err != nil {
		return err
	}
	defer logFile.Close() // the child has its own descriptor
	cmd := exec.Command(d.bin, "serve", "-config", d.conf)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = testbed.ChildAttr()
	if err := cmd.Start(); err != nil {
		return err
	}
	d.cmd, d.exited = cmd, make(chan error, 1)
	go waitCmd(cmd, d.exited)
	d.imaps = fmt.Sprintf("%s:%d", d.ip, ports[1])
	if err := waitTLS(d.imaps, d.tb, startTimeout); err != nil {
		d.stop()
		out, _ := os.ReadFile(d.logPath)
		return fmt.Errorf("switchboard did not come up: %v\n%s", err, out)
	}
	fmt.Printf("   IMAP %s:%d (STARTTLS)  IMAPS %s  POP3 %s:%d (STLS)  POP3S %s:%d  admin http://%s:%d\n",
		d.ip, ports[0], d.imaps, d.ip, ports[2], d.ip, ports[3], d.ip, ports[4])
	return nil
}

// show runs the demonstration: routed logins, a hold and a kick.
func (d *demo) show(ctx context.Context) error {
	for _, mail := range []string{"alice@example.org", "bob@example.org"} {
		u, _ := d.tb.User(mail)
		step("switchboard lookup " + mail)
		out, _ := exec.Command(d.bin, "lookup", "-config", d.conf, mail).CombinedOutput()
		fmt.Print(indent(string(out)))
		step("logging in as " + mail + " through Switchboard (IMAPS " + d.imaps + ")")
		if err := showLogin(d.tb, d.imaps, u); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
	}
	if err := d.showHold(); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return nil
	}
	if err := d.showKick(); err != nil {
		return err
	}
	step("Switchboard's session log")
	time.Sleep(200 * time.Millisecond)
	if out, err := os.ReadFile(d.logPath); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, "msg=session") {
				fmt.Println("   " + l)
			}
		}
	}
	return nil
}

// admin runs an admin subcommand against the node and prints its output.
func (d *demo) admin(args ...string) error {
	cmdline := append([]string{args[0], "-config", d.conf}, args[1:]...)
	step("switchboard " + strings.Join(cmdline, " "))
	out, err := exec.Command(d.bin, cmdline...).CombinedOutput()
	fmt.Print(indent(string(out)))
	if err != nil {
		return fmt.Errorf("switchboard %s: %w", args[0], err)
	}
	return nil
}

// showHold holds alice (as a mailbox move does), shows her login refused
// with [UNAVAILABLE], and releases her.
func (d *demo) showHold() error {
	alice, _ := d.tb.User("alice@example.org")
	if err := d.admin("hold", "-ttl", "10m", alice.Mail); err != nil {
		return err
	}
	step("logging in as " + alice.Mail + " while she is held")
	c, err := dialIMAP(d.imaps, d.tb)
	if err != nil {
		return err
	}
	answer, err := c.login(alice)
	c.Close()
	if err != nil {
		return err
	}
	fmt.Println("   S: " + answer)
	if !strings.Contains(answer, "[UNAVAILABLE]") {
		return fmt.Errorf("held login answered %q, want [UNAVAILABLE]", answer)
	}
	return d.admin("release", alice.Mail)
}

// showKick opens a live IDLE session for alice and kicks it.
func (d *demo) showKick() error {
	alice, _ := d.tb.User("alice@example.org")
	step("logging in as " + alice.Mail + " again, and waiting in IDLE")
	c, err := dialIMAP(d.imaps, d.tb)
	if err != nil {
		return err
	}
	defer c.Close()
	answer, err := c.login(alice)
	if err != nil {
		return err
	}
	if i, j := strings.Index(answer, "[CAPABILITY "), strings.Index(answer, "] "); i > 0 && j > i {
		answer = answer[:i] + "[CAPABILITY …" + answer[j:]
	}
	fmt.Println("   S: " + answer)
	if !strings.HasPrefix(answer, "a OK") {
		return fmt.Errorf("login after release answered %q", answer)
	}
	for _, cmd := range []string{"b SELECT INBOX", "c IDLE"} {
		if err := c.send(cmd); err != nil {
			return err
		}
		if _, err := c.until(cmd[:1]+" ", "+ "); err != nil {
			return err
		}
	}
	fmt.Println("   S: + idling")
	if err := d.admin("invalidate", "-kick", alice.Mail); err != nil {
		return err
	}
	c.SetReadDeadline(time.Now().Add(kickTimeout))
	bye, err := c.until("* BYE")
	if err != nil {
		return fmt.Errorf("kicked session: no BYE: %w", err)
	}
	fmt.Println("   S: " + bye + "   (the session's client)")
	return nil
}

// printTryIt prints what to try while the demo stays up.
func (d *demo) printTryIt() {
	tb, p := d.tb, d.ports
	alice, _ := tb.User("alice@example.org")
	step("Switchboard is up; try it yourself (Ctrl-C stops everything):")
	fmt.Printf("   curl --cacert %s --resolve mail.example.org:%d:%s 'imaps://mail.example.org:%d/INBOX?ALL' -u '%s:%s'\n",
		tb.CA.File, p[1], d.ip, p[1], alice.Mail, alice.Password)
	fmt.Printf("   openssl s_client -quiet -CAfile %s -connect %s:%d -servername mail.example.org\n", tb.CA.File, d.ip, p[3])
	fmt.Println("   The admin commands, against this node:")
	for _, c := range [][2]string{{"status", ""}, {"hold", " -ttl 10m bob@example.org"},
		{"release", " bob@example.org"}, {"invalidate", " -kick bob@example.org"}} {
		fmt.Printf("     %s %s -config %s%s\n", d.bin, c[0], d.conf, c[1])
	}
	fmt.Printf("   config: %s   log: %s\n", d.conf, d.logPath)
}

// wait waits for Ctrl-C (or SIGTERM), which ends the demo cleanly, or for
// switchboard to exit, which is an error.
func (d *demo) wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		step("stopping")
		return nil
	case err := <-d.exited:
		d.exited <- err // for stop
		return fmt.Errorf("switchboard exited: %v", err)
	}
}

// stop stops switchboard (SIGTERM: it drains), or kills it after
// stopTimeout, and waits for it to exit.
func (d *demo) stop() {
	if d.cmd == nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(stopTimeout):
		d.cmd.Process.Kill()
		<-d.exited
	}
	d.cmd = nil
}

// waitCmd is the goroutine that reaps switchboard.
func waitCmd(cmd *exec.Cmd, done chan<- error) { done <- cmd.Wait() }

func step(s string) { fmt.Println("==> " + s) }

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return ""
	}
	return "   " + strings.ReplaceAll(s, "\n", "\n   ") + "\n"
}

// showLogin logs in through Switchboard, lists the INBOX, and says which
// backend the login landed on according to the backends' own logs.
func showLogin(tb *testbed.Testbed, addr string, u testbed.User) error {
	before := loginCounts(tb, u.Mail)
	c, err := imapclient.DialTLS(addr, &imapclient.Options{TLSConfig: tb.CA.ClientConfig("mail.example.org")})
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Login(u.Mail, u.Password).Wait(); err != nil {
		return fmt.Errorf("login %s: %w", u.Mail, err)
	}
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		return err
	}
	fmt.Printf("   logged in; INBOX has %d messages\n", sel.NumMessages)
	if sel.NumMessages > 0 {
		msgs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{Envelope: true}).Collect()
		if err == nil && len(msgs) > 0 && msgs[0].Envelope != nil {
			fmt.Printf("   message 1: %q\n", msgs[0].Envelope.Subject)
		}
	}
	c.Logout().Wait()
	time.Sleep(100 * time.Millisecond)
	after := loginCounts(tb, u.Mail)
	for name := range tb.Backends {
		if after[name] > before[name] {
			fmt.Printf("   landed on %s (LDAP host %q), as its Dovecot log shows\n", name, strings.Join(u.Hosts, ","))
			return nil
		}
	}
	return errors.New("no backend logged the login")
}

func loginCounts(tb *testbed.Testbed, mail string) map[string]int {
	n := map[string]int{}
	for name, b := range tb.Backends {
		log, _ := b.Log()
		n[name] = strings.Count(log, "Login: user=<"+mail+">")
	}
	return n
}

func writeConfig(dir, ip string, ports []int, tb *testbed.Testbed) (string, error) {
	cert, key, err := tb.CA.Issue("mail.example.org", ip)
	if err != nil {
		return "", err
	}
	secret := filepath.Join(dir, "ldap.secret")
	if err := os.WriteFile(secret, []byte(tb.LDAP.BindPassword+"\n"), 0o600); err != nil {
		return "", err
	}
	var hosts strings.Builder
	for _, name := range []string{"mx1", "mx2"} {
		b := tb.Backends[name]
		fmt.Fprintf(&hosts, "%s = { imap = %q, pop3 = %q }\n", name, b.IMAPAddr, b.POP3Addr)
	}
	conf := fmt.Sprintf(`# Generated by sbdemo.
hostname = "mail.example.org"
trusted_networks = ["127.0.0.0/8"]
auth_fail_delay = "1s"

[tls]
cert = %q
key = %q

[[listen]]
name = "imap"
protocol = "imap"
address = "%s:%d"
tls = "starttls"

[[listen]]
name = "imaps"
protocol = "imap"
address = "%s:%d"
tls = "implicit"

[[listen]]
name = "pop3"
protocol = "pop3"
address = "%s:%d"
tls = "starttls"

[[listen]]
name = "pop3s"
protocol = "pop3"
address = "%s:%d"
tls = "implicit"

[hosts]
%s
[map]
type = "ldap"
cache_ttl = "1m"

[admin]
address = "%s:%d"                # loopback: no token needed

[ldap]
uris = [%q]
bind_dn = %q
bind_password_file = %q
base_dn = %q
`, cert, key, ip, ports[0], ip, ports[1], ip, ports[2], ip, ports[3], hosts.String(),
		ip, ports[4], tb.LDAP.URI, tb.LDAP.BindDN, secret, tb.LDAP.PeopleDN)
	path := filepath.Join(dir, "switchboard.toml")
	return path, os.WriteFile(path, []byte(conf), 0o644)
}

func freePorts(ip string, n int) ([]int, error) {
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", ip+":0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// waitTLS waits until a TLS handshake with addr succeeds.
func waitTLS(addr string, tb *testbed.Testbed, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		d := &net.Dialer{Timeout: time.Second}
		c, err := tls.DialWithDialer(d, "tcp", addr, tb.CA.ClientConfig("mail.example.org"))
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// imapConn is a raw IMAP client, to show the server's answers as sent.
type imapConn struct {
	net.Conn
	r *bufio.Reader
}

// dialIMAP connects to an implicit-TLS IMAP listener and reads the
// greeting.
func dialIMAP(addr string, tb *testbed.Testbed) (*imapConn, error) {
	d := &net.Dialer{Timeout: startTimeout}
	conn, err := tls.DialWithDialer(d, "tcp", addr, tb.CA.ClientConfig("mail.example.org"))
	if err != nil {
		return nil, err
	}
	c := &imapConn{Conn: conn, r: bufio.NewReader(conn)}
	c.SetDeadline(time.Now().Add(startTimeout))
	if _, err := c.until("* OK"); err != nil {
		conn.Close()
		return nil, fmt.Errorf("greeting: %w", err)
	}
	return c, nil
}

func (c *imapConn) send(line string) error {
	_, err := c.Write([]byte(line + "\r\n"))
	return err
}

// until reads lines until one starts with one of prefixes and returns it.
func (c *imapConn) until(prefixes ...string) (string, error) {
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return "", err
		}
		line = strings.TrimRight(line, "\r\n")
		for _, p := range prefixes {
			if strings.HasPrefix(line, p) {
				return line, nil
			}
		}
	}
}

// login sends LOGIN with u's credentials (as quoted strings, RFC 9051
// section 4.3) and returns the tagged answer.
func (c *imapConn) login(u testbed.User) (string, error) {
	if err := c.send("a LOGIN " + quote(u.Mail) + " " + quote(u.Password)); err != nil {
		return "", err
	}
	return c.until("a ")
}

func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}
