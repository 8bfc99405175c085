package control

import (
	crand "crypto/rand"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"

	"switchboard/cluster"
)

// freeAddr returns a loopback address and a port free on it for TCP, to
// be used for UDP as well.
func freeAddr(t *testing.T) (string, int) {
	t.Helper()
	ip := fmt.Sprintf("127.%d.%d.%d", 100+rand.N(100), rand.N(250), 2+rand.N(250))
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ip, ln.Addr().(*net.TCPAddr).Port
}

// startMember starts a cluster member on loopback whose Handler is a new
// Control over r.
func startMember(t *testing.T, name string, key cluster.Key, peers []string, r *recorder) (*cluster.Cluster, string) {
	t.Helper()
	ctl := New(&Options{Routes: r, Cache: r, Logger: quiet})
	ctl.SetSessions(r)
	ip, port := freeAddr(t)
	cl, err := cluster.New(&cluster.Options{
		NodeName: name, BindAddr: ip, BindPort: port, Peers: peers,
		Keys: []cluster.Key{key}, Handler: ctl.Handler(), Logger: quiet,
		GossipInterval: 50 * time.Millisecond, ProbeInterval: 200 * time.Millisecond,
		ProbeTimeout: 100 * time.Millisecond, StateInterval: 100 * time.Millisecond,
		ReconnectInterval: 500 * time.Millisecond, TCPTimeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Shutdown() })
	ctl.SetCluster(cl)
	return cl, net.JoinHostPort(ip, strconv.Itoa(port))
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestControlOverCluster runs two real cluster members, each with its
// Control as Handler: a request on one is carried out on both.
func TestControlOverCluster(t *testing.T) {
	key := make(cluster.Key, 32)
	crand.Read(key)
	ra, rb := &recorder{}, &recorder{}
	a, addrA := startMember(t, "a", key, nil, ra)
	b, _ := startMember(t, "b", key, []string{addrA}, rb)
	waitFor(t, "two members alive", func() bool { return len(a.Members()) == 2 && len(b.Members()) == 2 })

	ctlA := New(&Options{Logger: quiet}) // a second front door to a's cluster
	ctlA.SetCluster(a)
	if err := ctlA.Invalidate("alice@example.org", true); err != nil {
		t.Fatal(err)
	}
	want := []string{"invalidate alice@example.org", "drop alice@example.org", kick, "drop alice@example.org"}
	for name, r := range map[string]*recorder{"a": ra, "b": rb} {
		var got []string
		waitFor(t, name+" carries out the kick", func() bool {
			got = append(got, r.take()...)
			return len(got) >= len(want)
		})
		if !slices.Equal(got, want) {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}

	if err := ctlA.Hold("bob@example.org", true, time.Minute); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b drops bob's parked connections", func() bool { return slices.Contains(rb.take(), "drop bob@example.org") })
	if !b.Held("bob@example.org") {
		t.Error("bob not held on b")
	}
}
