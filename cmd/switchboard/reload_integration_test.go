package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"switchboard/internal/testbed"
)

// TestServeReloadsCertificates: SIGHUP swaps the certificate new
// handshakes see, a session logged in before keeps working, and a broken
// certificate file is refused with the old one kept.
func TestServeReloadsCertificates(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a switchboard process against slapd and Dovecot; skipped with -short")
	}
	tb, dir := startTestbed(t)
	n := newSBNode(t, dir, "tls")
	host, _, _ := net.SplitHostPort(n.imapAddr)
	port, _ := testbed.FreePort(host)
	imaps := net.JoinHostPort(host, strconv.Itoa(port))

	issue := func() *x509.Certificate {
		cert, key, err := tb.CA.Issue("mail.example.org")
		if err != nil {
			t.Fatal(err)
		}
		copyFile(t, cert, filepath.Join(dir, "tls.pem"))
		copyFile(t, key, filepath.Join(dir, "tls.key"))
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			t.Fatal(err)
		}
		leaf, _ := x509.ParseCertificate(pair.Certificate[0])
		return leaf
	}
	first := issue()
	n.writeConfig(tb, fmt.Sprintf(`
[tls]
cert = "tls.pem"
key = "tls.key"

[[listen]]
protocol = "imap"
address = %q
tls = "implicit"

[admin]
address = %q
token_file = "admin.token"
`, imaps, n.admin))
	stopAtEnd(t, n)
	n.start()

	conf := tb.CA.ClientConfig("mail.example.org")
	served := func() *x509.Certificate {
		c, err := tls.Dial("tcp", imaps, conf)
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0]
	}
	if got := served(); got.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Fatalf("served serial %v, want the first certificate's %v", got.SerialNumber, first.SerialNumber)
	}

	// A session that lives through the reload.
	alice, _ := tb.User("alice@example.org")
	c, err := tls.Dial("tcp", imaps, conf)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	expect := func(prefix string) {
		t.Helper()
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("waiting for %q: %v", prefix, err)
			}
			if strings.HasPrefix(l, prefix) {
				return
			}
		}
	}
	expect("* OK")
	fmt.Fprintf(c, "a LOGIN %s {%d+}\r\n%s\r\n", alice.Mail, len(alice.Password), alice.Password)
	expect("a OK")

	second := issue()
	n.signal(syscall.SIGHUP)
	waitUntil(t, 5*time.Second, "the new certificate", func() bool {
		return served().SerialNumber.Cmp(second.SerialNumber) == 0
	})
	fmt.Fprintf(c, "b SELECT INBOX\r\n")
	expect("b OK")

	mustWrite(t, filepath.Join(dir, "tls.key"), "not a key\n")
	n.signal(syscall.SIGHUP)
	waitUntil(t, 5*time.Second, "the failed reload in the log", func() bool {
		return strings.Contains(n.logTail(), "TLS reload failed")
	})
	if got := served(); got.SerialNumber.Cmp(second.SerialNumber) != 0 {
		t.Fatalf("after a broken reload: serial %v, want the second certificate's %v", got.SerialNumber, second.SerialNumber)
	}
	fmt.Fprintf(c, "c LOGOUT\r\n")
	expect("c OK")
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, to, string(b))
}
