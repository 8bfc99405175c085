package router_test

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// Login benchmarks against the real testbed: a whole session (connect,
// login, one command, logout) direct to Dovecot and through Switchboard,
// over plaintext from a trusted address. `go test -bench Session
// ./router/` compares them; the bench/ suite does the full comparison.

func BenchmarkIMAPSessionDirect(b *testing.B) { benchSession(b, "imap", true) }
func BenchmarkIMAPSessionProxy(b *testing.B)  { benchSession(b, "imap", false) }
func BenchmarkPOP3SessionDirect(b *testing.B) { benchSession(b, "pop3", true) }
func BenchmarkPOP3SessionProxy(b *testing.B)  { benchSession(b, "pop3", false) }

func benchSession(b *testing.B, proto string, direct bool) {
	e := getEnv(b)
	alice, _ := e.tb.User("alice@example.org")
	addr, src := e.imap, e.trustedIP
	if proto == "pop3" {
		addr = e.pop3
	}
	if direct {
		addr, src = e.tb.Backends["mx1"].IMAPAddr, ""
		if proto == "pop3" {
			addr = e.tb.Backends["mx1"].POP3Addr
		}
	}
	var script []string // send, expect-prefix pairs
	if proto == "imap" {
		script = []string{
			"", "* OK",
			fmt.Sprintf("a LOGIN %s {%d+}\r\n%s\r\n", alice.Mail, len(alice.Password), alice.Password), "a OK",
			"b SELECT INBOX\r\n", "b OK",
			"c LOGOUT\r\n", "c OK",
		}
	} else {
		script = []string{
			"", "+OK",
			"USER " + alice.Mail + "\r\n", "+OK",
			"PASS " + alice.Password + "\r\n", "+OK",
			"STAT\r\n", "+OK",
			"QUIT\r\n", "+OK",
		}
	}
	buf := make([]byte, 4096)
	b.ResetTimer()
	for b.Loop() {
		d := net.Dialer{}
		if src != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
		}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		for i := 0; i < len(script); i += 2 {
			if script[i] != "" {
				c.Write([]byte(script[i]))
			}
			var got strings.Builder
			for !strings.Contains(got.String(), "\n"+script[i+1]) && !strings.HasPrefix(got.String(), script[i+1]) {
				n, err := c.Read(buf)
				if err != nil {
					b.Fatalf("%s step %d: %v (got %q)", proto, i/2, err, got.String())
				}
				got.Write(buf[:n])
			}
		}
		c.Close()
	}
}
