package router_test

import (
	"strings"
	"testing"
	"time"
)

// TestSASLLogin checks the SASL LOGIN mechanism (IMAP AUTHENTICATE LOGIN
// and POP3 AUTH LOGIN), which some clients offer instead of PLAIN, with
// and without an initial response.
func TestSASLLogin(t *testing.T) {
	e := getEnv(t)
	alice := e.user(t, "alice@example.org")
	u, p := b64(alice.Mail), b64(alice.Password)

	r := newRaw(t, dial(t, e.imap, e.trustedIP))
	if l := r.line(); !strings.Contains(l, "AUTH=LOGIN") {
		t.Errorf("greeting does not offer AUTH=LOGIN: %q", l)
	}
	r.send("a AUTHENTICATE LOGIN\r\n")
	if l := r.line(); l != "+ VXNlcm5hbWU6" {
		t.Fatalf("first challenge %q", l)
	}
	r.send(u + "\r\n")
	if l := r.line(); l != "+ UGFzc3dvcmQ6" {
		t.Fatalf("second challenge %q", l)
	}
	r.send(p + "\r\n")
	if l := r.until("a "); !strings.HasPrefix(l, "a OK") {
		t.Fatalf("AUTHENTICATE LOGIN answered %q", l)
	}
	r.send("b LOGOUT\r\n")
	r.until("b ")

	r = newRaw(t, dial(t, e.pop3, e.trustedIP))
	r.line()
	r.send("AUTH LOGIN " + u + "\r\n")
	if l := r.line(); l != "+ UGFzc3dvcmQ6" {
		t.Fatalf("POP3 challenge after an initial response: %q", l)
	}
	r.send(p + "\r\n")
	if l := r.line(); !strings.HasPrefix(l, "+OK") {
		t.Fatalf("AUTH LOGIN answered %q", l)
	}
	r.send("QUIT\r\n")
	r.line()
}

// TestControlCharactersInCredentials checks that CR, LF or NUL inside a
// user name or password is refused before anything reaches a backend:
// neither protocol's login is attempted there.
func TestControlCharactersInCredentials(t *testing.T) {
	e := getEnv(t)
	bob := e.user(t, "bob@example.org")
	before := attempts(t, e, bob.Mail)
	r := newRaw(t, dial(t, e.imap, e.trustedIP))
	r.line()
	r.send("a AUTHENTICATE PLAIN " + b64("\x00"+bob.Mail+"\x00"+bob.Password+"\r\nb2 NOOP") + "\r\n")
	if l := r.until("a "); !strings.HasPrefix(l, "a BAD") {
		t.Errorf("CR LF in an IMAP password answered %q", l)
	}
	r.send("b LOGIN {5+}\r\nbo\nb\x20" + bob.Password + "\r\n")
	if l := r.until("b "); !strings.HasPrefix(l, "b BAD") {
		t.Errorf("LF in an IMAP user name answered %q", l)
	}
	p := newRaw(t, dial(t, e.pop3, e.trustedIP))
	p.line()
	p.send("AUTH PLAIN " + b64("\x00"+bob.Mail+"\x00"+bob.Password+"\r\nQUIT") + "\r\n")
	if l := p.line(); !strings.HasPrefix(l, "-ERR") {
		t.Errorf("CR LF in a POP3 password answered %q", l)
	}
	// A good login last: once the backend has logged it, every attempt
	// before it is in the log too.
	p.send("AUTH PLAIN " + b64("\x00"+bob.Mail+"\x00"+bob.Password) + "\r\n")
	if l := p.line(); !strings.HasPrefix(l, "+OK") {
		t.Fatalf("good POP3 login answered %q", l)
	}
	var after int
	within(5*time.Second, func() bool { after = attempts(t, e, bob.Mail); return after > before })
	if after != before+1 {
		t.Errorf("the backend saw %d login attempts of %s, want 1 (the good one)", after-before, bob.Mail)
	}
}

// attempts counts the login attempts, good or bad, that the backends
// logged for mail.
func attempts(t *testing.T, e *env, mail string) int {
	t.Helper()
	n := 0
	for _, d := range e.tb.Backends {
		log, err := d.Log()
		if err != nil {
			t.Fatal(err)
		}
		n += strings.Count(log, "user=<"+mail+">")
	}
	return n
}
