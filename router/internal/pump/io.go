package pump

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
)

// AttachIO points br at c, through raw I/O when c is plain TCP and the
// platform has it, and returns what to write to c with.
func AttachIO(c net.Conn, br *bufio.Reader) io.Writer {
	if tc, ok := c.(*net.TCPConn); ok {
		if r := NewRawIO(tc); r != nil {
			br.Reset(r)
			return r
		}
	}
	br.Reset(c)
	return c
}

// TLSUnder returns the connection a TLS layer over c should read and
// write: c through its raw I/O when w (what AttachIO returned for c) is
// raw I/O, so TLS records move without the scheduler's syscall
// bookkeeping too; else c.
func TLSUnder(c net.Conn, w io.Writer) net.Conn {
	if r, ok := w.(*RawIO); ok && r != nil {
		return &rawTCPConn{TCPConn: r.c, io: r}
	}
	return c
}

// RawConn returns c with its reads and writes through raw I/O where the
// platform has it, for a TLS layer above it; else c.
func RawConn(c *net.TCPConn) net.Conn {
	if r := NewRawIO(c); r != nil {
		return &rawTCPConn{TCPConn: c, io: r}
	}
	return c
}

// rawTCPConn is a plain TCP connection whose reads and writes go through
// its raw I/O, for a TLS layer above it: TLS records then move without
// the scheduler's syscall bookkeeping too.
type rawTCPConn struct {
	*net.TCPConn
	io *RawIO
}

func (c *rawTCPConn) Read(p []byte) (int, error)  { return c.io.Read(p) }
func (c *rawTCPConn) Write(p []byte) (int, error) { return c.io.Write(p) }

// IsTimeout reports whether err is a deadline expiry.
func IsTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
