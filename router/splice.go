package router

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// copyBufSize is the buffer size for directions that cannot splice(2)
// (TLS on either side): one TLS record's worth of plaintext, twice.
const copyBufSize = 32 << 10

var copyBufPool = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// direction is one half of a splice.
type direction struct {
	sess     *session
	dst, src net.Conn
	// srcTCP and dstTCP are the TCP connections under src and dst, for
	// half-close, splice(2) and TCP_INFO.
	srcTCP, dstTCP *net.TCPConn
	n              int64
	err            error
}

// splice copies bytes both ways between the client and the backend until
// both directions are done, a kick or a shutdown. It flushes what either
// side's reader still holds first, so pipelined commands are not lost.
func (sess *session) splice(b *backendConn) {
	if n := sess.br.Buffered(); n > 0 {
		p, _ := sess.br.Peek(n)
		if _, err := b.conn.Write(p); err != nil {
			sess.fail(OutcomeOK, err)
			return
		}
		sess.in += int64(n)
	}
	if n := b.br.Buffered(); n > 0 {
		p, _ := b.br.Peek(n)
		if _, err := sess.conn.Write(p); err != nil {
			sess.fail(OutcomeOK, err)
			return
		}
		sess.out += int64(n)
	}
	// The login-phase buffers are not needed any more.
	sess.br.Reset(nil)
	readerPool.Put(sess.br)
	sess.br = nil
	b.br.Reset(nil)
	readerPool.Put(b.br)
	b.br = nil
	sess.conn.SetDeadline(time.Time{})
	b.conn.SetDeadline(time.Time{})

	var stopping atomic.Bool
	up := &direction{sess: sess, dst: b.conn, src: sess.conn, srcTCP: sess.tcp, dstTCP: b.tcp}
	down := &direction{sess: sess, dst: sess.conn, src: b.conn, srcTCP: b.tcp, dstTCP: sess.tcp}
	donec := make(chan struct{})
	go runUpstream(up, &stopping, donec)
	down.run(&stopping)
	<-donec

	sess.in += up.n
	sess.out += down.n
	sess.srv.stats.BytesIn.Add(uint64(up.n))
	sess.srv.stats.BytesOut.Add(uint64(down.n))
	sess.outcome = OutcomeOK
	if reason := sess.kickReason(); reason != "" {
		sess.outcome = OutcomeKicked
		if sess.l.cfg.Protocol == "imap" {
			if sess.conn.SetWriteDeadline(time.Now().Add(byeWriteTimeout)) == nil {
				sess.conn.Write([]byte("* BYE [UNAVAILABLE] " + reason + "\r\n"))
			}
		}
		return
	}
	for _, err := range []error{up.err, down.err} {
		if err != nil && !isQuietClose(err) {
			sess.errMsg = err.Error()
			break
		}
	}
}

// runUpstream copies client to backend; it is a named function so stack
// dumps say which direction a goroutine is.
func runUpstream(d *direction, stopping *atomic.Bool, donec chan<- struct{}) {
	defer close(donec)
	d.run(stopping)
}

// run copies until the source is done, then half-closes the destination
// and gives the other direction lingerTimeout to finish.
func (d *direction) run(stopping *atomic.Bool) {
	d.n, d.err = d.copy(stopping)
	stopping.Store(true)
	if d.err == nil {
		closeWrite(d.dst)
	}
	// The other direction reads from dst; let it drain, then stop (at
	// once after a kick).
	stop := time.Now().Add(lingerTimeout)
	if d.sess.kickReason() != "" {
		stop = time.Unix(1, 0)
	}
	d.dst.SetReadDeadline(stop)
}

// copy moves bytes from src to dst, with zero-copy splice(2) when both
// are plain TCP. It returns nil at EOF. An idle read deadline is re-armed
// as long as either side of the session has received data within the
// idle timeout (checked through TCP_INFO, so the spliced path needs no
// per-read bookkeeping).
func (d *direction) copy(stopping *atomic.Bool) (int64, error) {
	idle := d.sess.srv.opts.idleTimeout()
	deadline := time.Now().Add(idle)
	var total int64
	for {
		if err := d.src.SetReadDeadline(deadline); err != nil {
			return total, err
		}
		n, err := d.copyOnce()
		total += n
		if err == errDrained {
			continue // the deadline below is still ahead
		}
		if err == nil || !isTimeout(err) {
			return total, err
		}
		if stopping.Load() || d.sess.kickReason() != "" {
			return total, err
		}
		quiet := min(sinceLastRecv(d.srcTCP), sinceLastRecv(d.dstTCP))
		if quiet >= idle {
			return total, errIdle
		}
		deadline = time.Now().Add(idle - quiet)
	}
}

var (
	errIdle = errors.New("idle timeout")
	// errDrained: a TLS source's buffered records were drained under an
	// expired deadline, which must be set back before waiting again.
	errDrained = errors.New("drained")
)

// copyOnce copies until EOF (nil) or an error such as a deadline. Between
// bursts it waits for the source to become readable without holding a
// buffer or a pipe, so an idle session costs two parked goroutines and
// nothing else.
func (d *direction) copyOnce() (int64, error) {
	if dst, ok := d.dst.(*net.TCPConn); ok {
		if src, ok := d.src.(*net.TCPConn); ok {
			return spliceLoop(dst, src)
		}
	}
	return d.bufferLoop()
}

// bufferLoop copies through a pooled buffer, taken only while bytes are
// flowing. It serves every direction with TLS on either side.
func (d *direction) bufferLoop() (int64, error) {
	var w *sockWaiter
	if d.srcTCP != nil {
		if rc, err := d.srcTCP.SyscallConn(); err == nil {
			w = newSockWaiter(rc)
		}
	}
	var total int64
	for {
		if w != nil {
			if err := w.wait(); err != nil {
				return total, err
			}
		}
		n, err := d.burst()
		total += n
		if err != nil {
			if err == io.EOF {
				return total, nil
			}
			return total, err
		}
	}
}

// burst moves what the source has ready. A TLS source may hold whole
// records it has already read from the socket; they are drained with an
// expired deadline, which crypto/tls treats as temporary.
func (d *direction) burst() (int64, error) {
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	buf := *bp
	n, err := d.src.Read(buf)
	if n > 0 {
		if _, werr := d.dst.Write(buf[:n]); werr != nil {
			return int64(n), werr
		}
	}
	if err != nil {
		return int64(n), err
	}
	total := int64(n)
	tc, ok := d.src.(*tls.Conn)
	if !ok {
		return total, nil
	}
	// Deadlines are restored by the caller's loop before the next wait.
	if err := tc.SetReadDeadline(time.Unix(1, 0)); err != nil {
		return total, err
	}
	for {
		n, err := tc.Read(buf)
		if n > 0 {
			if _, werr := d.dst.Write(buf[:n]); werr != nil {
				return total + int64(n), werr
			}
			total += int64(n)
		}
		if err != nil {
			if isTimeout(err) {
				return total, errDrained
			}
			return total, err
		}
	}
}

type readerOnly struct{ io.Reader }
type writerOnly struct{ io.Writer }

// closeWrite half-closes c: a TCP FIN, or a TLS close_notify.
func closeWrite(c net.Conn) {
	switch c := c.(type) {
	case *net.TCPConn:
		c.CloseWrite()
	case *tls.Conn:
		c.SetWriteDeadline(time.Now().Add(byeWriteTimeout))
		c.CloseWrite()
	}
}

// isQuietClose reports whether err is an ordinary end of a session, not
// worth logging.
func isQuietClose(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isTimeout(err) || errors.Is(err, errIdle)
}
