package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/go-ldap/ldap/v3"

	"switchboard/config"
	"switchboard/internal/testbed"
	"switchboard/move"
)

const (
	moveUser        = "alice@example.org"
	moveUserPass    = "alice-secret"
	doveadmTestPass = "doveadm-test-password-0123"
	// deliverEvery is the MTA's pace, as in issue 15's measurements.
	deliverEvery = 50 * time.Millisecond
	// writerEvery is the pace of the client that changes flags and
	// moves messages.
	writerEvery = 20 * time.Millisecond
)

// moveFolders are the folders the mailbox is spread over, INBOX first.
var moveFolders = []string{"INBOX", "Archive", "Work", "Lists"}

// moveRig is a testbed with doveadm servers and LMTP on both backends, a
// user with a seeded mailbox on mx1 and one standalone switchboard node
// with [admin] and [move].
type moveRig struct {
	t    *testing.T
	tb   *testbed.Testbed
	node *sbNode
	mx   map[string]*move.Doveadm
}

// startMoveRig starts the rig with msgs messages for moveUser on mx1.
func startMoveRig(t *testing.T, msgs int) *moveRig {
	t.Helper()
	tb, err := testbed.Start(testbed.Options{
		Dir: t.TempDir(),
		ConfigureBackend: func(_ string, o *testbed.DovecotOptions) {
			o.DoveadmPassword = doveadmTestPass
			o.LMTP = true
		},
		MessagesPerUser: -1,
	})
	if err != nil {
		t.Fatalf("testbed: %v", err)
	}
	t.Cleanup(func() { tb.Close() })
	r := &moveRig{t: t, tb: tb, mx: map[string]*move.Doveadm{}}
	for name, d := range tb.Backends {
		r.mx[name] = &move.Doveadm{Name: name, URL: "http://" + d.DoveadmHTTPAddr + "/doveadm/v1", TCPAddr: d.DoveadmAddr, Password: doveadmTestPass}
	}
	r.seed(msgs)

	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "admin.token"), testAdminToken+"\n")
	mustWrite(t, filepath.Join(dir, "ldap.secret"), tb.LDAP.BindPassword+"\n")
	mustWrite(t, filepath.Join(dir, "move.secret"), tb.LDAP.AdminPassword+"\n")
	mustWrite(t, filepath.Join(dir, "doveadm.secret"), doveadmTestPass+"\n")
	n := newSBNode(t, dir, "node1")
	mx1, mx2 := tb.Backends["mx1"], tb.Backends["mx2"]
	n.writeConfig(tb, fmt.Sprintf(`
[admin]
address = %q
token_file = "admin.token"

[move]
bind_dn = %q
bind_password_file = "move.secret"
doveadm_password_file = "doveadm.secret"
settle = "500ms"
hold_ttl = "2m"

[move.backends]
mx1 = { http = %q, tcp = %q }
mx2 = { http = %q, tcp = %q }
`, n.admin, tb.LDAP.AdminDN, mx1.DoveadmHTTPAddr, mx1.DoveadmAddr, mx2.DoveadmHTTPAddr, mx2.DoveadmAddr))
	n.start()
	stopAtEnd(t, n)
	r.node = n
	return r
}

// seed writes msgs messages into the user's INBOX on mx1, then spreads
// them over the folders and sets flags and a keyword, over IMAP.
func (r *moveRig) seed(msgs int) {
	t := r.t
	mx1 := r.tb.Backends["mx1"]
	batch := make([][]byte, msgs)
	for i := range batch {
		batch[i] = testbed.Message("sender@example.net", moveUser, fmt.Sprintf("seeded %d", i), 600)
	}
	if err := mx1.Seed(moveUser, batch...); err != nil {
		t.Fatal(err)
	}
	c, err := imapclient.DialInsecure(mx1.IMAPAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(moveUser, moveUserPass).Wait(); err != nil {
		t.Fatal(err)
	}
	for _, f := range moveFolders[1:] {
		if err := c.Create(f, nil).Wait(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	q := imap.UID(msgs / 4)
	for i, f := range moveFolders[1:] {
		var set imap.UIDSet
		set.AddRange(q*imap.UID(i+1)+1, q*imap.UID(i+2))
		if _, err := c.Move(set, f).Wait(); err != nil {
			t.Fatalf("move to %s: %v", f, err)
		}
	}
	stores := []struct {
		from, to imap.UID
		flags    []imap.Flag
	}{
		{1, q / 2, []imap.Flag{imap.FlagSeen}},
		{q / 4, q / 3, []imap.Flag{imap.FlagFlagged, "$Label1"}},
		{q / 3, q / 2, []imap.Flag{imap.FlagAnswered}},
	}
	for _, s := range stores {
		var set imap.UIDSet
		set.AddRange(s.from, s.to)
		if err := c.Store(set, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: s.flags}, nil).Close(); err != nil {
			t.Fatal(err)
		}
	}
	c.Logout().Wait()
}

// ldapHosts returns the user's host values, read as the rootdn.
func (r *moveRig) ldapHosts() []string {
	r.t.Helper()
	hosts, err := readHosts(r.tb.LDAP)
	if err != nil {
		r.t.Fatal(err)
	}
	return hosts
}

func readHosts(s *testbed.Slapd) ([]string, error) {
	conn, err := s.DialAdmin()
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	res, err := conn.Search(ldap.NewSearchRequest(s.UserDN(moveUser), ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 5, false, "(objectClass=*)", []string{"host"}, nil))
	if err != nil {
		return nil, err
	}
	if len(res.Entries) != 1 {
		return nil, fmt.Errorf("%d entries", len(res.Entries))
	}
	return res.Entries[0].GetAttributeValues("host"), nil
}

// mta delivers a new message to the user every deliverEvery as Postfix
// with an LDAP transport map would: the host attribute names the
// backend, the hold value defers (the message stays queued), and a
// failed delivery is retried on the next tick.
type mta struct {
	tb        *testbed.Testbed
	holdValue string

	mu        sync.Mutex
	queue     [][]byte
	delivered map[string]string // Message-ID -> backend
	deferred  int               // deliveries put off by the hold
	errs      []error
}

var messageIDRE = regexp.MustCompile(`(?m)^Message-ID: (<[^>]+>)`)

// run is the MTA goroutine; it drains the queue after stop closes.
func (m *mta) run(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	tick := time.NewTicker(deliverEvery)
	defer tick.Stop()
	n := 0
	drainUntil := time.Time{}
	for {
		select {
		case <-stop:
			if drainUntil.IsZero() {
				drainUntil = time.Now().Add(20 * time.Second)
			}
			stop = nil
		case <-tick.C:
		}
		if stop != nil {
			n++
			m.mu.Lock()
			m.queue = append(m.queue, testbed.Message("list@example.net", moveUser, fmt.Sprintf("delivered %d", n), 800))
			m.mu.Unlock()
		}
		m.flush()
		m.mu.Lock()
		empty := len(m.queue) == 0
		m.mu.Unlock()
		if !drainUntil.IsZero() && (empty || time.Now().After(drainUntil)) {
			return
		}
	}
}

// flush tries to deliver everything queued.
func (m *mta) flush() {
	m.mu.Lock()
	q := m.queue
	m.queue = nil
	m.mu.Unlock()
	var left [][]byte
	for _, msg := range q {
		hosts, err := readHosts(m.tb.LDAP)
		if err != nil || len(hosts) == 0 || hosts[0] == m.holdValue {
			left = append(left, msg)
			if err == nil {
				m.mu.Lock()
				m.deferred++
				m.mu.Unlock()
			}
			continue
		}
		d := m.tb.Backends[hosts[0]]
		if err := d.DeliverLMTP("list@example.net", moveUser, msg); err != nil {
			m.mu.Lock()
			m.errs = append(m.errs, err)
			m.mu.Unlock()
			left = append(left, msg)
			continue
		}
		id := messageIDRE.FindSubmatch(msg)[1]
		m.mu.Lock()
		m.delivered[string(id)] = hosts[0]
		m.mu.Unlock()
	}
	m.mu.Lock()
	m.queue = append(left, m.queue...)
	m.mu.Unlock()
}

// writer is an IMAP client working through the switchboard node: it
// sets and clears flags and moves messages between folders until its
// session is closed (the move's kick), then reports and ends.
type writer struct {
	addr string
	ops  atomic.Int64
	err  error // why it stopped
}

func (w *writer) run(done chan<- struct{}) {
	defer close(done)
	c, err := imapclient.DialInsecure(w.addr, nil)
	if err != nil {
		w.err = err
		return
	}
	defer c.Close()
	if err := c.Login(moveUser, moveUserPass).Wait(); err != nil {
		w.err = err
		return
	}
	rng := rand.New(rand.NewPCG(1, 2))
	flags := []imap.Flag{imap.FlagSeen, imap.FlagFlagged, imap.FlagAnswered, "$Label2"}
	for {
		box := moveFolders[rng.IntN(len(moveFolders))]
		sel, err := c.Select(box, nil).Wait()
		if err != nil {
			w.err = err
			return
		}
		if sel.NumMessages == 0 {
			continue
		}
		seq := imap.SeqSetNum(1 + uint32(rng.IntN(int(sel.NumMessages))))
		if rng.IntN(5) == 0 {
			_, err = c.Move(seq, moveFolders[rng.IntN(len(moveFolders))]).Wait()
		} else {
			op := imap.StoreFlagsAdd
			if rng.IntN(2) == 0 {
				op = imap.StoreFlagsDel
			}
			err = c.Store(seq, &imap.StoreFlags{Op: op, Silent: true, Flags: []imap.Flag{flags[rng.IntN(len(flags))]}}, nil).Close()
		}
		if err != nil {
			w.err = err
			return
		}
		w.ops.Add(1)
		time.Sleep(writerEvery)
	}
}

// idler is an IMAP client in IDLE on INBOX through the node until its
// session is closed.
func idler(addr string, done chan<- error) {
	c, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		done <- err
		return
	}
	defer c.Close()
	if err := c.Login(moveUser, moveUserPass).Wait(); err != nil {
		done <- err
		return
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		done <- err
		return
	}
	idle, err := c.Idle()
	if err != nil {
		done <- err
		return
	}
	done <- idle.Wait()
}

// moveOutcome is what the checks after a move found.
type moveOutcome struct {
	lost, duplicated, flagMismatches, uidvalidityChanged, destLogProblems int
	delivered, deferred, messages                                         int
}

// checkMoved compares the frozen source with the destination: every
// source message and every delivered Message-ID is on dest exactly once,
// each source message keeps its folder, UID and flags, and each folder
// its UIDVALIDITY; dest's log has no Error or Warning line.
func (r *moveRig) checkMoved(ctx context.Context, src, dst string, m *mta) moveOutcome {
	t := r.t
	t.Helper()
	var o moveOutcome
	sm, err := r.mx[src].Messages(ctx, moveUser)
	if err != nil {
		t.Fatal(err)
	}
	dm, err := r.mx[dst].Messages(ctx, moveUser)
	if err != nil {
		t.Fatal(err)
	}
	o.messages = len(dm)
	count := map[string]int{}
	at := map[string]move.Message{}
	for _, msg := range dm {
		count[msg.MessageID]++
		at[fmt.Sprintf("%s/%d", msg.Mailbox, msg.UID)] = msg
	}
	want := map[string]bool{}
	for _, msg := range sm {
		want[msg.MessageID] = true
		d, ok := at[fmt.Sprintf("%s/%d", msg.Mailbox, msg.UID)]
		if !ok || d.MessageID != msg.MessageID || strings.Join(d.Flags, " ") != strings.Join(msg.Flags, " ") {
			o.flagMismatches++
			if o.flagMismatches <= 5 {
				t.Logf("source %s/%d %s %v; destination %+v", msg.Mailbox, msg.UID, msg.MessageID, msg.Flags, d)
			}
		}
	}
	m.mu.Lock()
	for id := range m.delivered {
		want[id] = true
	}
	o.delivered, o.deferred = len(m.delivered), m.deferred
	m.mu.Unlock()
	for id := range want {
		switch n := count[id]; {
		case n == 0:
			o.lost++
		case n > 1:
			o.duplicated += n - 1
		}
	}
	ss, err := r.mx[src].Status(ctx, moveUser)
	if err != nil {
		t.Fatal(err)
	}
	ds, err := r.mx[dst].Status(ctx, moveUser)
	if err != nil {
		t.Fatal(err)
	}
	validity := map[string]uint32{}
	for _, f := range ds {
		validity[f.Name] = f.UIDValidity
	}
	for _, f := range ss {
		if validity[f.Name] != f.UIDValidity {
			o.uidvalidityChanged++
		}
	}
	log, err := r.tb.Backends[dst].Log()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, " Error: ") || strings.Contains(line, " Warning: ") || strings.Contains(line, "Panic:") {
			o.destLogProblems++
			t.Logf("%s log: %s", dst, line)
		}
	}
	return o
}

// TestMove moves a mailbox of a few hundred messages in four folders
// with `switchboard move` while an MTA delivers every 50 ms and an IMAP
// client changes flags and moves messages through a switchboard node,
// then checks that nothing was lost, duplicated or changed.
func TestMove(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	r := startMoveRig(t, 400)
	ctx := context.Background()

	// -dry-run changes nothing.
	code, out, errOut := runCmd("move", "-dry-run", "-config", r.node.config, moveUser, "mx2")
	if code != 0 || !strings.Contains(out, "pre-copy") || !strings.Contains(out, "release") {
		t.Fatalf("move -dry-run = %d\n%s%s", code, out, errOut)
	}
	if st, err := r.mx["mx2"].Status(ctx, moveUser); err != nil || len(st) > 1 || (len(st) == 1 && st[0].Messages > 0) {
		t.Fatalf("after -dry-run, mx2 holds %+v, %v", st, err)
	}

	m := &mta{tb: r.tb, holdValue: move.DefaultHoldValue, delivered: map[string]string{}}
	stopMTA, mtaDone := make(chan struct{}), make(chan struct{})
	go m.run(stopMTA, mtaDone)
	w := &writer{addr: r.node.imapAddr}
	writerDone := make(chan struct{})
	go w.run(writerDone)
	time.Sleep(time.Second) // some load before the move

	t0 := time.Now()
	code, out, errOut = runCmd("move", "-config", r.node.config, moveUser, "mx2")
	took := time.Since(t0)
	t.Logf("switchboard move took %v:\n%s%s", took, out, errOut)
	if code != 0 {
		t.Fatalf("move = %d", code)
	}
	for _, want := range []string{"pre-copy pass 1", "hold:", "final sync", "verify:", "switch: host: mx2", "released", "moved " + moveUser} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	for _, step := range []string{"precopy", "hold", "kick", "finalsync", "verify", "switch", "invalidate", "release"} {
		if !strings.Contains(errOut, "step="+step) {
			t.Errorf("no log line for step %s", step)
		}
	}
	<-writerDone
	t.Logf("writer: %d operations, stopped by %v", w.ops.Load(), w.err)
	if w.ops.Load() == 0 {
		t.Error("the writer did nothing")
	}
	if got := r.ldapHosts(); len(got) != 1 || got[0] != "mx2" {
		t.Errorf("LDAP host = %v, want [mx2]", got)
	}
	time.Sleep(time.Second) // deliveries after the release go to mx2
	close(stopMTA)
	<-mtaDone
	o := r.checkMoved(ctx, "mx1", "mx2", m)
	t.Logf("%+v", o)
	if o.lost != 0 || o.duplicated != 0 || o.flagMismatches != 0 || o.uidvalidityChanged != 0 || o.destLogProblems != 0 {
		t.Errorf("lost %d, duplicated %d, flag mismatches %d, UIDVALIDITY changed %d, problems in mx2's log %d",
			o.lost, o.duplicated, o.flagMismatches, o.uidvalidityChanged, o.destLogProblems)
	}
	if o.delivered < 20 || o.deferred == 0 {
		t.Errorf("MTA delivered %d, deferred %d: the load or the mail hold did not happen", o.delivered, o.deferred)
	}

	// The next login goes to mx2.
	before := countLogins(t, r.tb.Backends["mx2"], moveUser)
	c, answer := loginVia(t, r.node.imapAddr, moveUser, moveUserPass)
	c.close()
	if !strings.HasPrefix(answer, "a OK") {
		t.Fatalf("login after the move: %s", answer)
	}
	waitUntil(t, 5*time.Second, "login on mx2", func() bool { return countLogins(t, r.tb.Backends["mx2"], moveUser) > before })
}

// faultyBackend wraps the destination to make a move fail at a chosen
// point, with real effects.
type faultyBackend struct {
	move.Backend
	pulls  atomic.Int32
	onPull func(n int32) // after each successful PullFrom
	onKick func()
}

func (f *faultyBackend) PullFrom(ctx context.Context, user, source string, full bool) error {
	if err := f.Backend.PullFrom(ctx, user, source, full); err != nil {
		return err
	}
	if f.onPull != nil {
		f.onPull(f.pulls.Add(1))
	}
	return nil
}

func (f *faultyBackend) Kick(ctx context.Context, user string) error {
	if f.onKick != nil {
		f.onKick()
	}
	return f.Backend.Kick(ctx, user)
}

// TestMoveRollback makes moves fail after the hold, by a real mismatch
// found by the verification and by an interrupt, and checks that the
// user stays on the source, untouched, and can log in again at once.
func TestMoveRollback(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	r := startMoveRig(t, 100)
	cfg := loadConfig(t, r.node.config)
	tests := []struct {
		name  string
		fault func(src, dst *faultyBackend, cancel context.CancelFunc)
		check func(t *testing.T, err error)
	}{
		{"verify mismatch", func(_, dst *faultyBackend, _ context.CancelFunc) {
			// After the final pass, a flag changes on mx2 behind the
			// move's back.
			dst.onPull = func(n int32) {
				if n == 3 {
					doveadmCall(t, r.tb.Backends["mx2"], `[["flagsAdd",{"user":"`+moveUser+`","flag":["$Injected"],"query":["mailbox","INBOX","all"]},"c1"]]`)
				}
			}
		}, func(t *testing.T, err error) {
			var me *move.MismatchError
			if !errors.As(err, &me) || !strings.Contains(err.Error(), `"INBOX": flags differ`) {
				t.Errorf("err = %v, want a MismatchError about INBOX's flags", err)
			}
		}},
		{"interrupted", func(src, _ *faultyBackend, cancel context.CancelFunc) {
			src.onKick = cancel // Ctrl-C during the kicks
		}, func(t *testing.T, err error) {
			if !errors.Is(err, context.Canceled) {
				t.Errorf("err = %v, want context.Canceled", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			before, err := r.mx["mx1"].Snapshot(ctx, moveUser)
			if err != nil {
				t.Fatal(err)
			}
			opts, closer, err := moveOptions(cfg, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			defer closer()
			src := &faultyBackend{Backend: opts.Backends["mx1"]}
			dst := &faultyBackend{Backend: opts.Backends["mx2"]}
			opts.Backends["mx1"], opts.Backends["mx2"] = src, dst
			opts.Overwrite = true // the earlier case left a copy
			tt.fault(src, dst, cancel)
			mv, err := move.New(opts)
			if err != nil {
				t.Fatal(err)
			}
			_, err = mv.Move(ctx, moveUser, "mx2")
			if err == nil {
				t.Fatal("the move succeeded")
			}
			t.Logf("move: %v", err)
			logDoveadmErrors(t, r.tb)
			tt.check(t, err)
			if got := r.ldapHosts(); len(got) != 1 || got[0] != "mx1" {
				t.Errorf("LDAP host = %v, want [mx1]", got)
			}
			after, err := r.mx["mx1"].Snapshot(context.Background(), moveUser)
			if err != nil {
				t.Fatal(err)
			}
			if err := move.Compare(before, after); err != nil {
				t.Errorf("the source changed: %v", err)
			}
			// Released: the next login works and goes to mx1.
			n := countLogins(t, r.tb.Backends["mx1"], moveUser)
			c, answer := loginVia(t, r.node.imapAddr, moveUser, moveUserPass)
			c.close()
			if !strings.HasPrefix(answer, "a OK") {
				t.Fatalf("login after the rollback: %s", answer)
			}
			waitUntil(t, 5*time.Second, "login on mx1", func() bool { return countLogins(t, r.tb.Backends["mx1"], moveUser) > n })
		})
	}
}

func loadConfig(t *testing.T, path string) *config.Config {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// testLogger logs to the test's output.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, nil))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// logDoveadmErrors shows the backends' Error lines.
func logDoveadmErrors(t *testing.T, tb *testbed.Testbed) {
	for name, d := range tb.Backends {
		log, _ := d.Log()
		for _, line := range strings.Split(log, "\n") {
			if strings.Contains(line, "Error:") {
				t.Logf("%s: %s", name, line)
			}
		}
	}
}

// doveadmCall posts a raw request to a backend's doveadm HTTP API and
// fails the test unless the command succeeds.
func doveadmCall(t *testing.T, d *testbed.Dovecot, body string) {
	req, err := http.NewRequest("POST", "http://"+d.DoveadmHTTPAddr+"/doveadm/v1", strings.NewReader(body))
	if err != nil {
		t.Error(err)
		return
	}
	req.SetBasicAuth("doveadm", doveadmTestPass)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(b), "doveadmResponse") {
		t.Errorf("doveadm %s: %s %s", body, resp.Status, b)
	}
}

// benchMoveEnv, set to a number of runs, turns on TestBenchMove (make
// bench-move).
const benchMoveEnv = "SWITCHBOARD_BENCH_MOVE"

var blockedRE = regexp.MustCompile(`blocked (\S+)\n`)

// TestBenchMove is the benchmark of issue 15: a 2,000-message mailbox
// moved back and forth between mx1 and mx2, each run under the full
// load (LMTP delivery every 50 ms, an IDLE client, a client changing
// flags and moving messages), and the outcome of each run counted.
func TestBenchMove(t *testing.T) {
	runs, _ := strconv.Atoi(os.Getenv(benchMoveEnv))
	if runs <= 0 || testing.Short() {
		t.Skipf("set %s=5 to run (make bench-move)", benchMoveEnv)
	}
	r := startMoveRig(t, 2000)
	ctx := context.Background()
	t.Logf("| run | move | messages | delivered | deferred | lost | duplicated | flag/folder mismatches | UIDVALIDITY changed | dest log Error/Warning | blocked | whole move |")
	t.Logf("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
	src, dst := "mx1", "mx2"
	for run := 1; run <= runs; run++ {
		m := &mta{tb: r.tb, holdValue: move.DefaultHoldValue, delivered: map[string]string{}}
		stopMTA, mtaDone := make(chan struct{}), make(chan struct{})
		go m.run(stopMTA, mtaDone)
		w := &writer{addr: r.node.imapAddr}
		writerDone := make(chan struct{})
		go w.run(writerDone)
		idleDone := make(chan error, 1)
		go idler(r.node.imapAddr, idleDone)
		time.Sleep(2 * time.Second)

		t0 := time.Now()
		code, out, errOut := runCmd("move", "-config", r.node.config, moveUser, dst)
		took := time.Since(t0)
		if code != 0 {
			t.Fatalf("run %d: move = %d\n%s%s", run, code, out, errOut)
		}
		<-writerDone
		<-idleDone
		time.Sleep(time.Second)
		close(stopMTA)
		<-mtaDone
		o := r.checkMoved(ctx, src, dst, m)
		blocked := "?"
		if b := blockedRE.FindStringSubmatch(out); b != nil {
			blocked = b[1]
		}
		t.Logf("| %d | %s→%s | %d | %d | %d | %d | %d | %d | %d | %d | %s | %v |", run, src, dst, o.messages, o.delivered, o.deferred,
			o.lost, o.duplicated, o.flagMismatches, o.uidvalidityChanged, o.destLogProblems, blocked, took.Round(100*time.Millisecond))
		if o.lost+o.duplicated+o.flagMismatches+o.uidvalidityChanged+o.destLogProblems != 0 {
			t.Errorf("run %d: %+v\n%s", run, o, out)
		}
		// The old copy is no longer live: remove it, as the docs say to
		// before moving a mailbox back (dsync cannot always bring a
		// once-live copy's flags back in line; the move's verification
		// then refuses to switch).
		if err := os.RemoveAll(r.tb.Backends[src].MailboxDir(moveUser)); err != nil {
			t.Fatal(err)
		}
		src, dst = dst, src
	}
}
