package pump

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawSock is a source socket's raw connection: pumpPlain reads inside its
// poller wait, the parker registers the socket through it, and it tells
// how many bytes the socket holds. Its callback is bound once.
type rawSock struct {
	rc    syscall.RawConn
	inqFn func(fd uintptr)
	n     int
}

// errWouldBlock: a non-blocking read found nothing to read.
var errWouldBlock = errors.New("would block")

// readNow reads what fd holds into p without waiting: n bytes, (0, nil)
// at EOF, or errWouldBlock when there is nothing yet.
func readNow(fd uintptr, p []byte) (int, error) {
	for {
		n, err := rawRead(fd, p)
		switch err {
		case 0:
			return n, nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, errWouldBlock
		default:
			return 0, os.NewSyscallError("read", err)
		}
	}
}

// The spliced path's reads, writes and peeks are raw system calls: on
// sockets that never block they return at once, so there is no need to
// tell the Go scheduler, whose monitor would otherwise take the
// goroutine's P away from any call that outlasts its 20 µs tick (a
// loopback write runs the receiver's TCP input too) and hand it to another
// thread, then wake itself every 20 µs while that goes on. Measured, that
// was a tenth of the proxy's CPU under load.

func rawRead(fd uintptr, p []byte) (int, syscall.Errno) {
	if len(p) == 0 {
		return 0, 0
	}
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(n), e
}

func rawWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	if len(p) == 0 {
		return 0, 0
	}
	n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(n), e
}

// RawIO reads and writes a plain TCP connection with raw system calls,
// waiting in the poller (under the connection's deadlines) when a read
// finds nothing or the send buffer is full: net.Conn's Read and Write,
// minus the scheduler's syscall bookkeeping. Reads and writes may run on
// two goroutines at once; each keeps its own state. Its callbacks are
// bound once.
type RawIO struct {
	c       *net.TCPConn
	rc      syscall.RawConn
	readFn  func(fd uintptr) bool
	writeFn func(fd uintptr) bool
	rbuf    []byte
	rn      int
	rerr    error
	wbuf    []byte
	wn      int
	werr    error
}

// NewRawIO returns raw I/O for c, or nil if c has no raw connection.
func NewRawIO(c *net.TCPConn) *RawIO {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	r := &RawIO{c: c, rc: rc}
	r.readFn = r.read
	r.writeFn = r.write
	return r
}

// Read reads what the socket holds, waiting for something if it holds
// nothing; (0, io.EOF) at the end of the stream.
func (r *RawIO) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.rbuf, r.rn, r.rerr = p, 0, nil
	err := r.rc.Read(r.readFn)
	r.rbuf = nil
	if err == nil {
		err = r.rerr
	}
	switch {
	case err != nil:
		return 0, r.opError("read", err)
	case r.rn == 0:
		return 0, io.EOF
	}
	return r.rn, nil
}

func (r *RawIO) read(fd uintptr) bool {
	n, err := readNow(fd, r.rbuf)
	if err == errWouldBlock {
		return false // nothing yet: wait until readable
	}
	r.rn, r.rerr = n, err
	return true
}

// Write writes all of p, or fails.
func (r *RawIO) Write(p []byte) (int, error) {
	r.wbuf, r.wn, r.werr = p, 0, nil
	err := r.rc.Write(r.writeFn)
	r.wbuf = nil
	if err == nil {
		err = r.werr
	}
	if err != nil {
		return r.wn, r.opError("write", err)
	}
	return r.wn, nil
}

func (r *RawIO) write(fd uintptr) bool {
	for r.wn < len(r.wbuf) {
		n, err := rawWrite(fd, r.wbuf[r.wn:])
		switch err {
		case 0:
			r.wn += n
		case unix.EINTR:
		case unix.EAGAIN:
			return false // full: wait until writable
		default:
			r.werr = os.NewSyscallError("write", err)
			return true
		}
	}
	return true
}

// opError dresses err as net.Conn's own errors are, so logs and error
// checks read the same.
func (r *RawIO) opError(op string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) { // the poller's own ("raw-read")
		e := *oe
		e.Op = op
		return &e
	}
	return &net.OpError{Op: op, Net: "tcp", Source: r.c.LocalAddr(), Addr: r.c.RemoteAddr(), Err: err}
}

func newRawSock(rc syscall.RawConn) *rawSock {
	w := &rawSock{rc: rc}
	w.inqFn = w.inq
	return w
}

// peekReady reports, with a non-blocking peek, whether fd has data, EOF
// or an error to report.
func peekReady(fd uintptr) bool {
	var b [1]byte
	_, _, err := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
		unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	return err != unix.EAGAIN && err != unix.EINTR
}

// Silent reports whether c has nothing to be read now: no bytes, no EOF,
// no error. A parked connection that is not silent was hung up or sent
// something (a BYE) and is not to be reused.
func Silent(c *net.TCPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	silent := false
	rc.Control(func(fd uintptr) { silent = !peekReady(fd) })
	return silent
}

// queued returns the bytes waiting to be read (SIOCINQ), or -1.
func (w *rawSock) queued() int {
	w.n = -1
	w.rc.Control(w.inqFn)
	return w.n
}

func (w *rawSock) inq(fd uintptr) {
	if v, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ); err == nil {
		w.n = v
	}
}
