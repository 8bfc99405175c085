package router

import (
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// parkerTick is how often the parker wakes to look for parked directions
// whose deadline (idle timeout, linger after the other side finished) has
// come.
const parkerTick = 250 * time.Millisecond

// parker holds quiet splice directions on one epoll instance, so a parked
// session costs a few hundred bytes and no goroutine. A direction is
// resumed on a new goroutine when its source becomes readable (or hangs
// up), when it is woken (kick, close), or when its deadline comes.
//
// The sockets stay registered with Go's own poller as well; an fd may be
// in several epoll sets, and ours is one-shot, so events stop at the
// first one until the direction parks again.
type parker struct {
	srv  *Server
	epfd int // -1: parking unavailable, directions keep their goroutines

	once   sync.Once
	mu     sync.Mutex
	parked map[uint64]*direction
	next   uint64
}

// Fields of direction owned by the parker, guarded by parker.mu.
type parkState struct {
	parkID   uint64    // non-zero while parked
	inEpoll  bool      // the source fd is in the epoll set
	deadline time.Time // wake by then even without an event
}

func newParker(srv *Server) *parker {
	p := &parker{srv: srv, epfd: -1, parked: make(map[uint64]*direction)}
	if fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC); err == nil {
		p.epfd = fd
	} else {
		srv.log.Warn("epoll unavailable; idle sessions keep their goroutines", "err", err)
	}
	return p
}

// park registers d to be resumed later and reports whether it did; the
// caller's goroutine must then leave d alone.
func (p *parker) park(d *direction) bool {
	if d.w == nil {
		return false
	}
	p.once.Do(p.start)
	p.mu.Lock()
	if p.epfd < 0 {
		p.mu.Unlock()
		return false
	}
	p.next++
	id := p.next
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(uint32(id)), Pad: int32(uint32(id >> 32))}
	var err error
	cerr := d.w.rc.Control(func(fd uintptr) {
		op := unix.EPOLL_CTL_ADD
		if d.ps.inEpoll {
			op = unix.EPOLL_CTL_MOD
		}
		err = unix.EpollCtl(p.epfd, op, int(fd), &ev)
		switch {
		case err == unix.EEXIST:
			err = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, int(fd), &ev)
		case err == unix.ENOENT:
			err = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
		}
	})
	if cerr != nil || err != nil {
		p.mu.Unlock()
		return false
	}
	d.ps.inEpoll = true
	d.ps.parkID = id
	d.ps.deadline = d.nextDeadline()
	p.parked[id] = d
	p.mu.Unlock()
	// A kick that came before we were parked found nothing to wake.
	if d.sp.sess.kickReason() != "" && p.unpark(d) {
		return false
	}
	return true
}

// unpark takes d out of the parker; it reports whether d was parked, in
// which case the caller now owns d and must run it.
func (p *parker) unpark(d *direction) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if d.ps.parkID == 0 {
		return false
	}
	delete(p.parked, d.ps.parkID)
	d.ps.parkID = 0
	return true
}

func (p *parker) start() { go runParker(p) }

// runParker waits for parked sources to become readable and for parked
// deadlines to pass, and resumes their directions.
func runParker(p *parker) {
	defer p.closeEpoll()
	events := make([]unix.EpollEvent, 256)
	var wake []*direction
	epfd := p.epfd // fixed until closeEpoll, which runs after this loop
	for {
		n, err := unix.EpollWait(epfd, events, int(parkerTick/time.Millisecond))
		if p.srv.ctx.Err() != nil {
			p.closeAll()
			return
		}
		if err != nil && err != unix.EINTR {
			p.srv.log.Error("epoll_wait failed", "err", err)
			time.Sleep(parkerTick)
		}
		now := time.Now()
		wake = wake[:0]
		p.mu.Lock()
		for i := 0; i < n; i++ {
			id := uint64(uint32(events[i].Fd)) | uint64(uint32(events[i].Pad))<<32
			if d, ok := p.parked[id]; ok {
				delete(p.parked, id)
				d.ps.parkID = 0
				wake = append(wake, d)
			}
		}
		for id, d := range p.parked {
			if !d.ps.deadline.After(now) {
				delete(p.parked, id)
				d.ps.parkID = 0
				wake = append(wake, d)
			}
		}
		p.mu.Unlock()
		for i, d := range wake {
			go runDirection(d)
			wake[i] = nil
		}
	}
}

// closeEpoll closes the epoll instance; later parks find none and keep
// their goroutines (the server is closing anyway).
func (p *parker) closeEpoll() {
	p.mu.Lock()
	fd := p.epfd
	p.epfd = -1
	p.mu.Unlock()
	unix.Close(fd)
}

// closeAll resumes everything still parked when the server closes; the
// directions find their connections closed and finish.
func (p *parker) closeAll() {
	p.mu.Lock()
	var all []*direction
	for id, d := range p.parked {
		delete(p.parked, id)
		d.ps.parkID = 0
		all = append(all, d)
	}
	p.mu.Unlock()
	for _, d := range all {
		go runDirection(d)
	}
}

// count returns how many splice directions are parked.
func (p *parker) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.parked)
}
