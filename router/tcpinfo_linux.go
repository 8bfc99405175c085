package router

import (
	"net"
	"os"
	"syscall"
	"time"
	"unsafe"

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
	rc.Control(setQuickAck)
}

// setQuickAck sets TCP_QUICKACK with a raw system call: it never blocks,
// so the scheduler need not be told (see rawRead).
func setQuickAck(fd uintptr) {
	one := int32(1)
	syscall.RawSyscall6(syscall.SYS_SETSOCKOPT, fd, unix.IPPROTO_TCP, unix.TCP_QUICKACK,
		uintptr(unsafe.Pointer(&one)), unsafe.Sizeof(one), 0)
}

// TCP keepalive on client connections: a client that vanished without a
// FIN (a phone that lost its network) is found within about four minutes,
// and an IDLE-ing client gets at most one probe per two quiet minutes,
// the cadence of Dovecot's own "* OK Still here".
const (
	clientKeepAliveIdle     = 2 * time.Minute
	clientKeepAliveInterval = 30 * time.Second
	clientKeepAliveCount    = 4
)

// listenControl turns TCP keepalive on for a listening socket. Linux
// copies the setting and its timers to every connection accepted from
// it, which spares four setsockopt calls per client.
func listenControl(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		for _, o := range []struct{ level, opt, v int }{
			{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
			{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, int(clientKeepAliveIdle / time.Second)},
			{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, int(clientKeepAliveInterval / time.Second)},
			{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, clientKeepAliveCount},
		} {
			if serr = unix.SetsockoptInt(int(fd), o.level, o.opt, o.v); serr != nil {
				serr = os.NewSyscallError("setsockopt", serr)
				return
			}
		}
	})
	if err != nil {
		return err
	}
	return serr
}
