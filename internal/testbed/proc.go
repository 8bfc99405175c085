package testbed

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// child is a daemon run in the foreground as a child process, in a process
// group of its own so that Stop can signal everything it forked.
type child struct {
	name    string // for messages: "slapd", "dovecot mx1"
	logPath string // stdout and stderr go here (appended)
	cmd     *exec.Cmd
	donec   chan struct{} // closed when the process has been waited for
	waitErr error         // valid once donec is closed
}

// startChild runs argv with stdout and stderr appended to logPath. The
// process gets its own process group and SIGKILL when the harness dies
// (Pdeathsig; Linux sends it when the OS thread that forked the child exits,
// which for the Go runtime in practice means when the process exits).
func startChild(name, logPath string, argv []string) (*child, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("testbed: open %s log: %w", name, err)
	}
	defer logf.Close() // the child has its own copy of the descriptor
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = ChildAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("testbed: start %s: %w", name, err)
	}
	c := &child{name: name, logPath: logPath, cmd: cmd, donec: make(chan struct{})}
	go waitChild(c)
	return c, nil
}

// waitChild reaps the process and records how it ended.
func waitChild(c *child) {
	c.waitErr = c.cmd.Wait()
	close(c.donec)
}

// exited reports whether the process has ended, and how.
func (c *child) exited() (bool, error) {
	select {
	case <-c.donec:
		if c.waitErr == nil {
			return true, fmt.Errorf("%s exited", c.name)
		}
		return true, fmt.Errorf("%s exited: %w", c.name, c.waitErr)
	default:
		return false, nil
	}
}

// stop sends SIGTERM to the whole process group, then SIGKILL if the
// process has not ended within stopGrace, and finally SIGKILL to whatever is
// left in the group (helpers that outlived their master). Signalling the
// group rather than the leader matters for Dovecot: its master alone takes a
// second to shut down, the group a tenth of that, at the price of a few
// "Killed with signal 15" and "read(anvil) failed" lines in its log.
func (c *child) stop() error {
	pgid := c.cmd.Process.Pid
	if err := syscall.Kill(-pgid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("testbed: stop %s: %w", c.name, err)
	}
	select {
	case <-c.donec:
	case <-time.After(stopGrace):
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-c.donec
	}
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("testbed: kill %s process group: %w", c.name, err)
	}
	return nil
}

// tail returns the last logTailBytes of the file at path, for error messages.
func tail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > logTailBytes {
		if _, err := f.Seek(-logTailBytes, io.SeekEnd); err != nil {
			return fmt.Sprintf("(cannot read %s: %v)", path, err)
		}
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	s := strings.TrimSpace(string(data))
	if s == "" {
		return "(empty)"
	}
	return s
}
