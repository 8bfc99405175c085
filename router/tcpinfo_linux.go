package router

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// sinceLastRecv returns how long ago c last received data, from the
// kernel's TCP_INFO. It returns a very long time when it cannot tell, so
// that an idle timeout is never extended on a guess.
func sinceLastRecv(c *net.TCPConn) time.Duration {
	if c == nil {
		return 1<<63 - 1
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return 1<<63 - 1
	}
	d := time.Duration(1<<63 - 1)
	rc.Control(func(fd uintptr) {
		info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		if err == nil {
			d = time.Duration(info.Last_data_recv) * time.Millisecond
		}
	})
	return d
}

// quickAck asks the kernel to acknowledge the next segments from c at
// once instead of delaying the ACK. A backend answering pipelined commands
// in several small writes (Dovecot's "+OK" to XCLIENT, then to AUTH) may
// hold the second behind Nagle's algorithm until the first is
// acknowledged; a delayed ACK would cost up to 40 ms per login.
func quickAck(c *net.TCPConn) {
	if c == nil {
		return
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_QUICKACK, 1)
	})
}
