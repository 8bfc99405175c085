package cluster

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"switchboard/internal/decay"
	"switchboard/internal/usertable"
)

func TestSeenWindow(t *testing.T) {
	var d deduper
	now := time.Now()
	steps := []struct {
		origin string
		boot   uint64
		seq    uint64
		fresh  bool
	}{
		{"a", 10, 1, true},
		{"a", 10, 1, false},
		{"a", 10, 3, true},
		{"a", 10, 2, true}, // out of order but new
		{"a", 10, 2, false},
		{"a", 10, 3 + dedupeWindow, true},
		{"a", 10, 3, false},               // fell out of the window: treated as seen
		{"a", 10, 4 + dedupeWindow, true}, // the slot of 4 was cleared on the jump
		{"a", 9, 100000, false},           // older boot
		{"a", 11, 1, true},                // restart resets
		{"a", 11, 1, false},
		{"b", 11, 1, true},
		{"b", 11, 0, false},
	}
	for i, s := range steps {
		if got := d.fresh(s.origin, s.boot, s.seq, now); got != s.fresh {
			t.Errorf("step %d (%s boot %d seq %d): fresh = %v", i, s.origin, s.boot, s.seq, got)
		}
	}
	d.expire(now.Add(2*dedupeIdleTTL), 0)
	if len(d.origins) != 0 {
		t.Errorf("%d origins after expiry", len(d.origins))
	}
}

func TestStateTables(t *testing.T) {
	now := time.Now()
	tb := tables{max: 2, tau: time.Minute}
	p := newPeerState(1)
	k := sessKey{User: "alice", Proto: "imap"}
	tb.applyState(p, &stateRecord{Sessions: []sessionRecord{{"alice", "imap", 3}}}, 10, now)
	tb.applyState(p, &stateRecord{Sessions: []sessionRecord{{"alice", "imap", 1}}}, 9, now) // older
	if p.sessions[k].n != 3 {
		t.Errorf("older delta overwrote: %d", p.sessions[k].n)
	}
	// A snapshot replaces what it does not mention, but keeps newer values.
	tb.applyState(p, &stateRecord{Sessions: []sessionRecord{{"bob", "imap", 1}}}, 12, now)
	tb.applyState(p, &stateRecord{Full: true, Sessions: []sessionRecord{{"carol", "pop3", 2}}}, 11, now)
	if _, ok := p.sessions[k]; ok {
		t.Error("snapshot kept alice")
	}
	if p.sessions[sessKey{User: "bob", Proto: "imap"}].n != 1 || p.sessions[sessKey{User: "carol", Proto: "pop3"}].n != 2 {
		t.Errorf("after snapshot: %+v", p.sessions)
	}
	// Deltas older than the snapshot are void.
	tb.applyState(p, &stateRecord{Sessions: []sessionRecord{{"alice", "imap", 5}}}, 10, now)
	if _, ok := p.sessions[k]; ok {
		t.Error("delta older than the snapshot applied")
	}
	// Table full: new keys are refused.
	tb.applyState(p, &stateRecord{Sessions: []sessionRecord{{"dave", "imap", 1}}}, 13, now)
	if _, ok := p.sessions[sessKey{User: "dave", Proto: "imap"}]; ok || tb.dropped != 1 {
		t.Errorf("table over its limit: %+v, dropped %d", p.sessions, tb.dropped)
	}
	// Failure scores: full tables evict a low entry instead.
	ip := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	tb.applyState(p, &stateRecord{IPFails: []ipFailRecord{{ip("192.0.2.1"), 1}, {ip("192.0.2.2"), 50}, {ip("192.0.2.3"), 0.2}}}, 14, now)
	if len(p.ipFails) != 2 || p.ipFails[ip("192.0.2.1")].Score != 0 {
		t.Errorf("ip table: %+v", p.ipFails)
	}
	// Decay: one time constant leaves 1/e.
	d := decay.Count{Score: 10, At: now}
	if v := d.Value(now.Add(time.Minute), time.Minute); math.Abs(v-10/math.E) > 1e-9 {
		t.Errorf("decayed value %v", v)
	}
	tb.sweepPeer(p, now.Add(2*time.Minute), time.Minute)
	if len(p.ipFails) != 1 {
		t.Errorf("sweep left %+v", p.ipFails)
	}
}

func TestChunker(t *testing.T) {
	l := newLocalState(&usertable.Options{FailureWindow: time.Minute})
	tb := tables{max: 100000, tau: time.Minute}
	for i := range 500 {
		k := sessKey{User: fmt.Sprintf("user%03d@example.org", i), Proto: "imap"}
		l.table.SessionDelta(k, 1)
		l.dirtySess[k] = struct{}{}
	}
	recs := tb.deltas(&l, "node-with-a-name", time.Now(), time.Minute, maxBroadcast)
	n := 0
	for _, r := range recs {
		b := encodeMessage(&message{Kind: kindState, Origin: "node-with-a-name", Boot: math.MaxUint64, Seq: math.MaxUint64, State: r})
		if len(b) > maxBroadcast {
			t.Errorf("chunk of %d bytes", len(b))
		}
		n += len(r.Sessions)
	}
	if n != 500 || len(recs) < 2 {
		t.Errorf("%d sessions in %d chunks", n, len(recs))
	}
	if again := tb.deltas(&l, "n", time.Now(), time.Minute, maxBroadcast); len(again) != 0 {
		t.Errorf("deltas not cleared: %d", len(again))
	}
}

func TestLogBridge(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	l := newMemberlistLogger(logger)
	l.Printf("[ERR] memberlist: Failed to send gossip to %s: %s", "10.0.0.1:7946", "refused")
	l.Printf("[WARN] memberlist: Refuting a suspect message (from: n2)")
	l.Printf("[DEBUG] memberlist: Stream connection from=10.0.0.2:5000")
	l.Printf("[INFO] memberlist: Marking n3 as failed")
	l.Printf("no prefix at all")
	out := buf.String()
	for _, want := range []string{
		`level=ERROR msg="Failed to send gossip to 10.0.0.1:7946: refused" component=memberlist`,
		`level=WARN msg="Refuting a suspect message (from: n2)"`,
		`level=DEBUG msg="Stream connection from=10.0.0.2:5000"`,
		`level=INFO msg="Marking n3 as failed"`,
		`level=INFO msg="no prefix at all"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %s in\n%s", want, out)
		}
	}
}

func TestReadKeyring(t *testing.T) {
	k16 := "AAECAwQFBgcICQoLDA0ODw=="
	k32 := "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	cases := []struct {
		name, in string
		keys     int
		err      string
	}{
		{"two keys", "# primary first\n" + k32 + "\n\n" + k16 + "\n", 2, ""},
		{"crlf", k32 + "\r\n", 1, ""},
		{"empty", "# nothing\n", 0, "no keys"},
		{"not base64", "zz!\n", 0, "line 1: not base64"},
		{"bad length", "AAEC\n", 0, "key is 3 bytes"},
		{"duplicate", k16 + "\n" + k16 + "\n", 0, "line 2: duplicate"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			keys, err := ReadKeyring(strings.NewReader(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || len(keys) != tc.keys {
				t.Fatalf("%d keys, %v", len(keys), err)
			}
			if len(keys[0]) != 32 {
				t.Error("first key is not the primary")
			}
		})
	}
	if s := fmt.Sprint(Key{1, 2}); s != "***" {
		t.Errorf("Key prints as %q", s)
	}
}

// fakeServer accepts connections on loopback and writes greeting.
func fakeServer(t *testing.T, greeting string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go serveGreeting(ln, greeting)
	return ln.Addr().String()
}

func serveGreeting(ln net.Listener, greeting string) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		if greeting != "" {
			conn.Write([]byte(greeting))
		}
		// Wait for the client's LOGOUT/QUIT, then close.
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 64)
		conn.Read(buf)
		conn.Close()
	}
}

func TestProbeGreeting(t *testing.T) {
	closed := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		return addr
	}()
	cases := []struct {
		name, addr string
		ok         bool
	}{
		{"imap", fakeServer(t, "* OK [CAPABILITY IMAP4rev1] Dovecot ready.\r\n"), true},
		{"pop3", fakeServer(t, "+OK Dovecot ready.\r\n"), true},
		{"bye", fakeServer(t, "* BYE too many connections\r\n"), false},
		{"preauth", fakeServer(t, "* PREAUTH hi\r\n"), false},
		{"silent", fakeServer(t, ""), false},
		{"endless line", fakeServer(t, strings.Repeat("x", 2*maxGreetingLen)), false},
		{"refused", closed, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			err := ProbeGreeting(ctx, tc.addr)
			if (err == nil) != tc.ok {
				t.Errorf("ProbeGreeting = %v", err)
			}
		})
	}
}

type healthLog struct {
	mu sync.Mutex
	m  map[string][]bool
}

func (h *healthLog) SetBackendHealth(b string, up bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.m[b] = append(h.m[b], up)
}

func TestChecker(t *testing.T) {
	good := fakeServer(t, "* OK ready\r\n")
	var flaky sync.Mutex
	flakyUp := true
	probe := func(ctx context.Context, addr string) error {
		if addr == "flaky" {
			flaky.Lock()
			defer flaky.Unlock()
			if !flakyUp {
				return fmt.Errorf("down")
			}
			return nil
		}
		return ProbeGreeting(ctx, addr)
	}
	hl := &healthLog{m: make(map[string][]bool)}
	backends := map[string]string{"good": good, "flaky": "flaky", "gone": "127.0.0.1:1"}
	ch := NewChecker(hl, func() map[string]string { return backends }, time.Hour, 300*time.Millisecond, probe)
	ctx := context.Background()
	ch.CheckNow(ctx)
	flaky.Lock()
	flakyUp = false
	flaky.Unlock()
	ch.CheckNow(ctx) // one failure: still up
	ch.CheckNow(ctx) // second: down
	got := fmt.Sprint(hl.m)
	want := "map[flaky:[true true false] gone:[false false false] good:[true true true]]"
	if got != want {
		t.Errorf("reports %s, want %s", got, want)
	}

	// Run stops with its context.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ch.Run(ctx); close(done) }()
	cancel()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not stop")
	}
}
