//go:build !linux

package pump

import (
	"errors"
	"net"
	"syscall"
	"time"
)

// The portable build: no raw I/O, no splice(2), no parker, no TCP_INFO.
// Directions copy through a buffer on their goroutines, as io.Copy does,
// and count idle time themselves. Linux has the fast path.

// RawIO is raw I/O on a plain TCP connection; there is none here.
type RawIO struct{ c *net.TCPConn }

// NewRawIO returns nil: this platform has no raw I/O path.
func NewRawIO(*net.TCPConn) *RawIO { return nil }

func (r *RawIO) Read(p []byte) (int, error)  { return r.c.Read(p) }
func (r *RawIO) Write(p []byte) (int, error) { return r.c.Write(p) }

// rawSock is never made here (newRawSock returns nil), so a direction
// never takes the plain-source path.
type rawSock struct{ rc syscall.RawConn }

func newRawSock(syscall.RawConn) *rawSock { return nil }

func (w *rawSock) queued() int { return -1 }

var errWouldBlock = errors.New("would block")

func readNow(uintptr, []byte) (int, error) { return 0, errWouldBlock }

// Silent reports true: without a non-blocking peek the caller's own
// check (a NOOP) must tell.
func Silent(*net.TCPConn) bool { return true }

// QuickAck does nothing here.
func QuickAck(*net.TCPConn) {}

// ListenConfig returns the configuration for client listeners: Go sets
// TCP keepalive on each accepted connection.
func ListenConfig() net.ListenConfig {
	return net.ListenConfig{KeepAliveConfig: net.KeepAliveConfig{
		Enable: true, Idle: ClientKeepAliveIdle, Interval: ClientKeepAliveInterval, Count: ClientKeepAliveCount,
	}}
}

// quietFor returns how long the splice has moved nothing, as its
// directions noted.
func (d *direction) quietFor(now time.Time) time.Duration {
	return now.Sub(time.Unix(0, d.sp.active.Load()))
}

// noteActivity records that bytes moved.
func (d *direction) noteActivity() { d.sp.active.Store(time.Now().UnixNano()) }

// Parker parks nothing here: quiet directions keep their goroutines.
type Parker struct{}

type parkState struct{}

// NewParker returns a Parker that parks nothing.
func NewParker(*ParkerOptions) *Parker { return &Parker{} }

func (p *Parker) park(*direction) bool   { return false }
func (p *Parker) unpark(*direction) bool { return false }

// Parked returns 0.
func (p *Parker) Parked() int { return 0 }

// FastPath reports false: this platform copies through buffers.
const FastPath = false
