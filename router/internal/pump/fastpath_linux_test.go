package pump

import (
	"context"
	"testing"
)

// TestFastPathOnLinux checks that Linux builds take the fast path: raw
// I/O on plain TCP, splice(2) between two plain sockets, readiness waits
// on a plain source, and a parker with an epoll instance.
func TestFastPathOnLinux(t *testing.T) {
	if !FastPath {
		t.Fatal("FastPath is false on Linux")
	}
	a, b := tcpPair(t)
	defer a.Close()
	defer b.Close()
	if NewRawIO(a) == nil {
		t.Fatal("no raw I/O for a plain TCP connection")
	}
	d := testDirection(a, b)
	if !d.spliced || !d.plainSrc || d.w == nil {
		t.Fatalf("direction between plain sockets: spliced=%v plainSrc=%v raw=%v, want all", d.spliced, d.plainSrc, d.w != nil)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if p := NewParker(&ParkerOptions{Ctx: ctx}); p.epfd < 0 {
		t.Fatal("parker has no epoll instance")
	}
}
