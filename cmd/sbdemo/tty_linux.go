package main

import (
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// takeTerminal moves the demo into a process group of its own and makes
// that group the terminal's foreground, so that Ctrl-C reaches the demo
// alone: not make, not `go run`, which would otherwise die of it and
// report an error though the demo stops cleanly. The returned function
// gives the terminal back. Without a controlling terminal, or when the
// demo runs in the background, it does nothing.
func takeTerminal() (restore func()) {
	noop := func() {}
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return noop
	}
	fd := int(tty.Fd())
	orig, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
	if err != nil || orig != unix.Getpgrp() {
		tty.Close()
		return noop
	}
	// A process outside the foreground group that sets it gets SIGTTOU.
	signal.Ignore(syscall.SIGTTOU)
	if err := unix.Setpgid(0, 0); err != nil {
		tty.Close()
		return noop
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPGRP, unix.Getpid()); err != nil {
		unix.Setpgid(0, orig)
		tty.Close()
		return noop
	}
	return func() {
		unix.IoctlSetPointerInt(fd, unix.TIOCSPGRP, orig)
		tty.Close()
	}
}
