package router

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"switchboard/route"
	"sync"
	"sync/atomic"
	"time"
)

// copyBufSize is the buffer size for directions that cannot splice(2)
// (TLS on either side).
const copyBufSize = 32 << 10

// activeWait is how long a direction waits for more bytes on its own
// goroutine before it parks in the parker and lets the goroutine go. Busy
// sessions never park; idle ones (an IDLE-ing phone) cost no goroutine.
const activeWait = 2 * time.Second

var copyBufPool = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// splicer joins a logged-in client and its backend.
type splicer struct {
	sess     *session
	up, down *direction
	stopping atomic.Bool  // a direction has finished
	left     atomic.Int32 // directions still running or parked
}

// direction is one half of a splice. It runs on a goroutine while bytes
// flow and parks in the Server's parker when its source goes quiet.
type direction struct {
	sp       *splicer
	other    *direction
	dst, src net.Conn
	// srcTCP and dstTCP are the TCP connections under src and dst, for
	// readiness, splice(2), half-close and TCP_INFO.
	srcTCP, dstTCP *net.TCPConn
	w              *rawSock  // on srcTCP
	out            io.Writer // writes to dst: raw writes when dst is plain TCP
	spliced        bool      // both ends plain TCP: splice(2) for bulk
	plainSrc       bool      // src is plain TCP with readiness to wait on: pumpPlain
	small          []byte    // a TLS source's first read of each burst (pumpTLS)
	lr             io.LimitedReader

	// pumpPlain's state, shared with its poller callback (bound once).
	pumpReadFn func(fd uintptr) bool
	bp         *[]byte // the burst just read, in a pooled buffer
	rn         int
	rerr       error
	lastBurst  time.Time // when the pump last moved bytes

	idleAt   time.Time    // when the session would be idle, re-armed from TCP_INFO
	lingerAt atomic.Int64 // unix nanos: stop by then (set when the other side finished)
	n        int64
	err      error
	done     bool

	ps parkState // owned by the Server's parker
}

// splice starts copying bytes both ways between the client and the
// backend; the last direction to finish ends the session. It first
// flushes what either side's reader still holds, so pipelined commands
// are not lost.
func (sess *session) splice(b *backendConn) {
	if n := sess.br.Buffered(); n > 0 {
		p, _ := sess.br.Peek(n)
		if _, err := b.out.Write(p); err != nil {
			sess.fail(route.OutcomeOK, err)
			sess.end()
			return
		}
		sess.in += int64(n)
	}
	if n := b.br.Buffered(); n > 0 {
		p, _ := b.br.Peek(n)
		if _, err := sess.w.Write(p); err != nil {
			sess.fail(route.OutcomeOK, err)
			sess.end()
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

	sp := &splicer{sess: sess}
	sp.up = newDirection(sp, b.conn, b.out, sess.conn, sess.tcp, b.tcp)
	sp.down = newDirection(sp, sess.conn, sess.w, b.conn, b.tcp, sess.tcp)
	sp.up.other, sp.down.other = sp.down, sp.up
	sp.left.Store(2)
	sess.mu.Lock()
	sess.sp = sp
	kicked := sess.kicked != ""
	sess.mu.Unlock()
	if kicked {
		sp.wakeAll() // a kick that raced with the login
	}
	go runDirection(sp.up)
	runDirection(sp.down)
}

// newDirection copies from src to dst, writing through out (dst itself, or
// the raw writer already made for it).
func newDirection(sp *splicer, dst net.Conn, out io.Writer, src net.Conn, srcTCP, dstTCP *net.TCPConn) *direction {
	d := &direction{sp: sp, dst: dst, out: out, src: src, srcTCP: srcTCP, dstTCP: dstTCP}
	now := time.Now()
	d.idleAt = now.Add(sp.sess.srv.opts.idleTimeout())
	d.lastBurst = now
	if srcTCP != nil {
		if rc, err := srcTCP.SyscallConn(); err == nil {
			d.w = newRawSock(rc)
		}
	}
	_, srcPlain := src.(*net.TCPConn)
	_, dstPlain := dst.(*net.TCPConn)
	_, srcTLS := src.(*tls.Conn)
	d.plainSrc = d.w != nil && !srcTLS
	if srcTLS {
		d.small = make([]byte, tlsFirstRead)
	}
	d.spliced = srcPlain && dstPlain && d.w != nil
	d.pumpReadFn = d.pumpRead
	d.lr.R = src
	return d
}

// wakeAll makes both directions look at their state now (a kick, a
// close): parked ones are resumed on a goroutine.
func (sp *splicer) wakeAll() {
	p := sp.sess.srv.parker
	for _, d := range []*direction{sp.up, sp.down} {
		if d != nil && p.unpark(d) {
			go runDirection(d)
		}
	}
}

// runDirection moves bytes until the source goes quiet for activeWait
// (then it parks and returns, to be resumed by the parker) or ends. It is
// a named function so stack dumps say what a goroutine is.
func runDirection(d *direction) {
	defer d.recoverPanic()
	// Every start or resume begins a new quiet period: the direction was
	// woken because something happened, and its source must be read.
	d.lastBurst = time.Now()
	timeouts := 0
	for {
		if stop, err := d.expired(time.Now()); stop {
			d.finish(err)
			return
		}
		n, err := d.pump()
		d.n += n
		if err == errQuiet {
			// Nothing came until the wait's deadline, which may have
			// been the session's (an end, a kick): park only if not.
			if stop, err := d.expired(time.Now()); stop {
				d.finish(err)
				return
			}
			if d.sp.sess.srv.parker.park(d) {
				return
			}
			d.lastBurst = time.Now() // not parked: wait here again
			continue
		}
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			if isTimeout(err) && timeouts < 100 {
				timeouts++
				continue // a kick or a deadline: expired decides
			}
			d.finish(err)
			return
		}
		// Bytes moved; the pump waits for more itself (pumpBlocking's
		// next read blocks under the next deadline).
		timeouts = 0
	}
}

func (d *direction) recoverPanic() {
	if r := recover(); r != nil {
		srv := d.sp.sess.srv
		srv.stats.Panics.Add(1)
		srv.log.Error("splice panic", "cid", d.sp.sess.id, "panic", r)
		if !d.done {
			d.sp.sess.kick("Internal error.")
			d.finish(errors.New("panic"))
		}
	}
}

// expired reports whether the direction must stop now: the session was
// kicked, the other side finished and the linger time is over, or neither
// side has received anything for the idle timeout (TCP_INFO tells, so
// the spliced path keeps no per-read bookkeeping).
func (d *direction) expired(now time.Time) (bool, error) {
	sess := d.sp.sess
	if sess.kickReason() != "" {
		return true, errKicked
	}
	if at := d.lingerAt.Load(); at != 0 && now.UnixNano() >= at {
		return true, nil
	}
	if now.Before(d.idleAt) {
		return false, nil
	}
	idle := sess.srv.opts.idleTimeout()
	quiet := min(sinceLastRecv(d.srcTCP), sinceLastRecv(d.dstTCP))
	if quiet >= idle {
		return true, errIdle
	}
	d.idleAt = now.Add(idle - quiet)
	return false, nil
}

// nextDeadline is when expired must be asked again.
func (d *direction) nextDeadline() time.Time {
	t := d.idleAt
	if at := d.lingerAt.Load(); at != 0 && at < t.UnixNano() {
		t = time.Unix(0, at)
	}
	return t
}

// pump moves what the source has ready. It returns nil when the source has
// nothing more for now, errQuiet when it stayed quiet until the wait's
// deadline or the session was kicked (runDirection asks expired which),
// io.EOF at its end, or the error that stopped it.
func (d *direction) pump() (int64, error) {
	if d.plainSrc {
		return d.pumpPlain()
	}
	if tc, ok := d.src.(*tls.Conn); ok {
		return d.pumpTLS(tc)
	}
	if err := d.src.SetReadDeadline(d.nextDeadline()); err != nil {
		return 0, err
	}
	return d.pumpBlocking()
}

// armQuiet sets the source's read deadline for a stretch of waiting:
// activeWait after the last burst (so a session parks activeWait after its
// last bytes however its bursts fell), or the next deadline if that comes
// first. A kick sets a past deadline after marking the session, so one
// that came since expired looked is seen here, where this deadline may
// just have replaced the kick's.
func (d *direction) armQuiet() error {
	deadline := d.lastBurst.Add(activeWait)
	if next := d.nextDeadline(); next.Before(deadline) {
		deadline = next
	}
	if err := d.src.SetReadDeadline(deadline); err != nil {
		return err
	}
	if d.sp.sess.kickReason() != "" {
		return errQuiet // runDirection's expired tells the kick
	}
	return nil
}

// errQuiet: the source had nothing to read until the wait's deadline.
var errQuiet = errors.New("source quiet")

// spliceMin is the burst size from which splice(2) beats a copy through a
// buffer: below it, the pipe's extra syscalls cost more than copying a
// few kilobytes.
const spliceMin = 16 << 10

// pumpPlain moves bytes from a plain TCP source as they come, for up to
// activeWait of quiet (or the next deadline), with the deadline set once
// for the whole stretch rather than per burst. Each read happens inside
// the poller's read operation (pumpRead): the read that finds the socket
// empty goes straight to waiting, with no separate call to ask whether
// it is. Each burst is read into a pooled buffer, taken only while the
// burst is moved, and written on at once: most IMAP traffic is a few
// small lines, and one read and one write is the fewest syscalls that
// move them. When a read fills the buffer (a large FETCH or APPEND) and
// the destination is plain TCP too, the rest of the burst is spliced,
// zero-copy, while spliceMin or more is queued.
func (d *direction) pumpPlain() (int64, error) {
	if err := d.armQuiet(); err != nil {
		return 0, err
	}
	var total int64
	for {
		d.rn, d.rerr = 0, nil
		if err := d.w.rc.Read(d.pumpReadFn); err != nil {
			if !isTimeout(err) {
				return total, err
			}
			if total == 0 {
				return 0, errQuiet
			}
			return total, nil // bytes flowed until the deadline: look again
		}
		if d.rerr != nil {
			return total, d.rerr
		}
		if d.rn == 0 {
			return total, io.EOF
		}
		buf := (*d.bp)[:d.rn]
		full := d.spliced && d.rn == spliceMin
		_, err := d.out.Write(buf)
		copyBufPool.Put(d.bp)
		d.bp = nil
		if err != nil {
			return total, err
		}
		total += int64(len(buf))
		d.lastBurst = time.Now()
		if full {
			m, err := d.spliceQueued()
			total += m
			if err != nil {
				return total, err
			}
			if m > 0 {
				// spliceQueued waited under the next deadline: the
				// quiet stretch starts again from now.
				d.lastBurst = time.Now()
				if err := d.armQuiet(); err != nil {
					return total, err
				}
			}
		}
	}
}

// pumpRead is pumpPlain's poller callback: one non-blocking read into a
// pooled buffer, kept in d.bp when it got bytes. It returns false (wait
// for the socket) when there was nothing to read.
func (d *direction) pumpRead(fd uintptr) bool {
	bp := copyBufPool.Get().(*[]byte)
	buf := *bp
	if d.spliced {
		buf = buf[:spliceMin]
	}
	n, err := readNow(fd, buf)
	switch {
	case err == errWouldBlock:
		copyBufPool.Put(bp)
		return false
	case err != nil || n == 0:
		copyBufPool.Put(bp)
		d.rerr = err
		return true
	}
	d.bp, d.rn = bp, n
	return true
}

// spliceQueued splices from the source while it holds spliceMin bytes or
// more.
func (d *direction) spliceQueued() (int64, error) {
	var total int64
	for {
		q := d.w.queued()
		if q < spliceMin {
			return total, nil
		}
		if total == 0 {
			// A splice that finds the socket empty waits under the read
			// deadline, which may have passed.
			if err := d.src.SetReadDeadline(d.nextDeadline()); err != nil {
				return total, err
			}
		}
		d.lr.N = int64(q)
		m, err := d.dst.(*net.TCPConn).ReadFrom(&d.lr)
		total += m
		if err != nil {
			return total, err
		}
	}
}

// pumpBlocking serves a source with no readiness to ask: one blocking
// read, bounded by the next deadline.
func (d *direction) pumpBlocking() (int64, error) {
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	n, err := d.src.Read(*bp)
	if n > 0 {
		if _, werr := d.out.Write((*bp)[:n]); werr != nil {
			return int64(n), werr
		}
	}
	return int64(n), err
}

// tlsFirstRead is the size of a TLS source's first read of each burst:
// most client commands fit whole.
const tlsFirstRead = 128

// pumpTLS moves what a TLS source sends as it comes, as pumpPlain does:
// for up to activeWait of quiet (or the next deadline), under one deadline
// set for the whole stretch. The first read of each burst, which is also
// the wait for it, lands in the direction's small buffer, so no pooled
// buffer is held while the source is quiet; a burst that fits is written
// on from there. When the deadline passes during a read, crypto/tls was
// waiting for bytes from the socket: it holds no whole record back, and
// takes the timeout as temporary, keeping any partial record for the next
// read. Parking on the socket then loses nothing.
func (d *direction) pumpTLS(tc *tls.Conn) (int64, error) {
	if err := d.armQuiet(); err != nil {
		return 0, err
	}
	var total int64
	for {
		n, err := tc.Read(d.small)
		if n > 0 {
			d.lastBurst = time.Now()
			var m int64
			var werr error
			if n == len(d.small) {
				m, werr = d.drainTLS(tc, n)
			} else {
				_, werr = d.out.Write(d.small[:n])
				m = int64(n)
			}
			total += m
			if werr != nil {
				return total, werr
			}
		}
		if err != nil {
			if !isTimeout(err) {
				return total, err
			}
			if total == 0 {
				return 0, errQuiet
			}
			return total, nil // bytes flowed until the deadline: look again
		}
	}
}

// drainTLS writes the n bytes in the small buffer and then what crypto/tls
// already holds after them, through a pooled buffer. It reads under a past
// deadline, so it never waits for the socket while holding the buffer,
// then sets the stretch's deadline again (armQuiet's errQuiet when the
// session was kicked). Errors from the reads are returned after what came before them
// is written.
func (d *direction) drainTLS(tc *tls.Conn, n int) (int64, error) {
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	buf := *bp
	copy(buf, d.small[:n])
	if err := tc.SetReadDeadline(time.Unix(1, 0)); err != nil {
		return 0, err
	}
	var total int64
	for {
		m, rerr := tc.Read(buf[n:])
		n += m
		if n == len(buf) || rerr != nil {
			if _, err := d.out.Write(buf[:n]); err != nil {
				return total, err
			}
			total += int64(n)
			n = 0
		}
		if rerr != nil {
			if !isTimeout(rerr) {
				return total, rerr
			}
			break // crypto/tls holds nothing more
		}
	}
	return total, d.armQuiet()
}

var (
	errIdle   = errors.New("idle timeout")
	errKicked = errors.New("kicked")
)

// finish ends this direction: half-close the destination, give the other
// direction lingerTimeout (none after a kick), and end the session when
// both are done.
func (d *direction) finish(err error) {
	d.done = true
	d.err = err
	sp := d.sp
	// When the client ends first, its end is passed on to the backend as
	// a half-close, and the backend has lingerTimeout to answer what it
	// still has (a client that half-closes after its last command still
	// gets the answer). When the backend ends first, the session is over:
	// the client side stops at once, and the session's close sends the
	// client its FIN after everything the backend sent.
	first := !sp.stopping.Swap(true)
	linger := time.Now().Add(lingerTimeout)
	switch {
	case sp.sess.kickReason() != "":
		linger = time.Unix(1, 0)
	case err == nil && first && d == sp.down:
		linger = time.Unix(1, 0)
	case err == nil && first:
		closeWrite(d.dst)
	}
	o := d.other
	o.lingerAt.CompareAndSwap(0, linger.UnixNano())
	d.dst.SetReadDeadline(linger)  // the other direction reads from dst
	d.src.SetWriteDeadline(linger) // and writes to src, which may not be read
	if sp.sess.srv.parker.unpark(o) {
		go runDirection(o)
	}
	if sp.left.Add(-1) == 0 {
		sp.finished()
	}
}

// finished runs once both directions are done.
func (sp *splicer) finished() {
	sess := sp.sess
	sess.in += sp.up.n
	sess.out += sp.down.n
	sess.srv.stats.BytesIn.Add(uint64(sp.up.n))
	sess.srv.stats.BytesOut.Add(uint64(sp.down.n))
	sess.outcome = route.OutcomeOK
	if reason := sess.kickReason(); reason != "" {
		sess.kickedOutcome(reason)
		if sess.l.cfg.Protocol == "imap" {
			if sess.conn.SetWriteDeadline(time.Now().Add(byeWriteTimeout)) == nil {
				sess.conn.Write([]byte("* BYE [UNAVAILABLE] " + reason + "\r\n"))
			}
		}
	} else {
		for _, err := range []error{sp.up.err, sp.down.err} {
			if err != nil && !isQuietClose(err) {
				sess.errMsg = err.Error()
				break
			}
		}
		if sp.up.err == errIdle || sp.down.err == errIdle {
			sess.errMsg = errIdle.Error()
		}
	}
	sess.end()
}

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
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isTimeout(err) ||
		errors.Is(err, errIdle) || errors.Is(err, errKicked)
}
