package pump

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// A Watcher follows the commands of a relayed session, so the relay can
// stop at a command boundary. The relay calls it from one goroutine at a
// time.
type Watcher interface {
	// Client is shown bytes from the client and returns those to
	// forward now. It may hold back the start of a command line until
	// its end is seen, and return it with later bytes; fwd may alias p
	// or the watcher's own buffer, and is written before the next call.
	// stop asks the relay to stop once every forwarded command is
	// answered: what the watcher still holds (the command it stopped on,
	// and anything after it) is the caller's to answer.
	Client(p []byte) (fwd []byte, stop bool)
	// Server is shown bytes from the backend before they are forwarded.
	Server(p []byte)
	// Answered reports whether every forwarded command has been
	// answered in full.
	Answered() bool
}

// ErrStopped is returned by Relay.Run when Kick stopped it.
var ErrStopped = errors.New("pump: relay stopped")

// Detached is what a relay that stopped at a command boundary hands back:
// both connections intact and in step, deadlines cleared. What the client
// sent from the stopping command on is the Watcher's.
type Detached struct {
	Client, Backend Side
}

// Relay copies a session both ways through buffers, showing every byte
// to a Watcher, until the Watcher stops it at a command boundary; then
// it hands both connections back instead of closing them. It serves
// sessions whose backend connection may outlive the client (the webmail
// cache); other sessions take the Splice, which never looks at bytes.
type Relay struct {
	client, backend Side
	w               Watcher
	idle            time.Duration

	mu       sync.Mutex // serializes the Watcher
	stopping atomic.Bool
	kicked   atomic.Bool
	in, out  atomic.Int64
}

// NewRelay returns a relay of client and backend shown to w. idle ends it
// when the client sends nothing for that long (zero: DefaultIdle).
func NewRelay(client, backend Side, w Watcher, idle time.Duration) *Relay {
	if idle <= 0 {
		idle = DefaultIdle
	}
	return &Relay{client: client, backend: backend, w: w, idle: idle}
}

// Bytes returns what the relay has moved so far: client to backend, and
// backend to client.
func (r *Relay) Bytes() (in, out int64) { return r.in.Load(), r.out.Load() }

// Kick stops the relay at once, wherever it is: Run returns ErrStopped,
// and the connections are the caller's to close.
func (r *Relay) Kick() {
	r.kicked.Store(true)
	past := time.Unix(1, 0)
	r.client.Conn.SetDeadline(past)
	r.backend.Conn.SetDeadline(past)
}

// Run relays until the Watcher stops it (Detached, nil), either side ends
// or fails, the client is idle for too long, or Kick. On an error both
// connections are in an unknown state and must be closed.
func (r *Relay) Run() (Detached, error) {
	errc := make(chan error, 1)
	go relayDown(r, errc)
	upErr := relayUp(r)
	if upErr != nil {
		// The client is gone or failed: stop the other direction too.
		r.backend.Conn.SetReadDeadline(time.Unix(1, 0))
		<-errc
		return Detached{}, r.classify(upErr)
	}
	if err := <-errc; err != nil {
		return Detached{}, r.classify(err)
	}
	if r.kicked.Load() {
		return Detached{}, ErrStopped
	}
	r.client.Conn.SetDeadline(time.Time{})
	r.backend.Conn.SetDeadline(time.Time{})
	return Detached{Client: r.client, Backend: r.backend}, nil
}

func (r *Relay) classify(err error) error {
	if r.kicked.Load() {
		return ErrStopped
	}
	return err
}

// relayUp copies client to backend until the Watcher stops it (nil) or
// the client fails. It is a named
// function so stack dumps say what a goroutine is.
func relayUp(r *Relay) error {
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	buf := *bp
	for {
		if err := r.client.Conn.SetReadDeadline(time.Now().Add(r.idle)); err != nil {
			return err
		}
		if r.kicked.Load() {
			return ErrStopped
		}
		n, err := r.client.Conn.Read(buf)
		if n > 0 {
			r.mu.Lock()
			fwd, stop := r.w.Client(buf[:n])
			r.mu.Unlock()
			if len(fwd) > 0 {
				if _, werr := r.backend.W.Write(fwd); werr != nil {
					return werr
				}
				r.in.Add(int64(len(fwd)))
			}
			if stop {
				r.stop()
				return nil
			}
		}
		if err != nil {
			if IsTimeout(err) && !r.kicked.Load() {
				err = errIdle
			}
			return err
		}
	}
}

// stop asks relayDown to finish once every command is answered; if they
// already are, its read is cut short.
func (r *Relay) stop() {
	r.stopping.Store(true)
	r.mu.Lock()
	answered := r.w.Answered()
	r.mu.Unlock()
	if answered {
		r.backend.Conn.SetReadDeadline(time.Unix(1, 0))
		return
	}
	// What is owed must come within stopWait, or the relay fails.
	r.backend.Conn.SetReadDeadline(time.Now().Add(stopWait))
}

// stopWait bounds how long a stopping relay waits for the answers still
// owed to the client.
const stopWait = 10 * time.Second

// relayDown copies backend to client until the relay is stopping and
// every command is answered, or the backend fails.
func relayDown(r *Relay, errc chan<- error) {
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	buf := *bp
	for {
		if r.stopping.Load() && r.answered() {
			errc <- nil
			return
		}
		n, err := r.backend.Conn.Read(buf)
		if n > 0 {
			r.mu.Lock()
			r.w.Server(buf[:n])
			r.mu.Unlock()
			if _, werr := r.client.W.Write(buf[:n]); werr != nil {
				errc <- werr
				return
			}
			r.out.Add(int64(n))
		}
		if err != nil {
			if IsTimeout(err) && r.stopping.Load() && !r.kicked.Load() && r.answered() {
				errc <- nil // cut short by stop: nothing was owed
				return
			}
			errc <- err
			return
		}
	}
}

func (r *Relay) answered() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.w.Answered()
}
