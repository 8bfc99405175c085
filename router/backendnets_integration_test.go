package router_test

import (
	"strings"
	"testing"

	"switchboard/internal/testbed"
)

// TestHostValueOutsideBackendNets checks that a host value the host map
// does not name is dialled only inside the backend networks, and never
// with a port of its own: a directory write must not turn the proxy into
// a way into other services. The dial is refused before any packet is
// sent (the address checked is a documentation one, RFC 5737).
func TestHostValueOutsideBackendNets(t *testing.T) {
	e := getEnv(t)
	mx1 := e.tb.Backends["mx1"]
	users := []testbed.User{
		{Mail: "public@example.org", Password: "public-pw", Hosts: []string{"203.0.113.5"}},
		{Mail: "ported@example.org", Password: "ported-pw", Hosts: []string{mx1.IMAPAddr}},
	}
	if err := e.tb.LDAP.AddUsers(users...); err != nil {
		t.Fatal(err)
	}
	deleteAtEnd(t, e, e.tb.LDAP.UserDN(users[0].Mail), e.tb.LDAP.UserDN(users[1].Mail))
	for _, u := range users {
		r := newRaw(t, dial(t, e.imap, e.trustedIP))
		r.line()
		r.send("a LOGIN " + u.Mail + " " + u.Password + "\r\n")
		if l := r.until("a "); !strings.HasPrefix(l, "a NO [UNAVAILABLE]") {
			t.Errorf("%s (host %s): %q, want [UNAVAILABLE]", u.Mail, u.Hosts[0], l)
		}
	}
	logs := e.logs.String()
	for _, want := range []string{
		"routing error: backend address outside backend networks",
		`routing error: host value refused`,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("no %q in the log", want)
		}
	}
	if strings.Contains(logs, "backend suspect: logins skip it until it greets again backend=203.0.113.5") {
		t.Errorf("a refused address was marked suspect")
	}
}
