package router_test

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"switchboard/route"
	"switchboard/router"
)

// TestServeInherited serves on a listener opened outside the server, as
// systemd's socket activation and the upgrade hand-over do: clients are
// greeted, keepalive is turned on, and after Shutdown the socket, still
// open in another descriptor (systemd's, the next process's), keeps
// taking connections into its backlog instead of refusing them.
func TestServeInherited(t *testing.T) {
	srv := router.New(&router.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	other, err := ln.(*net.TCPListener).File() // the other holder's descriptor
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := srv.Serve(router.ListenerConfig{Protocol: route.IMAP, TLS: router.TLSImplicit}, ln); err == nil {
		t.Fatal("Serve: implicit TLS without a certificate accepted")
	}
	ln, err = net.FileListener(other)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := srv.Serve(router.ListenerConfig{Name: "imap", Protocol: route.IMAP, TLS: router.TLSNone}, ln)
	if err != nil {
		t.Fatal(err)
	}
	// Through SyscallConn: os.File.Fd would put the shared socket in
	// blocking mode under the accept loop.
	rc, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var keepalive int
	rc.Control(func(fd uintptr) { keepalive, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE) })
	if err != nil || keepalive != 1 {
		t.Errorf("SO_KEEPALIVE on the served socket = %d, %v; want 1", keepalive, err)
	}
	c, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	greeting, err := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if err != nil || !strings.HasPrefix(greeting, "* OK") {
		t.Fatalf("greeting %q, %v", greeting, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	c, err = net.DialTimeout("tcp", addr.String(), 5*time.Second)
	if err != nil {
		t.Fatalf("connection refused after Shutdown though the socket is still open elsewhere: %v", err)
	}
	c.Close()
}
