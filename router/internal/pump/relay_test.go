package pump

import (
	"bufio"
	"bytes"
	"net"
	"strings"
	"testing"
	"time"

	"switchboard/internal/testbed"
)

// lineWatcher is a test Watcher for line-only traffic (no literals): it
// forwards whole lines, counts commands against tagged answers, and
// stops the relay at a LOGOUT, which it keeps in held.
type lineWatcher struct {
	held, sbuf  []byte
	outstanding int
}

func (w *lineWatcher) Client(p []byte) ([]byte, bool) {
	w.held = append(w.held, p...)
	var fwd []byte
	for {
		i := bytes.Index(w.held, []byte("\r\n"))
		if i < 0 {
			return fwd, false
		}
		if f := strings.Fields(string(w.held[:i])); len(f) >= 2 && strings.EqualFold(f[1], "LOGOUT") {
			return fwd, true
		}
		w.outstanding++
		fwd = append(fwd, w.held[:i+2]...)
		w.held = w.held[i+2:]
	}
}

func (w *lineWatcher) Server(p []byte) {
	w.sbuf = append(w.sbuf, p...)
	for {
		i := bytes.Index(w.sbuf, []byte("\r\n"))
		if i < 0 {
			return
		}
		if line := w.sbuf[:i]; len(line) > 0 && line[0] != '*' && line[0] != '+' {
			w.outstanding--
		}
		w.sbuf = w.sbuf[i+2:]
	}
}

func (w *lineWatcher) Answered() bool { return w.outstanding == 0 && len(w.sbuf) == 0 }

// TestRelayDetach checks that a relay stopped at LOGOUT hands back a
// backend connection still logged in and in step: every answer the
// client was owed reached it, the LOGOUT was not forwarded, and a fresh
// NOOP on the detached connection gets its OK.
func TestRelayDetach(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: needs Dovecot (skipped with -short)")
	}
	if err := testbed.Check(); err != nil {
		t.Fatalf("integration test prerequisites: %v", err)
	}
	user := testbed.User{Mail: "relay@example.org", Password: "relay-pw"}
	dc, err := testbed.StartDovecot(testbed.DovecotOptions{Dir: t.TempDir(), IP: testbed.AllocIP(), Users: []testbed.User{user}})
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Stop()
	if err := dc.Seed(user.Mail, testbed.Message("a@example.org", user.Mail, "one", 100)); err != nil {
		t.Fatal(err)
	}

	bc, err := net.Dial("tcp", dc.IMAPAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	bc.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(bc)
	readUntil(t, br, "* OK")
	bc.Write([]byte("l1 LOGIN " + user.Mail + " " + user.Password + "\r\n"))
	readUntil(t, br, "l1 OK")
	if br.Buffered() > 0 {
		t.Fatalf("%d bytes left after login", br.Buffered())
	}

	// The client talks to the relay over a loopback pair.
	cli, srvSide := tcpPair(t)
	defer cli.Close()
	defer srvSide.Close()
	backend := bc.(*net.TCPConn)
	w := &lineWatcher{}
	r := NewRelay(Side{Conn: srvSide, TCP: srvSide, W: writerFor(srvSide)}, Side{Conn: backend, TCP: backend, W: writerFor(backend)}, w, 0)
	type result struct {
		d   Detached
		err error
	}
	resc := make(chan result, 1)
	go func() { d, err := r.Run(); resc <- result{d, err} }()

	cli.SetDeadline(time.Now().Add(10 * time.Second))
	cr := bufio.NewReader(cli)
	// Pipelined: the LOGOUT comes in the same write as two commands whose
	// answers must all reach the client first.
	cli.Write([]byte("c1 SELECT INBOX\r\nc2 NO"))
	time.Sleep(20 * time.Millisecond) // a command split across reads
	cli.Write([]byte("OP\r\nc3 LOGOUT\r\n"))
	sel := readUntil(t, cr, "c1 OK")
	if !strings.Contains(sel, "* 1 EXISTS") {
		t.Errorf("SELECT answer lacks its EXISTS:\n%s", sel)
	}
	readUntil(t, cr, "c2 OK")

	var res result
	select {
	case res = <-resc:
	case <-time.After(10 * time.Second):
		t.Fatal("relay did not stop at LOGOUT")
	}
	if res.err != nil {
		t.Fatalf("Run: %v", res.err)
	}
	if got := string(w.held); got != "c3 LOGOUT\r\n" {
		t.Errorf("the watcher holds %q, want the LOGOUT", got)
	}
	if res.d.Backend.Conn != backend {
		t.Fatal("the detached backend is not the relay's")
	}

	// The backend connection is intact: still logged in, still selected,
	// nothing of the session left unread on it.
	backend.SetDeadline(time.Now().Add(10 * time.Second))
	backend.Write([]byte("n1 NOOP\r\n"))
	if line := readUntil(t, br, "n1 "); !strings.Contains(line, "n1 OK") {
		t.Fatalf("NOOP on the detached backend: %q", line)
	}
	backend.Write([]byte("n2 UNSELECT\r\n"))
	if line := readUntil(t, br, "n2 "); !strings.Contains(line, "n2 OK") {
		t.Fatalf("UNSELECT on the detached backend (the mailbox was still selected): %q", line)
	}
}

// TestRelayKick checks that a kick stops a relay at once, with
// ErrStopped, whichever side it was waiting on.
func TestRelayKick(t *testing.T) {
	a, b := tcpPair(t)
	defer a.Close()
	defer b.Close()
	c, d := tcpPair(t)
	defer c.Close()
	defer d.Close()
	r := NewRelay(Side{Conn: b, TCP: b, W: b}, Side{Conn: c, TCP: c, W: c}, &lineWatcher{}, time.Minute)
	errc := make(chan error, 1)
	go func() { _, err := r.Run(); errc <- err }()
	time.Sleep(50 * time.Millisecond)
	r.Kick()
	select {
	case err := <-errc:
		if err != ErrStopped {
			t.Fatalf("Run after Kick: %v, want ErrStopped", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("relay still running 5 s after Kick")
	}
}

// readUntil reads lines until one starts with prefix and returns all of
// them.
func readUntil(t *testing.T, br *bufio.Reader, prefix string) string {
	t.Helper()
	var all strings.Builder
	for {
		line, err := br.ReadString('\n')
		all.WriteString(line)
		if err != nil {
			t.Fatalf("reading until %q: %v (so far %q)", prefix, err, all.String())
		}
		if strings.HasPrefix(line, prefix) {
			return all.String()
		}
	}
}
