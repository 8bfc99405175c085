package cluster

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// The partition test runs three nodes as separate processes, each in its
// own network namespace, joined by veth pairs to a bridge in a fourth
// namespace. Cutting a node off is "ip link set down" on its bridge port.
// Addresses come from 10.213.0.0/24, which exists only inside these
// namespaces; nothing touches the host's own network namespace.

const (
	helperEnv    = "SWITCHBOARD_CLUSTER_HELPER" // node name; set only in helper processes
	helperAddr   = "SWITCHBOARD_CLUSTER_ADDR"
	helperPeers  = "SWITCHBOARD_CLUSTER_PEERS"
	helperKey    = "SWITCHBOARD_CLUSTER_KEY"
	netnsSubnet  = "10.213.0."
	helperPort   = 7946
	partitionLog = "SWITCHBOARD_TEST_LOG" // forwarded to helpers
)

// TestHelperNode is not a test: it is the body of a node process started
// by TestPartition.
func TestHelperNode(t *testing.T) {
	name := os.Getenv(helperEnv)
	if name == "" {
		t.Skip("helper process for TestPartition")
	}
	if err := runHelperNode(name); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// helperOut serializes the helper's stdout lines.
type helperOut struct {
	mu sync.Mutex
	w  io.Writer
}

func (o *helperOut) printf(format string, args ...any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	fmt.Fprintf(o.w, "SB "+format+"\n", args...)
}

func runHelperNode(name string) error {
	key, err := base64.StdEncoding.DecodeString(os.Getenv(helperKey))
	if err != nil {
		return err
	}
	out := &helperOut{w: os.Stdout}
	level := slog.LevelWarn
	if os.Getenv(partitionLog) == "debug" {
		level = slog.LevelDebug
	}
	var peers []string
	if p := os.Getenv(helperPeers); p != "" {
		peers = strings.Split(p, ",")
	}
	c, err := New(&Options{
		NodeName: name,
		BindAddr: os.Getenv(helperAddr),
		BindPort: helperPort,
		Peers:    peers,
		Keys:     []Key{key},
		Handler: HandlerFuncs{
			InvalidateFunc: func(u string) { out.printf("ev invalidate %s", u) },
			KickFunc:       func(u string) { out.printf("ev kick %s", u) },
		},
		Logger:            slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
		GossipInterval:    50 * time.Millisecond,
		ProbeInterval:     200 * time.Millisecond,
		ProbeTimeout:      100 * time.Millisecond,
		SuspicionMult:     2,
		PushPullInterval:  2 * time.Second,
		TCPTimeout:        time.Second,
		StateInterval:     100 * time.Millisecond,
		ReconnectInterval: 500 * time.Millisecond,
		tweak: func(mc *memberlist.Config) {
			mc.GossipToTheDeadTime = 2 * time.Second
		},
	})
	if err != nil {
		return err
	}
	defer c.Shutdown()
	out.printf("ready")
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "invalidate": // invalidate USER
			err := c.Invalidate(f[1], true)
			out.printf("invalidated %s %v", f[1], err)
		case "members": // members ID
			var parts []string
			for _, m := range c.Members() {
				parts = append(parts, m.Name+"="+m.State.String())
			}
			out.printf("members %s %s", f[1], strings.Join(parts, ","))
		case "quit":
			return nil
		}
	}
	return sc.Err()
}

// helperProc is the test's handle on a node process.
type helperProc struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser

	mu     sync.Mutex
	lines  []string
	stderr strings.Builder
	donec  chan struct{}
}

// readLines is the goroutine collecting a helper's stdout.
func (h *helperProc) readLines(r io.Reader) {
	defer close(h.donec)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if line, ok := strings.CutPrefix(sc.Text(), "SB "); ok {
			h.mu.Lock()
			h.lines = append(h.lines, line)
			h.mu.Unlock()
		}
	}
}

func (h *helperProc) send(t *testing.T, cmd string) {
	t.Helper()
	if _, err := io.WriteString(h.stdin, cmd+"\n"); err != nil {
		t.Fatalf("%s: %v", h.name, err)
	}
}

func (h *helperProc) has(line string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, l := range h.lines {
		if l == line {
			return true
		}
	}
	return false
}

func (h *helperProc) lineWithPrefix(prefix string) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, l := range h.lines {
		if rest, ok := strings.CutPrefix(l, prefix); ok {
			return rest, true
		}
	}
	return "", false
}

var membersReq int

// members asks the helper for its member view: name -> state.
func (h *helperProc) members(t *testing.T) map[string]string {
	t.Helper()
	membersReq++
	id := fmt.Sprint(membersReq)
	h.send(t, "members "+id)
	var rest string
	eventually(t, 3*time.Second, func() bool {
		var ok bool
		rest, ok = h.lineWithPrefix("members " + id + " ")
		return ok
	}, "%s does not answer", h.name)
	out := make(map[string]string)
	for _, p := range strings.Split(rest, ",") {
		if k, v, ok := strings.Cut(p, "="); ok {
			out[k] = v
		}
	}
	return out
}

func (h *helperProc) sees(t *testing.T, want map[string]string) bool {
	got := h.members(t)
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

func (h *helperProc) stop() {
	io.WriteString(h.stdin, "quit\n")
	h.stdin.Close()
	select {
	case <-h.donec:
	case <-time.After(5 * time.Second):
		h.cmd.Process.Kill()
		<-h.donec
	}
	h.cmd.Wait()
}

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func TestPartition(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes in network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("ip (iproute2) not installed")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// Namespace names are unique per run; all are removed in Cleanup.
	id := fmt.Sprintf("sbt%d-%04x", os.Getpid(), rand.N(1<<16))
	nsBr := id + "-br"
	if err := ipCmd("netns", "add", nsBr); err != nil {
		t.Skipf("network namespaces unavailable (needs root and netns support): %v", err)
	}
	t.Cleanup(func() { ipCmd("netns", "del", nsBr) })
	setup := [][]string{
		{"-n", nsBr, "link", "add", "br0", "type", "bridge"},
		{"-n", nsBr, "link", "set", "br0", "up"},
	}
	names := []string{"a", "b", "c"}
	addrs := map[string]string{}
	for i, n := range names {
		ns := id + "-" + n
		if err := ipCmd("netns", "add", ns); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ipCmd("netns", "del", ns) })
		addrs[n] = fmt.Sprintf("%s%d", netnsSubnet, i+1)
		setup = append(setup,
			[]string{"-n", nsBr, "link", "add", "p" + n, "type", "veth", "peer", "name", "eth0", "netns", ns},
			[]string{"-n", nsBr, "link", "set", "p" + n, "master", "br0", "up"},
			[]string{"-n", ns, "link", "set", "lo", "up"},
			[]string{"-n", ns, "addr", "add", addrs[n] + "/24", "dev", "eth0"},
			[]string{"-n", ns, "link", "set", "eth0", "up"},
		)
	}
	for _, args := range setup {
		if err := ipCmd(args...); err != nil {
			if strings.Contains(err.Error(), "Operation not permitted") || strings.Contains(err.Error(), "not supported") {
				t.Skipf("kernel refuses the test network: %v", err)
			}
			t.Fatal(err)
		}
	}

	key := base64.StdEncoding.EncodeToString(newKey(t))
	procs := map[string]*helperProc{}
	start := func(n string, peers ...string) {
		var pa []string
		for _, p := range peers {
			pa = append(pa, fmt.Sprintf("%s:%d", addrs[p], helperPort))
		}
		cmd := exec.Command("ip", "netns", "exec", id+"-"+n, self, "-test.run=^TestHelperNode$", "-test.count=1")
		cmd.Env = append(os.Environ(),
			helperEnv+"="+n, helperAddr+"="+addrs[n], helperPeers+"="+strings.Join(pa, ","), helperKey+"="+key)
		h := &helperProc{name: n, cmd: cmd, donec: make(chan struct{})}
		cmd.Stderr = &lockedWriter{mu: &h.mu, b: &h.stderr}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if h.stdin, err = cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go h.readLines(stdout)
		procs[n] = h
		t.Cleanup(func() {
			h.stop()
			if t.Failed() {
				h.mu.Lock()
				t.Logf("node %s stderr:\n%s", n, h.stderr.String())
				h.mu.Unlock()
			}
		})
		eventually(t, 10*time.Second, func() bool { return h.has("ready") }, "node %s did not start", n)
	}
	start("a")
	start("b", "a")
	start("c", "a", "b")
	all := map[string]string{"a": "alive", "b": "alive", "c": "alive"}
	for _, n := range names {
		eventually(t, 10*time.Second, func() bool { return procs[n].sees(t, all) }, "%s does not see all alive", n)
	}
	a, b, c := procs["a"], procs["b"], procs["c"]

	// Cut c off.
	cut := time.Now()
	if err := ipCmd("-n", nsBr, "link", "set", "pc", "down"); err != nil {
		t.Fatal(err)
	}
	for _, h := range []*helperProc{a, b} {
		eventually(t, 10*time.Second, func() bool { return h.sees(t, map[string]string{"c": "dead", "a": "alive", "b": "alive"}) },
			"%s does not see c failed", h.name)
	}
	eventually(t, 10*time.Second, func() bool { return c.sees(t, map[string]string{"a": "dead", "b": "dead"}) },
		"c does not see a and b failed")
	t.Logf("partition detected after %v", time.Since(cut))

	// The majority side keeps exchanging invalidations.
	a.send(t, "invalidate p1")
	b.send(t, "invalidate p2")
	eventually(t, 2*time.Second, func() bool {
		return b.has("ev invalidate p1") && b.has("ev kick p1") && a.has("ev invalidate p2")
	}, "a and b do not exchange invalidations during the partition")
	time.Sleep(300 * time.Millisecond)
	if c.has("ev invalidate p1") || c.has("ev invalidate p2") {
		t.Fatal("c received invalidations while cut off: the partition leaks")
	}

	// Heal: c rejoins and catches up on what it missed.
	healed := time.Now()
	if err := ipCmd("-n", nsBr, "link", "set", "pc", "up"); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		eventually(t, 15*time.Second, func() bool { return procs[n].sees(t, all) }, "%s does not see all alive after healing", n)
	}
	t.Logf("rejoined after %v", time.Since(healed))
	eventually(t, 5*time.Second, func() bool { return c.has("ev invalidate p1") && c.has("ev invalidate p2") },
		"c did not catch up on invalidations made during the partition")
	a.send(t, "invalidate p3")
	eventually(t, time.Second, func() bool { return c.has("ev invalidate p3") && c.has("ev kick p3") },
		"c does not receive new invalidations after healing")
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}
