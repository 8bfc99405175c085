package cluster

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// Set SWITCHBOARD_TEST_LOG=debug (or info, warn) to see the nodes' logs.
func testLogger(t testing.TB) *slog.Logger {
	level := slog.LevelError
	switch os.Getenv("SWITCHBOARD_TEST_LOG") {
	case "debug":
		level = slog.LevelDebug
	case "info":
		level = slog.LevelInfo
	case "warn":
		level = slog.LevelWarn
	}
	w := &closableWriter{w: t.Output()}
	t.Cleanup(w.close) // registered first, runs last
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// closableWriter drops writes after close: memberlist goroutines may log
// after a test ends, which testing does not allow.
type closableWriter struct {
	mu     sync.Mutex
	w      io.Writer
	closed bool
}

func (w *closableWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return len(p), nil
	}
	return w.w.Write(p)
}

func (w *closableWriter) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}

func newKey(t testing.TB) Key {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

// recorder is a Handler that records calls as strings.
type recorder struct {
	mu    sync.Mutex
	calls []string
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	r.calls = append(r.calls, s)
	r.mu.Unlock()
}
func (r *recorder) Invalidate(u string)     { r.add("invalidate " + u) }
func (r *recorder) Kick(u string)           { r.add("kick " + u) }
func (r *recorder) Hold(u string, hel bool) { r.add(fmt.Sprintf("hold %s %v", u, hel)) }

func (r *recorder) count(s string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.calls {
		if c == s {
			n++
		}
	}
	return n
}

func (r *recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.calls, ", ")
}

// eventually polls cond until it holds or d passes.
func eventually(t testing.TB, d time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: "+format, append([]any{d}, args...)...)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fastOptions returns options with short timers for tests on loopback.
func fastOptions(t testing.TB, name, ip string, port int, keys []Key, peers []string, h Handler) *Options {
	return &Options{
		NodeName:          name,
		BindAddr:          ip,
		BindPort:          port,
		Peers:             peers,
		Keys:              keys,
		Handler:           h,
		Logger:            testLogger(t),
		GossipInterval:    50 * time.Millisecond,
		ProbeInterval:     200 * time.Millisecond,
		ProbeTimeout:      100 * time.Millisecond,
		SuspicionMult:     2,
		PushPullInterval:  2 * time.Second,
		TCPTimeout:        time.Second,
		StateInterval:     100 * time.Millisecond,
		ReconnectInterval: 500 * time.Millisecond,
		tweak: func(mc *memberlist.Config) {
			if port == 0 {
				mc.BindPort = 0 // any free port
			}
			mc.GossipToTheDeadTime = 2 * time.Second
		},
	}
}

var nextLoopback atomic.Uint32

// loopbackIP returns a fresh 127.0.0.x address for a test node.
func loopbackIP() string {
	return fmt.Sprintf("127.0.0.%d", 10+nextLoopback.Add(1)%240)
}

type testNode struct {
	*Cluster
	rec  *recorder
	ip   string
	port int
}

func (n *testNode) addr() string { return fmt.Sprintf("%s:%d", n.ip, n.port) }

func startNode(t testing.TB, name string, keys []Key, peers []string, ip string, port int) *testNode {
	t.Helper()
	if ip == "" {
		ip = loopbackIP()
	}
	rec := &recorder{}
	c, err := New(fastOptions(t, name, ip, port, keys, peers, rec))
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() { _ = c.Shutdown() })
	return &testNode{Cluster: c, rec: rec, ip: ip, port: int(c.ml.LocalNode().Port)}
}

func startCluster(t testing.TB, n int, keys []Key) []*testNode {
	t.Helper()
	var nodes []*testNode
	for i := range n {
		var peers []string
		if i > 0 {
			peers = []string{nodes[0].addr()}
		}
		nodes = append(nodes, startNode(t, fmt.Sprintf("n%d", i+1), keys, peers, "", 0))
	}
	waitAlive(t, nodes, n)
	return nodes
}

func aliveCount(c *Cluster) int {
	n := 0
	for _, m := range c.Members() {
		if m.State == StateAlive {
			n++
		}
	}
	return n
}

func waitAlive(t testing.TB, nodes []*testNode, want int) {
	t.Helper()
	eventually(t, 10*time.Second, func() bool {
		for _, n := range nodes {
			if aliveCount(n.Cluster) != want {
				return false
			}
		}
		return true
	}, "nodes do not all see %d alive members", want)
}

func memberState(c *Cluster, name string) (State, bool) {
	for _, m := range c.Members() {
		if m.Name == name {
			return m.State, true
		}
	}
	return 0, false
}

func TestThreeNodes(t *testing.T) {
	keys := []Key{newKey(t)}
	nodes := startCluster(t, 3, keys)

	t.Run("InvalidateKick", func(t *testing.T) {
		start := time.Now()
		if err := nodes[0].Invalidate("alice", true); err != nil {
			t.Fatalf("Invalidate: %v", err)
		}
		eventually(t, time.Second, func() bool {
			for _, n := range nodes {
				if n.rec.count("invalidate alice") == 0 || n.rec.count("kick alice") == 0 {
					return false
				}
			}
			return true
		}, "not every node invalidated and kicked alice")
		t.Logf("all handlers fired after %v", time.Since(start))
		// Gossip copies and relays must not call the handler again.
		time.Sleep(500 * time.Millisecond)
		for _, n := range nodes {
			if got := n.rec.count("invalidate alice"); got != 1 {
				t.Errorf("%s: invalidate alice called %d times: %s", n.Name(), got, n.rec)
			}
			if got := n.rec.count("kick alice"); got != 1 {
				t.Errorf("%s: kick alice called %d times", n.Name(), got)
			}
		}
		if err := nodes[1].Invalidate("carol", false); err != nil {
			t.Fatal(err)
		}
		eventually(t, time.Second, func() bool {
			return nodes[0].rec.count("invalidate carol") == 1 && nodes[2].rec.count("invalidate carol") == 1
		}, "invalidate carol not everywhere")
		if nodes[2].rec.count("kick carol") != 0 {
			t.Error("kick without kick=true")
		}
		if err := nodes[0].Invalidate("", false); !errors.Is(err, ErrBadUser) {
			t.Errorf("empty user: %v", err)
		}
	})

	t.Run("Hold", func(t *testing.T) {
		if err := nodes[1].Hold("bob", true, time.Minute); err != nil {
			t.Fatal(err)
		}
		eventually(t, time.Second, func() bool {
			for _, n := range nodes {
				if !n.Held("bob") || n.rec.count("hold bob true") != 1 {
					return false
				}
			}
			return true
		}, "bob not held everywhere")

		// A node joining afterwards learns the hold in its first exchange.
		late := startNode(t, "n4", keys, []string{nodes[2].addr()}, "", 0)
		eventually(t, 5*time.Second, func() bool {
			return late.Held("bob") && late.rec.count("hold bob true") == 1
		}, "late node does not see bob held")

		if err := nodes[0].Hold("bob", false, 0); err != nil {
			t.Fatal(err)
		}
		all := append(nodes[:3:3], late)
		eventually(t, 2*time.Second, func() bool {
			for _, n := range all {
				if n.Held("bob") || n.rec.count("hold bob false") != 1 {
					return false
				}
			}
			return true
		}, "bob still held somewhere")

		// The TTL is a safety net: holds expire by themselves.
		if err := nodes[2].Hold("dave", true, 400*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		eventually(t, time.Second, func() bool { return late.Held("dave") }, "dave not held")
		eventually(t, 2*time.Second, func() bool {
			for _, n := range all {
				if n.Held("dave") || n.rec.count("hold dave false") != 1 {
					return false
				}
			}
			return true
		}, "dave's hold did not expire everywhere")

		if err := late.Leave(time.Second); err != nil {
			t.Fatal(err)
		}
		if err := late.Shutdown(); err != nil {
			t.Fatal(err)
		}
		waitAlive(t, nodes, 3)
	})

	t.Run("BackendHealth", func(t *testing.T) {
		nodes[0].SetBackendHealth("imap1", false)
		nodes[1].SetBackendHealth("imap1", false)
		nodes[2].SetBackendHealth("imap1", true)
		nodes[0].SetBackendHealth("imap2", true)
		nodes[1].SetBackendHealth("imap2", true)
		nodes[2].SetBackendHealth("imap2", false) // one of three: not down
		eventually(t, 2*time.Second, func() bool {
			for _, n := range nodes {
				if !n.BackendDown("imap1") || len(n.Health()) != 3 {
					return false
				}
			}
			return true
		}, "imap1 not down everywhere")
		for _, n := range nodes {
			if n.BackendDown("imap2") {
				t.Errorf("%s: imap2 down on one report of three", n.Name())
			}
			if n.BackendDown("unknown") {
				t.Errorf("%s: unknown backend down", n.Name())
			}
		}
		nodes[0].SetBackendHealth("imap1", true)
		nodes[1].SetBackendHealth("imap1", true)
		eventually(t, 2*time.Second, func() bool {
			for _, n := range nodes {
				h := n.Health()
				if n.BackendDown("imap1") || !h["n1"]["imap1"] || !h["n2"]["imap1"] {
					return false
				}
			}
			return true
		}, "imap1 still down somewhere")
	})

	t.Run("Counters", func(t *testing.T) {
		nodes[0].SessionDelta("erin", "imap", 2)
		nodes[1].SessionDelta("erin", "imap", 1)
		nodes[1].SessionDelta("erin", "pop3", 1)
		ip := netip.MustParseAddr("192.0.2.7")
		// erin fails from ip on two nodes: one account for ip's score,
		// two failures for the pair; frank fails once via a mapped
		// address, a second account for ip.
		nodes[0].LoginFailed(ip, "erin", true)
		eventually(t, 2*time.Second, func() bool { pf, _ := nodes[1].FailureScore(ip, "erin"); return pf == 1 }, "first failure not seen")
		nodes[1].LoginFailed(ip, "erin", true)
		nodes[2].LoginFailed(netip.MustParseAddr("::ffff:192.0.2.7"), "frank", true)
		eventually(t, 2*time.Second, func() bool {
			for _, n := range nodes {
				pf, sf := n.FailureScore(ip, "erin")
				if n.Sessions("erin", "imap") != 3 || n.Sessions("erin", "pop3") != 1 || pf != 2 || sf != 2 {
					return false
				}
			}
			return true
		}, "counters do not add up everywhere")
		// A success on node 2 clears the pair there at once and
		// everywhere for node 2's share.
		nodes[2].LoginSucceeded(ip, "erin")
		if pf, _ := nodes[2].FailureScore(ip, "erin"); pf != 0 {
			t.Errorf("after a success, node 2 still reads %d failures", pf)
		}
		nodes[0].SessionDelta("erin", "imap", -2)
		eventually(t, 2*time.Second, func() bool {
			for _, n := range nodes {
				if n.Sessions("erin", "imap") != 1 {
					return false
				}
			}
			return true
		}, "session decrement not seen everywhere")
	})

	t.Run("FailRejoinLeave", func(t *testing.T) {
		n3 := nodes[2]
		if err := n3.Shutdown(); err != nil { // no Leave: a crash
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, func() bool {
			s1, _ := memberState(nodes[0].Cluster, "n3")
			s2, _ := memberState(nodes[1].Cluster, "n3")
			return s1 == StateDead && s2 == StateDead
		}, "n3 not seen dead")
		if err := nodes[0].Invalidate("frank", false); err != nil {
			t.Fatalf("Invalidate with a dead member: %v", err)
		}

		// A new process under the same name and address comes back.
		back := startNode(t, "n3", keys, []string{nodes[0].addr()}, n3.ip, n3.port)
		nodes[2] = back
		eventually(t, 5*time.Second, func() bool {
			s1, _ := memberState(nodes[0].Cluster, "n3")
			s2, _ := memberState(nodes[1].Cluster, "n3")
			return s1 == StateAlive && s2 == StateAlive && aliveCount(back.Cluster) == 3
		}, "n3 not seen alive again")
		if err := nodes[1].Invalidate("grace", true); err != nil {
			t.Fatal(err)
		}
		eventually(t, time.Second, func() bool { return back.rec.count("kick grace") == 1 }, "rejoined n3 missed a kick")

		if err := nodes[1].Leave(2 * time.Second); err != nil {
			t.Fatal(err)
		}
		eventually(t, 3*time.Second, func() bool {
			s1, _ := memberState(nodes[0].Cluster, "n2")
			s3, _ := memberState(back.Cluster, "n2")
			return s1 == StateLeft && s3 == StateLeft
		}, "n2 not seen as left")
	})

	st := nodes[0].Stats()
	t.Logf("n1 stats: %+v", st)
	if st.Messages["invalidate"].SentDirect == 0 || st.Messages["state"].Received == 0 {
		t.Errorf("stats not counting: %+v", st)
	}
}

func TestGossipOnlyConverges(t *testing.T) {
	// The safety net alone: no direct sends, so invalidations and holds
	// travel only by gossip, relayed by every node that learns them.
	keys := []Key{newKey(t)}
	var nodes []*testNode
	for i := range 5 {
		var peers []string
		if i > 0 {
			peers = []string{nodes[0].addr()}
		}
		rec := &recorder{}
		o := fastOptions(t, fmt.Sprintf("g%d", i+1), loopbackIP(), 0, keys, peers, rec)
		o.gossipOnly = true
		c, err := New(o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Shutdown() })
		nodes = append(nodes, &testNode{Cluster: c, rec: rec, ip: o.BindAddr, port: int(c.ml.LocalNode().Port)})
	}
	waitAlive(t, nodes, 5)
	if err := nodes[4].Invalidate("henry", true); err != nil {
		t.Fatal(err)
	}
	if err := nodes[3].Hold("ivy", true, time.Minute); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Second, func() bool {
		for _, n := range nodes {
			if n.rec.count("kick henry") != 1 || !n.Held("ivy") {
				return false
			}
		}
		return true
	}, "gossip alone did not reach every node within 1 s")
}

func TestWrongKeyCannotJoin(t *testing.T) {
	nodes := startCluster(t, 2, []Key{newKey(t)})
	intruder := startNode(t, "intruder", []Key{newKey(t)}, []string{nodes[0].addr()}, "", 0)
	time.Sleep(1500 * time.Millisecond)
	if n := aliveCount(intruder.Cluster); n != 1 {
		t.Errorf("intruder sees %d alive members", n)
	}
	for _, n := range nodes {
		if _, ok := memberState(n.Cluster, "intruder"); ok {
			t.Errorf("%s knows the intruder", n.Name())
		}
	}
	// Plaintext gossip is refused by keyed nodes too.
	opts := fastOptions(t, "plain", loopbackIP(), 0, nil, []string{nodes[0].addr()}, nil)
	opts.AllowInsecure = true
	plain, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Shutdown()
	time.Sleep(time.Second)
	if n := aliveCount(plain); n != 1 {
		t.Errorf("plaintext node sees %d alive members", n)
	}
}

func TestKeyRotation(t *testing.T) {
	oldKey, newK := newKey(t), newKey(t)
	a := startNode(t, "a", []Key{oldKey}, nil, "", 0)
	// Step 1 of a rotation: the new key is installed as secondary.
	b := startNode(t, "b", []Key{oldKey, newK}, []string{a.addr()}, "", 0)
	waitAlive(t, []*testNode{a, b}, 2)
	// Step 2: a node already using the new key as primary still talks to
	// a node that has it as secondary.
	c := startNode(t, "c", []Key{newK, oldKey}, []string{b.addr()}, "", 0)
	waitAlive(t, []*testNode{a, b, c}, 3)
}

func TestNewValidation(t *testing.T) {
	cases := []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"no key", func(o *Options) { o.Keys = nil }, "no gossip key"},
		{"short key", func(o *Options) { o.Keys = []Key{make([]byte, 10)} }, "key 1 is 10 bytes"},
		{"big meta", func(o *Options) { o.Meta = map[string]string{"x": strings.Repeat("y", 600)} }, "meta is"},
		{"bad name", func(o *Options) { o.NodeName = "a/b" }, "bad node name"},
		{"tiny packets", func(o *Options) { o.UDPBufferSize = 600 }, "bytes per message"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := fastOptions(t, "v", loopbackIP(), 0, []Key{newKey(t)}, nil, nil)
			tc.edit(o)
			c, err := New(o)
			if err == nil {
				c.Shutdown()
				t.Fatal("New succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestAloneThenJoin(t *testing.T) {
	// Seeds unreachable at start: the node serves alone and joins later.
	ip := loopbackIP()
	port := freePort(t, ip)
	keys := []Key{newKey(t)}
	a := startNode(t, "a", keys, []string{fmt.Sprintf("%s:%d", ip, port)}, "", 0)
	if err := a.Invalidate("x", true); err != nil {
		t.Fatalf("Invalidate alone: %v", err)
	}
	if a.rec.count("kick x") == 0 {
		eventually(t, time.Second, func() bool { return a.rec.count("kick x") == 1 }, "local kick")
	}
	time.Sleep(700 * time.Millisecond)
	b := startNode(t, "b", keys, nil, ip, port)
	waitAlive(t, []*testNode{a, b}, 2)
	if m := a.Members(); len(m) != 2 || !m[0].Local || m[1].Name != "b" {
		t.Errorf("Members() = %+v", m)
	}
}

func TestMeta(t *testing.T) {
	keys := []Key{newKey(t)}
	o := fastOptions(t, "m1", loopbackIP(), 0, keys, nil, nil)
	o.Meta = map[string]string{"version": "1.2.3", "imap": "10.0.0.1:143"}
	a, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown()
	port := a.ml.LocalNode().Port
	b := startNode(t, "m2", keys, []string{fmt.Sprintf("%s:%d", o.BindAddr, port)}, "", 0)
	eventually(t, 5*time.Second, func() bool {
		for _, m := range b.Members() {
			if m.Name == "m1" && m.Meta["version"] == "1.2.3" && m.Meta["imap"] == "10.0.0.1:143" {
				return true
			}
		}
		return false
	}, "meta not seen: %+v", b.Members())
}

func TestGoroutinesStopOnShutdown(t *testing.T) {
	before := runtime.NumGoroutine()
	keys := []Key{newKey(t)}
	nodes := startCluster(t, 3, keys)
	for i, n := range nodes {
		n.SetBackendHealth("b", true)
		n.SessionDelta("u", "imap", 1)
		if err := n.Invalidate(fmt.Sprintf("u%d", i), true); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	for _, n := range nodes {
		if err := n.Shutdown(); err != nil {
			t.Fatal(err)
		}
	}
	// memberlist's stream handlers end with their connections; allow a
	// little slack for them and the runtime.
	const slack = 4
	var after int
	eventually(t, 5*time.Second, func() bool {
		after = runtime.NumGoroutine()
		return after <= before+slack
	}, "goroutines: %d before, %d after Shutdown\n%s", before, after, goroutineDump())
	t.Logf("goroutines: %d before, %d after Shutdown", before, after)
}

func goroutineDump() string {
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	// Only our package's and memberlist's goroutines are interesting.
	var out bytes.Buffer
	for _, g := range strings.Split(string(buf[:n]), "\n\n") {
		if strings.Contains(g, "memberlist") || strings.Contains(g, "switchboard/cluster") {
			out.WriteString(g + "\n\n")
		}
	}
	return out.String()
}

// freePort returns a port free for both TCP and UDP on ip.
func freePort(t testing.TB, ip string) int {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", net.JoinHostPort(ip, strconv.Itoa(port)))
		ln.Close()
		if err == nil {
			pc.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}
