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
