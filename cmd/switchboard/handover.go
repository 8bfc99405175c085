package main

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The hand-over's messages on its control socket, one per line: the new
// process has its configuration (msgPrepared), the old one has left the
// cluster and closed its admin listener (msgReleased), the new one serves
// (msgReady).
const (
	msgPrepared = "prepared"
	msgReleased = "released"
	msgReady    = "ready"
)

// namedListener is a listening socket and the [[listen]] name it serves.
type namedListener struct {
	name string
	ln   net.Listener
}

// handover is an upgrade in progress: on SIGUSR2 the running process
// starts the binary on disk with its listening sockets (LISTEN_FDS, as
// systemd passes them), so that the kernel keeps queueing connections
// for whichever process accepts them and none is refused. Both accept
// until the new one is ready; then the old one stops accepting and drains
// as on SIGTERM, and names the new one the unit's main process.
type handover struct {
	log     *slog.Logger
	pid     int
	ctrl    *os.File
	msgc    chan string // lines from the new process; closed at EOF
	exitc   chan error  // the new process's exit
	timeout time.Duration
}

// startHandover starts the new process. The caller waits for it with
// await, and calls abort if it gives up.
func startHandover(ls []namedListener, logger *slog.Logger) (*handover, error) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, os.NewSyscallError("socketpair", err)
	}
	// Descriptors are duplicated through SyscallConn: os.File.Fd (which
	// os/exec calls) would switch the shared sockets to blocking mode
	// under this process's accept loops.
	files := []uintptr{0, 1, 2}
	names := make([]string, 0, len(ls)+1)
	var dups []int
	defer func() {
		for _, fd := range dups {
			unix.Close(fd)
		}
		unix.Close(pair[1])
	}()
	for _, l := range ls {
		fd, err := dupListener(l.ln)
		if err != nil {
			unix.Close(pair[0])
			return nil, fmt.Errorf("listener %s: %w", l.name, err)
		}
		dups = append(dups, fd)
		files = append(files, uintptr(fd))
		names = append(names, l.name)
	}
	files = append(files, uintptr(pair[1]))
	names = append(names, handoverFDName)
	env := append(envWithout(os.Environ(), envListenPID, envListenFDs, envListenFDNames, envHandover),
		envListenFDs+"="+strconv.Itoa(len(names)),
		envListenFDNames+"="+strings.Join(names, ":"),
		envHandover+"="+strconv.Itoa(os.Getpid()))
	path, err := os.Executable() // the file on disk now: the upgrade
	if err != nil {
		unix.Close(pair[0])
		return nil, err
	}
	pid, err := syscall.ForkExec(path, os.Args, &syscall.ProcAttr{Env: env, Files: files})
	if err != nil {
		unix.Close(pair[0])
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	h := &handover{log: logger, pid: pid, ctrl: os.NewFile(uintptr(pair[0]), "handover"),
		msgc: make(chan string, 4), exitc: make(chan error, 1), timeout: handoverTimeout}
	go readHandover(bufio.NewReader(h.ctrl), h.msgc)
	go reapHandover(pid, h.exitc)
	return h, nil
}

// dupListener returns a new descriptor of ln's socket, close-on-exec.
func dupListener(ln net.Listener) (int, error) {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return -1, errors.New("not a socket")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	nfd, derr := -1, error(nil)
	if err := rc.Control(func(fd uintptr) { nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	return nfd, derr
}

// envWithout returns env without the variables named.
func envWithout(env []string, names ...string) []string {
	out := make([]string, 0, len(env))
outer:
	for _, kv := range env {
		for _, n := range names {
			if strings.HasPrefix(kv, n+"=") {
				continue outer
			}
		}
		out = append(out, kv)
	}
	return out
}

// readHandover is the goroutine that reads the new process's messages.
func readHandover(r *bufio.Reader, msgc chan<- string) {
	defer close(msgc)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		msgc <- strings.TrimSpace(line)
	}
}

// reapHandover is the goroutine that waits for the new process, so that
// one which fails leaves no zombie.
func reapHandover(pid int, exitc chan<- error) {
	var ws syscall.WaitStatus
	_, err := syscall.Wait4(pid, &ws, 0, nil)
	if err == nil {
		err = fmt.Errorf("exited: %v", ws)
	}
	exitc <- err
}

// await waits for msg from the new process. It fails when the process
// exits or closes its end first, when the timeout passes, or when a
// SIGTERM or SIGINT comes (the caller then drains as usual).
func (h *handover) await(msg string, sigc <-chan os.Signal) error {
	timer := time.NewTimer(h.timeout)
	defer timer.Stop()
	for {
		select {
		case m, ok := <-h.msgc:
			if !ok {
				return fmt.Errorf("new process %d ended the hand-over before %q", h.pid, msg)
			}
			if m == msg {
				return nil
			}
			return fmt.Errorf("new process %d: unexpected %q", h.pid, m)
		case err := <-h.exitc:
			return fmt.Errorf("new process %d %v", h.pid, err)
		case <-timer.C:
			return fmt.Errorf("new process %d: no %q within %v", h.pid, msg, h.timeout)
		case sig := <-sigc:
			if sig == syscall.SIGTERM || sig == syscall.SIGINT {
				return fmt.Errorf("%w (%v)", errInterrupted, sig)
			}
		}
	}
}

// release tells the new process that the ports it binds next are free.
func (h *handover) release() error {
	_, err := h.ctrl.WriteString(msgReleased + "\n")
	return err
}

// abort stops the new process, if it still runs.
func (h *handover) abort() {
	syscall.Kill(h.pid, syscall.SIGKILL)
	h.ctrl.Close()
}

// done makes the new process the unit's main process.
func (h *handover) done() {
	h.ctrl.Close()
	if err := sdNotify(fmt.Sprintf("MAINPID=%d\nREADY=1", h.pid)); err != nil {
		h.log.Warn("sd_notify", "err", err)
	}
}

// errInterrupted is await's error when a SIGTERM or SIGINT came.
var errInterrupted = errors.New("hand-over interrupted by a stop signal")

// upgrade hands the listening sockets to a new process started from the
// binary on disk (SIGUSR2). It returns true when this process is to drain
// now: the new one serves, or a stop signal came meanwhile. On a failure
// it returns false and this process serves on; a failure after it left
// the cluster (rare: the new process dies while starting) leaves it
// serving without the cluster and the admin listener, which it logs.
func upgrade(ls []namedListener, n *node, closeNode func(), sigc <-chan os.Signal, logger *slog.Logger) bool {
	logger.Info("upgrade: handing the listening sockets to a new process")
	h, err := startHandover(ls, logger)
	if err != nil {
		logger.Error("upgrade failed; serving on", "err", err)
		return false
	}
	if err := h.await(msgPrepared, sigc); err != nil {
		h.abort()
		logger.Error("upgrade failed; serving on", "err", err)
		return errors.Is(err, errInterrupted)
	}
	n.draining() // /healthz 503, leave the cluster
	closeNode()  // free the cluster's and the admin listener's ports
	if err = h.release(); err == nil {
		err = h.await(msgReady, sigc)
	}
	if err != nil {
		h.abort()
		logger.Error("upgrade failed after leaving the cluster; serving on alone, without cluster and admin listener: restart the unit", "err", err)
		return errors.Is(err, errInterrupted)
	}
	h.done()
	logger.Info("upgrade: the new process serves", "pid", h.pid)
	return true
}
