package pump

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

// QuickAck asks the kernel to acknowledge the next segments from c at
// once instead of delaying the ACK. A backend answering pipelined commands
// in several small writes (Dovecot's "+OK" to XCLIENT, then to AUTH) may
// hold the second behind Nagle's algorithm until the first is
// acknowledged; a delayed ACK would cost up to 40 ms per login.
func QuickAck(c *net.TCPConn) {
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

// ListenConfig returns the configuration for client listeners: TCP
// keepalive is turned on for the listening socket, and Linux copies the
// setting and its timers to every connection accepted from it, which
// spares four setsockopt calls per client.
func ListenConfig() net.ListenConfig {
	return net.ListenConfig{KeepAlive: -1, Control: listenControl}
}

// quietFor returns how long neither side of d's splice has received
// anything, from the kernel's TCP_INFO on both sockets.
func (d *direction) quietFor(time.Time) time.Duration {
	return min(sinceLastRecv(d.srcTCP), sinceLastRecv(d.dstTCP))
}

// noteActivity is for platforms without TCP_INFO; here the kernel keeps
// the time, and the spliced path no bookkeeping.
func (d *direction) noteActivity() {}

// listenControl turns TCP keepalive on for a listening socket. Linux
// copies the setting and its timers to every connection accepted from
// it, which spares four setsockopt calls per client.
func listenControl(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		for _, o := range []struct{ level, opt, v int }{
			{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
			{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, int(ClientKeepAliveIdle / time.Second)},
			{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, int(ClientKeepAliveInterval / time.Second)},
			{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, ClientKeepAliveCount},
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
