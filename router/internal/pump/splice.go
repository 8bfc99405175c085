package pump

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
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

// Side is one end of a splice.
type Side struct {
	Conn net.Conn     // plain TCP, or a *tls.Conn over it
	TCP  *net.TCPConn // the TCP connection under Conn, if any
	W    io.Writer    // writes to Conn: Conn itself, or its raw I/O (AttachIO)
}

// Options configure a splice. The zero value of each field is documented.
type Options struct {
	// Idle ends the splice when neither side has received anything for
	// this long. Zero means DefaultIdle.
	Idle time.Duration
	// Linger is how long the other direction may still run after one
	// side has finished. Zero means DefaultLinger.
	Linger time.Duration
	// Parker holds quiet directions. Nil means they keep their
	// goroutines.
	Parker *Parker
	// Done is called once, on the last direction's goroutine, when both
	// directions have finished. Required.
	Done func(*Splice)
	// Panic, if set, is told of a panic in a direction (which then
	// finishes, the splice kicked).
	Panic func(v any)
}

const (
	// DefaultIdle: RFC 9051 section 5.4, an inactivity timer must be at
	// least 30 minutes after login.
	DefaultIdle = 31 * time.Minute
	// DefaultLinger is how long a half-closed splice waits for the other
	// side's last bytes.
	DefaultLinger = 5 * time.Second
)

func (o *Options) idle() time.Duration {
	if o.Idle <= 0 {
		return DefaultIdle
	}
	return o.Idle
}

func (o *Options) linger() time.Duration {
	if o.Linger <= 0 {
		return DefaultLinger
	}
	return o.Linger
}

// ParkerOptions configure a Parker.
type ParkerOptions struct {
	Ctx context.Context // the parker stops when it ends; required
	Log *slog.Logger    // nil means slog.Default()
}

func (o *ParkerOptions) logger() *slog.Logger {
	if o.Log == nil {
		return slog.Default()
	}
	return o.Log
}

// Splice joins a logged-in client and its backend: bytes are copied both
// ways until either side is done, the session is kicked, or it is idle
// for Options.Idle. Busy directions run on goroutines; quiet ones park.
type Splice struct {
	opts     *Options
	up, down *direction
	stopping atomic.Bool  // a direction has finished
	left     atomic.Int32 // directions still running or parked
	kicked   atomic.Bool
	active   atomic.Int64 // unix nanos of the last bytes, where TCP_INFO is missing
}

// Result is what a finished splice moved and why it ended.
type Result struct {
	In, Out         int64 // bytes client to backend, backend to client
	UpErr, DownErr  error // each direction's end (nil: an ordinary EOF)
	Kicked, IdleEnd bool
}

// New returns a splice of client and backend, to be started with Run.
// Deadlines on both connections are cleared.
func New(client, backend Side, opts *Options) *Splice {
	client.Conn.SetDeadline(time.Time{})
	backend.Conn.SetDeadline(time.Time{})
	sp := &Splice{opts: opts}
	sp.active.Store(time.Now().UnixNano())
	sp.up = newDirection(sp, backend.Conn, backend.W, client.Conn, client.TCP, backend.TCP)
	sp.down = newDirection(sp, client.Conn, client.W, backend.Conn, backend.TCP, client.TCP)
	sp.up.other, sp.down.other = sp.down, sp.up
	sp.left.Store(2)
	return sp
}

// Run splices: client-to-backend on a new goroutine, backend-to-client on
// the caller's until it parks or ends. Options.Done is called when both
// are over.
func (sp *Splice) Run() {
	go runDirection(sp.up)
	runDirection(sp.down)
}

// Kick makes the splice stop at once: both directions see it whether
// running, blocked or parked. It is marked before the connections get
// past deadlines (reads and writes: a direction blocked writing to a
// client that has stopped reading must give up too), so a direction that
// wakes from its deadline and sets the next one sees the mark.
func (sp *Splice) Kick() {
	sp.kicked.Store(true)
	past := time.Unix(1, 0)
	sp.up.src.SetDeadline(past)
	sp.down.src.SetDeadline(past)
	sp.wakeAll()
}

// Wake makes both directions look at their connections now: after a
// close, a closed socket leaves the parker's epoll set without an event.
func (sp *Splice) Wake() { sp.wakeAll() }

// Result returns what the splice moved and why it ended; it is complete
// once Options.Done has been called.
func (sp *Splice) Result() Result {
	r := Result{In: sp.up.n, Out: sp.down.n, UpErr: sp.up.err, DownErr: sp.down.err, Kicked: sp.kicked.Load()}
	r.IdleEnd = sp.up.err == errIdle || sp.down.err == errIdle
	return r
}

// direction is one half of a splice. It runs on a goroutine while bytes
// flow and parks in the Server's parker when its source goes quiet.
type direction struct {
	sp       *Splice
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

// newDirection copies from src to dst, writing through out (dst itself, or
// the raw writer already made for it).
func newDirection(sp *Splice, dst net.Conn, out io.Writer, src net.Conn, srcTCP, dstTCP *net.TCPConn) *direction {
	d := &direction{sp: sp, dst: dst, out: out, src: src, srcTCP: srcTCP, dstTCP: dstTCP}
	now := time.Now()
	d.idleAt = now.Add(sp.opts.idle())
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
func (sp *Splice) wakeAll() {
	p := sp.opts.Parker
	for _, d := range []*direction{sp.up, sp.down} {
		if d != nil && p != nil && p.unpark(d) {
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
			if p := d.sp.opts.Parker; p != nil && p.park(d) {
				return
			}
			d.lastBurst = time.Now() // not parked: wait here again
			continue
		}
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			if IsTimeout(err) && timeouts < 100 {
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
		if f := d.sp.opts.Panic; f != nil {
			f(r)
		}
		if !d.done {
			d.sp.Kick()
			d.finish(errors.New("panic"))
		}
	}
}

// expired reports whether the direction must stop now: the session was
// kicked, the other side finished and the linger time is over, or neither
// side has received anything for the idle timeout (TCP_INFO tells, so
// the spliced path keeps no per-read bookkeeping).
func (d *direction) expired(now time.Time) (bool, error) {
	if d.sp.kicked.Load() {
		return true, errKicked
	}
	if at := d.lingerAt.Load(); at != 0 && now.UnixNano() >= at {
		return true, nil
	}
	if now.Before(d.idleAt) {
		return false, nil
	}
	idle := d.sp.opts.idle()
	quiet := d.quietFor(now)
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
	if d.sp.kicked.Load() {
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
			if !IsTimeout(err) {
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
		d.noteActivity()
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
			d.noteActivity()
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
			if !IsTimeout(err) {
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
			if !IsTimeout(rerr) {
				return total, rerr
			}
			break // crypto/tls holds nothing more
		}
	}
	return total, d.armQuiet()
}

// closeNotifyTimeout bounds writing a TLS close_notify on a half-close.
const closeNotifyTimeout = 2 * time.Second

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
	linger := time.Now().Add(sp.opts.linger())
	switch {
	case sp.kicked.Load():
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
	if p := sp.opts.Parker; p != nil && p.unpark(o) {
		go runDirection(o)
	}
	if sp.left.Add(-1) == 0 {
		sp.opts.Done(sp)
	}
}

// closeWrite half-closes c: a TCP FIN, or a TLS close_notify.
func closeWrite(c net.Conn) {
	switch c := c.(type) {
	case *net.TCPConn:
		c.CloseWrite()
	case *tls.Conn:
		c.SetWriteDeadline(time.Now().Add(closeNotifyTimeout))
		c.CloseWrite()
	}
}

// IsQuietClose reports whether err is an ordinary end of a session, not
// worth logging.
func IsQuietClose(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || IsTimeout(err) ||
		errors.Is(err, errIdle) || errors.Is(err, errKicked)
}
