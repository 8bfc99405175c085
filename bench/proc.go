package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"switchboard/internal/testbed"
	"syscall"
	"time"
)

// Process management for the targets the benchmark runs itself.
const (
	readyTimeout = 15 * time.Second
	readyPoll    = 25 * time.Millisecond
	stopGrace    = 5 * time.Second
	probeTimeout = time.Second
	logTailBytes = 3000
)

// daemon is a target process run in the foreground, in its own process
// group, killed with the benchmark (Pdeathsig).
type daemon struct {
	name  string
	log   string
	cmd   *exec.Cmd
	donec chan struct{}
	err   error
}

func startDaemon(name, logPath string, argv []string, env ...string) (*daemon, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = testbed.ChildAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	d := &daemon{name: name, log: logPath, cmd: cmd, donec: make(chan struct{})}
	go waitDaemon(d)
	return d, nil
}

func waitDaemon(d *daemon) {
	d.err = d.cmd.Wait()
	close(d.donec)
}

func (d *daemon) pid() int { return d.cmd.Process.Pid }

func (d *daemon) exited() bool {
	select {
	case <-d.donec:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, then SIGKILL to the whole group after stopGrace, and
// finally SIGKILL to whatever the daemon left in its group.
func (d *daemon) stop() {
	pgid := d.cmd.Process.Pid
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.donec:
	case <-time.After(stopGrace):
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-d.donec
	}
	syscall.Kill(-pgid, syscall.SIGKILL)
}

// waitGreeting waits until addr answers with a line starting with prefix,
// speaking TLS first if tlsFirst (only the TCP accept is checked then).
func (d *daemon) waitGreeting(addr, prefix string, tlsFirst bool) error {
	deadline := time.Now().Add(readyTimeout)
	var last error
	for time.Now().Before(deadline) {
		if d.exited() {
			return fmt.Errorf("%s exited: %v\n--- %s ---\n%s", d.name, d.err, d.log, tail(d.log))
		}
		if last = probe(addr, prefix, tlsFirst); last == nil {
			return nil
		}
		time.Sleep(readyPoll)
	}
	return fmt.Errorf("%s not ready on %s: %w\n--- %s ---\n%s", d.name, addr, last, d.log, tail(d.log))
}

func probe(addr, prefix string, tlsFirst bool) error {
	c, err := net.DialTimeout("tcp", addr, probeTimeout)
	if err != nil {
		return err
	}
	defer c.Close()
	if tlsFirst {
		return nil
	}
	c.SetDeadline(time.Now().Add(probeTimeout))
	l, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(l, prefix) {
		return fmt.Errorf("greeting %q, want %q", strings.TrimSpace(l), prefix)
	}
	return nil
}

func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > logTailBytes {
		b = b[len(b)-logTailBytes:]
	}
	return strings.TrimSpace(string(b))
}

var errSkip = errors.New("target not available")
