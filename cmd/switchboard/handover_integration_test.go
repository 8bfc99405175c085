package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// probeEvery is how often the client loop opens a connection.
	probeEvery = 40 * time.Millisecond
	// probeWait bounds one probe: a connection queued in the backlog
	// while no process accepts waits for a drain (drain_grace 2s) and a
	// start, which take seconds on a loaded machine.
	probeWait = 40 * time.Second
)

// probeResult is one connection of the client loop.
type probeResult struct {
	at  time.Time
	err error
}

// probeLoop is the goroutine that opens a connection every probeEvery,
// each checked by probe, until stopc closes.
func probeLoop(addr, user, pass string, stopc <-chan struct{}, results chan<- probeResult, wg *sync.WaitGroup) {
	defer wg.Done()
	tick := time.NewTicker(probeEvery)
	defer tick.Stop()
	for {
		select {
		case <-stopc:
			return
		case <-tick.C:
			wg.Add(1)
			go probe(addr, user, pass, results, wg)
		}
	}
}

// probe connects, waits for the greeting and logs in: a connection is
// answered, not refused, and a login works.
func probe(addr, user, pass string, results chan<- probeResult, wg *sync.WaitGroup) {
	defer wg.Done()
	at := time.Now()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		results <- probeResult{at, fmt.Errorf("dial: %w", err)}
		return
	}
	defer conn.Close()
	c := &imapClient{conn: conn, br: bufio.NewReader(conn)}
	line, err := c.readLine(probeWait)
	if err == nil && !strings.HasPrefix(line, "* OK") {
		err = fmt.Errorf("greeting %q", line)
	}
	if err == nil {
		c.conn.SetDeadline(time.Now().Add(probeWait))
		if line, err = c.login(user, pass); err == nil && !strings.HasPrefix(line, "a OK") {
			err = fmt.Errorf("login: %q", line)
		}
	}
	results <- probeResult{at, err}
}

// startPassed starts serve as systemd starts a socket-activated service:
// the listening socket as descriptor 3, LISTEN_FDS=1 and LISTEN_PID set
// to the process's own pid (by a shell that then execs the binary, as
// the pid is not known before the start).
func (n *sbNode) startPassed(sock *os.File) {
	n.t.Helper()
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		n.t.Fatal(err)
	}
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`, binary, "serve", "-config", n.config)
	cmd.Env = append(os.Environ(), "LISTEN_FDS=1", "LISTEN_FDNAMES=switchboard.socket")
	cmd.ExtraFiles = []*os.File{sock}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		n.t.Fatal(err)
	}
	done := make(chan error, 1)
	go waitProcess(cmd, logf, done)
	n.mu.Lock()
	n.cmd, n.done = cmd, done
	n.mu.Unlock()
	waitUntil(n.t, 20*time.Second, n.name+" /healthz 200", func() bool {
		code, _ := n.healthz()
		return code == http.StatusOK
	})
}

// idleSession logs in as user and enters IDLE; the returned channel gets
// the BYE.
func idleSession(t *testing.T, addr, user, pass string) (*imapClient, chan bye) {
	t.Helper()
	c, answer := loginVia(t, addr, user, pass)
	if !strings.HasPrefix(answer, "a OK") {
		t.Fatalf("login %s: %q", user, answer)
	}
	fmt.Fprintf(c.conn, "b IDLE\r\n")
	if line, err := c.readLine(10 * time.Second); err != nil || !strings.HasPrefix(line, "+") {
		t.Fatalf("IDLE: %q, %v", line, err)
	}
	byes := make(chan bye, 1)
	go readBye(c, byes)
	return c, byes
}

// checkBye checks that an IDLE session got BYE [UNAVAILABLE] about grace
// after from.
func checkBye(t *testing.T, what string, byes <-chan bye, from time.Time, grace time.Duration) {
	t.Helper()
	select {
	case b := <-byes:
		if b.err != nil || !strings.Contains(b.line, "BYE [UNAVAILABLE]") {
			t.Fatalf("%s: %q, %v; want * BYE [UNAVAILABLE]", what, b.line, b.err)
		}
		if d := b.at.Sub(from); d < grace-200*time.Millisecond {
			t.Errorf("%s: BYE %v after the signal, before the grace of %v", what, d, grace)
		}
	case <-time.After(grace + 20*time.Second):
		t.Fatalf("%s: no BYE", what)
	}
}

// TestRestartRefusesNothing runs serve on a socket the test holds, as
// systemd's switchboard.socket does, with a client loop logging in every
// probeEvery throughout: an upgrade by SIGUSR2 (the old process hands its
// socket to a new one, which serves while the old one drains its IDLE
// session with BYE [UNAVAILABLE] at the grace's end), then a restart by
// SIGTERM and a new start (connections wait in the backlog meanwhile).
// No connection may be refused or go unanswered, and every login works.
func TestRestartRefusesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	// Orphans come to the test, which reaps them: the new process's
	// parent, the old one, exits while it serves.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	const grace = 2 * time.Second // writeConfig's drain_grace
	tb, dir := startTestbed(t)
	n := newSBNode(t, dir, "node")
	host, port, _ := net.SplitHostPort(n.gossip)
	n.writeConfig(tb, fmt.Sprintf(`
[cluster]
node_name = "node"
bind_addr = %q
bind_port = %s
keyring_file = "cluster.keys"

[admin]
address = %q
token_file = "admin.token"
`, host, port, n.admin))
	stopAtEnd(t, n)
	notes := notifySocket(t, dir)
	ln, err := net.Listen("tcp", n.imapAddr) // systemd's socket
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sock, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	n.startPassed(sock)
	oldPid := n.cmd.Process.Pid
	alice, _ := tb.User("alice@example.org")
	bob, _ := tb.User("bob@example.org")

	results := make(chan probeResult, 100000)
	stopc := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go probeLoop(n.imapAddr, bob.Mail, bob.Password, stopc, results, &wg)

	// The upgrade.
	_, byes := idleSession(t, n.imapAddr, alice.Mail, alice.Password)
	time.Sleep(500 * time.Millisecond)
	upgradeAt := time.Now()
	n.signal(syscall.SIGUSR2)
	if err := n.wait(grace + 30*time.Second); err != nil {
		t.Fatalf("old process after the hand-over: %v", err)
	}
	checkBye(t, "IDLE session on the old process", byes, upgradeAt, grace)
	newPid := servingPid(t, n)
	if newPid == oldPid {
		t.Fatal("no new process serves after SIGUSR2")
	}
	if code, _ := n.healthz(); code != http.StatusOK {
		t.Fatalf("/healthz of the new process: %d", code)
	}
	// systemd was told: ready at the start, then the new main process.
	// The old process, no longer the main one, says nothing more.
	for _, want := range []string{"READY=1", fmt.Sprintf("MAINPID=%d\nREADY=1", newPid)} {
		select {
		case got := <-notes:
			if got != want {
				t.Errorf("sd_notify: %q, want %q", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("sd_notify: no %q", want)
		}
	}

	// The restart: stop, and start again on the same socket.
	_, byes = idleSession(t, n.imapAddr, alice.Mail, alice.Password)
	time.Sleep(500 * time.Millisecond)
	stopAt := time.Now()
	syscall.Kill(newPid, syscall.SIGTERM)
	checkBye(t, "IDLE session at the restart", byes, stopAt, grace)
	select {
	case got := <-notes:
		if got != "STOPPING=1" {
			t.Errorf("sd_notify at SIGTERM: %q, want STOPPING=1", got)
		}
	case <-time.After(5 * time.Second):
		t.Error("sd_notify: no STOPPING=1 at SIGTERM")
	}
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(newPid, &ws, 0, nil); err != nil || ws.ExitStatus() != 0 {
		t.Fatalf("new process after SIGTERM: %v, %v", ws, err)
	}
	n.startPassed(sock)
	time.Sleep(time.Second)
	close(stopc)
	wg.Wait()
	close(results)

	var total, failed, duringRestart int
	for r := range results {
		total++
		if r.at.After(stopAt) {
			duringRestart++
		}
		if r.err != nil {
			failed++
			if failed <= 5 {
				t.Errorf("connection at %v: %v", r.at.Sub(upgradeAt).Round(time.Millisecond), r.err)
			}
		}
	}
	t.Logf("%d connections, %d failed, %d from the restart on", total, failed, duringRestart)
	if failed > 0 {
		t.Fatalf("%d of %d connections failed", failed, total)
	}
	if total < 50 || duringRestart < 10 {
		t.Fatalf("%d connections (%d from the restart on): the loop did not run throughout", total, duringRestart)
	}
}

// notifySocket listens as systemd's notification socket (NOTIFY_SOCKET)
// and returns the messages it gets.
func notifySocket(t *testing.T, dir string) <-chan string {
	t.Helper()
	path := dir + "/notify"
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	notes := make(chan string, 16)
	go readNotes(c, notes)
	return notes
}

// readNotes is the goroutine that reads sd_notify messages.
func readNotes(c *net.UnixConn, notes chan<- string) {
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		notes <- string(buf[:n])
	}
}

// servingPid returns the pid of the process now serving the node: the
// one the old process started, a child of the test once the old one
// exited (the test is a subreaper).
func servingPid(t *testing.T, n *sbNode) int {
	t.Helper()
	var pid int
	waitUntil(t, 20*time.Second, "the new process", func() bool {
		b, err := os.ReadFile(n.logPath)
		if err != nil {
			return false
		}
		const marker = `msg="upgrade: the new process serves" pid=`
		i := strings.LastIndex(string(b), marker)
		if i < 0 {
			return false
		}
		f := strings.Fields(string(b[i+len(marker):]))
		pid, err = strconv.Atoi(f[0])
		return err == nil
	})
	return pid
}
