package main

import (
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"switchboard/internal/testbed"
)

// TestDirectoryChangesAndWebmailCache runs three clustered nodes, each
// with a cached webmail listener, over a slapd with the syncprov overlay:
// an LDAP modify of a user's host, made with no Switchboard command,
// kicks the user's sessions on every node within a second and the next
// login lands on the new backend; a kick empties every node's webmail
// cache.
func TestDirectoryChangesAndWebmailCache(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three switchboard processes against slapd and Dovecot; skipped with -short")
	}
	tb, dir := startTestbedWith(t, testbed.Options{ConfigureLDAP: func(o *testbed.SlapdOptions) { o.SyncProv = true }})
	mx1, mx2 := tb.Backends["mx1"], tb.Backends["mx2"]
	nodes := []*sbNode{newSBNode(t, dir, "node1"), newSBNode(t, dir, "node2"), newSBNode(t, dir, "node3")}
	webmail := make([]string, len(nodes))
	var peers []string
	for _, n := range nodes {
		peers = append(peers, fmt.Sprintf("%q", n.gossip))
	}
	for i, n := range nodes {
		host, port, _ := net.SplitHostPort(n.gossip)
		wport, err := testbed.FreePort(host)
		if err != nil {
			t.Fatal(err)
		}
		webmail[i] = net.JoinHostPort(host, strconv.Itoa(wport))
		n.writeConfig(tb, fmt.Sprintf(`
[[listen]]
name = "webmail"
protocol = "imap"
address = %q
tls = "none"
cache = true

[cluster]
node_name = %q
bind_addr = %q
bind_port = %s
peers = [%s]
keyring_file = "cluster.keys"

[admin]
address = %q
token_file = "admin.token"
`, webmail[i], n.name, host, port, strings.Join(peers, ", "), n.admin))
	}
	stopAtEnd(t, nodes...)
	for _, n := range nodes {
		n.start()
	}
	waitUntil(t, 20*time.Second, "every node's watcher follows the directory", func() bool {
		for _, n := range nodes {
			if !strings.Contains(n.logTail(), "mode=sync") {
				return false
			}
		}
		return true
	})

	alice, _ := tb.User("alice@example.org") // on mx1
	t.Run("an ldapmodify of host kicks on every node", func(t *testing.T) {
		byes := make(chan bye, len(nodes))
		for _, n := range nodes {
			c, a := loginVia(t, n.imapAddr, alice.Mail, alice.Password)
			defer c.close()
			if !strings.HasPrefix(a, "a OK") {
				t.Fatalf("login via %s: %q", n.name, a)
			}
			go readBye(c, byes)
		}
		before := countLogins(t, mx2, alice.Mail)
		t0 := time.Now()
		if err := tb.LDAP.SetHosts(alice.Mail, "mx2"); err != nil {
			t.Fatal(err)
		}
		var worst time.Duration
		for range nodes {
			b := <-byes
			if b.err != nil {
				t.Fatalf("no BYE after the LDAP change: %v", b.err)
			}
			worst = max(worst, b.at.Sub(t0))
		}
		t.Logf("ldapmodify of host: every node's session read * BYE within %v", worst.Round(time.Millisecond))
		if worst > time.Second {
			t.Errorf("the last BYE came %v after the change, want within 1s", worst)
		}
		c, a := loginVia(t, nodes[1].imapAddr, alice.Mail, alice.Password)
		c.close()
		if !strings.HasPrefix(a, "a OK") {
			t.Fatalf("login after the change: %q", a)
		}
		waitUntil(t, 3*time.Second, "the next login on mx2", func() bool {
			return countLogins(t, mx2, alice.Mail) > before
		})
	})

	bob, _ := tb.User("bob@example.org") // on mx2
	t.Run("a kick empties every node's webmail cache", func(t *testing.T) {
		for i := range nodes {
			c, a := loginVia(t, webmail[i], bob.Mail, bob.Password)
			if !strings.HasPrefix(a, "a OK") {
				t.Fatalf("webmail login via %s: %q", nodes[i].name, a)
			}
			fmt.Fprintf(c.conn, "z LOGOUT\r\n")
			for {
				line, err := c.readLine(5 * time.Second)
				if err != nil {
					t.Fatalf("LOGOUT via %s: %v", nodes[i].name, err)
				}
				if strings.HasPrefix(line, "z ") {
					break
				}
			}
			c.close()
		}
		for _, n := range nodes {
			waitUntil(t, 2*time.Second, n.name+" parks bob's connection", func() bool { return parked(t, n) == 1 })
		}
		if code, out, errOut := runCmd("invalidate", "-kick", "-config", nodes[0].config, bob.Mail); code != 0 {
			t.Fatalf("invalidate -kick = %d: %s%s", code, out, errOut)
		}
		for _, n := range nodes {
			waitUntil(t, 2*time.Second, n.name+" drops bob's parked connection", func() bool { return parked(t, n) == 0 })
		}
		before := countLogins(t, mx2, bob.Mail)
		c, a := loginVia(t, webmail[2], bob.Mail, bob.Password)
		c.close()
		if !strings.HasPrefix(a, "a OK") {
			t.Fatalf("webmail login after the kick: %q", a)
		}
		waitUntil(t, 3*time.Second, "a backend login after the kick", func() bool {
			return countLogins(t, mx2, bob.Mail) > before
		})
	})
	_ = mx1
}

var parkedMetric = regexp.MustCompile(`(?m)^switchboard_conncache_parked (\d+)`)

// parked reads the node's gauge of parked webmail connections.
func parked(t *testing.T, n *sbNode) int {
	t.Helper()
	code, body, err := n.get("/metrics")
	if err != nil || code != 200 {
		t.Fatalf("%s /metrics: %d %v", n.name, code, err)
	}
	m := parkedMetric.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("%s /metrics has no switchboard_conncache_parked", n.name)
	}
	v, _ := strconv.Atoi(m[1])
	return v
}
