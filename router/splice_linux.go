package router

import (
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// sockWaiter waits for a socket to become readable and tells how many
// bytes it holds. Its callbacks are bound once, so waiting allocates
// nothing.
type sockWaiter struct {
	rc         syscall.RawConn
	readyFn    func(fd uintptr) bool
	inqFn      func(fd uintptr)
	readyNowFn func(fd uintptr)
	readFn     func(fd uintptr)
	n          int
	isReady    bool
	polled     bool // wait has asked the socket once
	buf        []byte
	err        error
}

// errWouldBlock: a non-blocking read found nothing to read.
var errWouldBlock = errors.New("would block")

// tryRead reads what the socket holds into buf without waiting: n bytes,
// (0, nil) at EOF, or errWouldBlock.
func (w *sockWaiter) tryRead(buf []byte) (int, error) {
	w.buf, w.n, w.err = buf, 0, nil
	if err := w.rc.Control(w.readFn); err != nil {
		return 0, err
	}
	w.buf = nil
	return w.n, w.err
}

func (w *sockWaiter) read(fd uintptr) {
	for {
		n, err := unix.Read(int(fd), w.buf)
		switch err {
		case nil:
			w.n = n
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			w.err = errWouldBlock
		default:
			w.err = os.NewSyscallError("read", err)
		}
		return
	}
}

func newSockWaiter(rc syscall.RawConn) *sockWaiter {
	w := &sockWaiter{rc: rc}
	w.readyFn = w.waitCheck
	w.inqFn = w.inq
	w.readyNowFn = w.checkReady
	w.readFn = w.read
	return w
}

// readyNow reports, without waiting, whether a read would not block: data,
// EOF or an error.
func (w *sockWaiter) readyNow() bool {
	w.isReady = false
	if w.rc.Control(w.readyNowFn) != nil {
		return true // closed: let the read say so
	}
	return w.isReady
}

func (w *sockWaiter) checkReady(fd uintptr) { w.isReady = w.ready(fd) }

// wait blocks until the socket has data, EOF or an error to report, or its
// read deadline passes. It reads nothing.
//
// Only the first check before waiting asks the socket (the poller reports
// edges, so data that came before the wait must be seen here); once the
// poller has woken us, the socket is taken to be readable without another
// syscall, and a spurious wake-up just finds nothing to read.
func (w *sockWaiter) wait() error {
	w.polled = false
	return w.rc.Read(w.readyFn)
}

func (w *sockWaiter) waitCheck(fd uintptr) bool {
	if w.polled {
		return true
	}
	w.polled = true
	return w.ready(fd)
}

func (w *sockWaiter) ready(fd uintptr) bool {
	var b [1]byte
	_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
	return err != unix.EAGAIN && err != unix.EINTR
}

// queued returns the bytes waiting to be read (SIOCINQ), or -1.
func (w *sockWaiter) queued() int {
	w.n = -1
	w.rc.Control(w.inqFn)
	return w.n
}

func (w *sockWaiter) inq(fd uintptr) {
	if v, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ); err == nil {
		w.n = v
	}
}
