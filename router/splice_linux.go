package router

import (
	"io"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// spliceLoop moves bytes from src to dst with splice(2) until EOF (nil)
// or an error. It waits for src to become readable first, then splices
// exactly the bytes the kernel holds (SIOCINQ), so a pipe is only held
// while bytes are in flight: a parked session costs no pipe, and 5000
// idle sessions do not need 20000 pipe descriptors.
func spliceLoop(dst, src *net.TCPConn) (int64, error) {
	rc, err := src.SyscallConn()
	if err != nil {
		return 0, err
	}
	w := newSockWaiter(rc)
	var total int64
	lr := &io.LimitedReader{R: src}
	for {
		if err := w.wait(); err != nil {
			return total, err
		}
		n := w.queued()
		if n <= 0 {
			// Readable with nothing queued: EOF or an error, which a read
			// reports (or a byte that raced in, which is forwarded).
			var one [1]byte
			m, err := src.Read(one[:])
			if m > 0 {
				if _, werr := dst.Write(one[:m]); werr != nil {
					return total, werr
				}
				total += int64(m)
				continue
			}
			if err == io.EOF {
				return total, nil
			}
			return total, err
		}
		lr.N = int64(n)
		m, err := dst.ReadFrom(lr)
		total += m
		if err != nil {
			return total, err
		}
	}
}

// sockWaiter waits for a socket to become readable and tells how many
// bytes it holds. Its callbacks are bound once, so waiting allocates
// nothing.
type sockWaiter struct {
	rc         syscall.RawConn
	readyFn    func(fd uintptr) bool
	inqFn      func(fd uintptr)
	readyNowFn func(fd uintptr)
	n          int
	isReady    bool
}

func newSockWaiter(rc syscall.RawConn) *sockWaiter {
	w := &sockWaiter{rc: rc}
	w.readyFn = w.ready
	w.inqFn = w.inq
	w.readyNowFn = w.checkReady
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
func (w *sockWaiter) wait() error { return w.rc.Read(w.readyFn) }

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
