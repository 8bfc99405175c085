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
	var total int64
	lr := &io.LimitedReader{R: src}
	for {
		if err := waitReadable(rc); err != nil {
			return total, err
		}
		n := inq(rc)
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

// waitReadable blocks until the socket under rc has data, EOF or an error
// to report, or its read deadline passes. It reads nothing.
func waitReadable(rc syscall.RawConn) error {
	var opErr error
	err := rc.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if err == unix.EAGAIN || err == unix.EINTR {
			return false
		}
		opErr = nil
		return true
	})
	if err != nil {
		return err
	}
	return opErr
}

// inq returns the bytes queued for reading on the socket under rc.
func inq(rc syscall.RawConn) int {
	n := -1
	rc.Control(func(fd uintptr) {
		v, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ)
		if err == nil {
			n = v
		}
	})
	return n
}
