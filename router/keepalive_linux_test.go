package router

import (
	"net"
	"switchboard/router/internal/pump"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestClientKeepAlive checks that client connections accepted by a
// listener carry TCP keepalive with Switchboard's timers: they are set
// once on the listening socket and must reach every accepted one.
func TestClientKeepAlive(t *testing.T) {
	srv := New(&Options{})
	defer srv.Close()
	addr, err := srv.Listen(ListenerConfig{Protocol: "imap", Addr: "127.0.0.1:0", TLS: TLSNone})
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The accepted end is the session's; find it by the client's address.
	deadline := time.Now().Add(5 * time.Second)
	var tc *net.TCPConn
	for tc == nil && time.Now().Before(deadline) {
		srv.mu.Lock()
		for sess := range srv.sessions {
			if sess.tcp != nil && sess.tcp.RemoteAddr().String() == c.LocalAddr().String() {
				tc = sess.tcp
			}
		}
		srv.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	if tc == nil {
		t.Fatal("no session for the client's connection")
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct{ level, opt, v int }{
		"SO_KEEPALIVE":  {unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		"TCP_KEEPIDLE":  {unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, int(pump.ClientKeepAliveIdle / time.Second)},
		"TCP_KEEPINTVL": {unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, int(pump.ClientKeepAliveInterval / time.Second)},
		"TCP_KEEPCNT":   {unix.IPPROTO_TCP, unix.TCP_KEEPCNT, pump.ClientKeepAliveCount},
		"TCP_NODELAY":   {unix.IPPROTO_TCP, unix.TCP_NODELAY, 1},
	}
	for name, o := range want {
		var got int
		var gerr error
		rc.Control(func(fd uintptr) { got, gerr = unix.GetsockoptInt(int(fd), o.level, o.opt) })
		if gerr != nil {
			t.Fatalf("%s: %v", name, gerr)
		}
		if (got != 0) != (o.v != 0) || (o.opt != unix.SO_KEEPALIVE && o.opt != unix.TCP_NODELAY && got != o.v) {
			t.Errorf("%s = %d on the accepted connection, want %d", name, got, o.v)
		}
	}
}
