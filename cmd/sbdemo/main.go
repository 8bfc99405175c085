// Command sbdemo brings up a complete Switchboard setup on loopback: an
// OpenLDAP slapd with users whose host attribute names their backend, two
// Dovecot backends (mx1 and mx2) with seeded mailboxes, and `switchboard
// serve` in front of them. It then logs in as a user of each backend
// through Switchboard, shows where each landed, and stays up until
// interrupted so you can try it with any mail client.
//
//	go run ./cmd/sbdemo -switchboard bin/switchboard [-once]
package main

import (
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
	"strings"
	"syscall"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"switchboard/internal/testbed"
)

func main() {
	bin := flag.String("switchboard", "bin/switchboard", "the switchboard binary to run")
	dir := flag.String("dir", "", "directory for the demo's data (default: a new temporary one)")
	ip := flag.String("ip", "127.0.0.1", "loopback address Switchboard listens on")
	once := flag.Bool("once", false, "exit after the demonstration instead of staying up")
	flag.Parse()
	if err := run(*bin, *dir, *ip, *once); err != nil {
		fmt.Fprintln(os.Stderr, "sbdemo:", err)
		os.Exit(1)
	}
}

func run(bin, dir, ip string, once bool) error {
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
	step("starting slapd and two Dovecot backends (mx1, mx2) on loopback")
	tb, err := testbed.Start(testbed.Options{Dir: filepath.Join(dir, "testbed")})
	if err != nil {
		return err
	}
	defer tb.Close()
	fmt.Printf("   LDAP      %s  (base %s)\n", tb.LDAP.URI, tb.LDAP.PeopleDN)
	for _, name := range []string{"mx1", "mx2"} {
		b := tb.Backends[name]
		fmt.Printf("   %-9s IMAP %s  POP3 %s\n", name, b.IMAPAddr, b.POP3Addr)
	}

	ports, err := freePorts(ip, 4)
	if err != nil {
		return err
	}
	conf, err := writeConfig(dir, ip, ports, tb)
	if err != nil {
		return err
	}
	step("checking the configuration: switchboard check -config " + conf)
	if out, err := exec.Command(bin, "check", "-config", conf).CombinedOutput(); err != nil {
		return fmt.Errorf("switchboard check: %v\n%s", err, out)
	} else {
		fmt.Print(indent(string(out)))
	}

	step("starting switchboard serve")
	logPath := filepath.Join(dir, "switchboard.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(bin, "serve", "-config", conf)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = testbed.ChildAttr()
	if err := cmd.Start(); err != nil {
		return err
	}
	defer stop(cmd)
	imaps := fmt.Sprintf("%s:%d", ip, ports[1])
	if err := waitTLS(imaps, tb, 10*time.Second); err != nil {
		out, _ := os.ReadFile(logPath)
		return fmt.Errorf("switchboard did not come up: %v\n%s", err, out)
	}
	fmt.Printf("   IMAP %s:%d (STARTTLS)  IMAPS %s  POP3 %s:%d (STLS)  POP3S %s:%d\n", ip, ports[0], imaps, ip, ports[2], ip, ports[3])

	for _, mail := range []string{"alice@example.org", "bob@example.org"} {
		u, _ := tb.User(mail)
		step("switchboard lookup " + mail)
		out, _ := exec.Command(bin, "lookup", "-config", conf, mail).CombinedOutput()
		fmt.Print(indent(string(out)))
		step("logging in as " + mail + " through Switchboard (IMAPS " + imaps + ")")
		if err := showLogin(tb, imaps, u); err != nil {
			return err
		}
	}
	step("Switchboard's session log")
	time.Sleep(200 * time.Millisecond)
	if out, err := os.ReadFile(logPath); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, "msg=session") {
				fmt.Println("   " + l)
			}
		}
	}
	if once {
		step("demo done")
		return nil
	}
	alice, _ := tb.User("alice@example.org")
	step("Switchboard is up; try it yourself (Ctrl-C stops everything):")
	fmt.Printf("   curl --cacert %s --resolve mail.example.org:%d:%s 'imaps://mail.example.org:%d/INBOX?ALL' -u '%s:%s'\n",
		tb.CA.File, ports[1], ip, ports[1], alice.Mail, alice.Password)
	fmt.Printf("   openssl s_client -quiet -CAfile %s -connect %s:%d -servername mail.example.org\n", tb.CA.File, ip, ports[3])
	fmt.Printf("   config: %s   log: %s\n", conf, logPath)
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-ctx.Done():
		step("stopping")
	case err := <-done:
		return fmt.Errorf("switchboard exited: %v", err)
	}
	return nil
}

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

[ldap]
uris = [%q]
bind_dn = %q
bind_password_file = %q
base_dn = %q
`, cert, key, ip, ports[0], ip, ports[1], ip, ports[2], ip, ports[3], hosts.String(),
		tb.LDAP.URI, tb.LDAP.BindDN, secret, tb.LDAP.PeopleDN)
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

func stop(cmd *exec.Cmd) {
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
	}
}
