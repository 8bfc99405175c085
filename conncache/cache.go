// Package conncache keeps logged-in backend connections for reuse by a
// webmail, which logs in anew on every page request: a cache in the
// spirit of up-imapproxy, keyed so that it is safe across users.
//
// A connection is parked under a Key made of the account (as route.Fold
// folds it), the backend address and an HMAC-SHA256 of the password under
// a key drawn at random when the Cache is made. The password itself is
// never stored, MACs are compared in constant time, and a connection is
// only handed out under the very key it was parked with: a wrong
// password, another account or another backend never match.
//
// Typical use by a router:
//
//	k := cache.Key(user, backend, password)
//	if conn, caps, loggedIn, ok := cache.Take(k); ok {
//		// answer the client's login with caps; relay to conn
//	}
//	…
//	// at the client's LOGOUT, with the connection reset and idle:
//	if !cache.Put(k, conn, caps, loggedIn) {
//		conn.Close()
//	}
//
// The cache bounds what it holds (Options: per account, in total, idle
// time, age since login), evicts the least recently parked first, and
// expires connections in a janitor goroutine. Every connection it lets go
// of is closed outside its lock.
package conncache

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"switchboard/route"
)

// Janitor period bounds: it runs every tenth of IdleTimeout, within these.
const (
	minJanitorPeriod = 1 * time.Second
	maxJanitorPeriod = 30 * time.Second
)

// maxFree bounds the entries kept for reuse after their connection left.
const maxFree = 64

// Conn is a logged-in backend connection, opaque to the cache. The cache
// closes it when it evicts it; a connection handed out by Take is the
// caller's to close.
type Conn interface {
	Close() error
}

// Key says which parked connections a login may reuse. It is made by
// Cache.Key and is only meaningful to the Cache that made it.
type Key struct {
	account string
	backend string
	mac     [sha256.Size]byte
}

// Account is the folded account name.
func (k Key) Account() string { return k.account }

// Backend is the backend address.
func (k Key) Backend() string { return k.backend }

// String returns the account and the backend, never the MAC.
func (k Key) String() string { return k.account + " on " + k.backend }

// LogValue logs the account and the backend, never the MAC.
func (k Key) LogValue() slog.Value {
	return slog.GroupValue(slog.String("user", k.account), slog.String("backend", k.backend))
}

// entry is one parked connection.
type entry struct {
	key      Key
	conn     Conn
	caps     []byte
	loggedIn time.Time // when conn logged in to the backend: MaxAge
	parked   time.Time // when it was parked: IdleTimeout

	newer, older   *entry // all entries, by time parked
	unewer, uolder *entry // the account's entries, by time parked
}

// userList is one account's entries.
type userList struct {
	newest, oldest *entry
	n              int
}

// macState is a keyed HMAC and a scratch buffer, pooled.
type macState struct {
	h   hash.Hash
	buf []byte
	sum [sha256.Size]byte
}

// Cache holds parked connections. Its methods are safe for concurrent use.
type Cache struct {
	opts     Options
	perUser  int
	total    int
	idle     time.Duration
	maxAge   time.Duration
	macs     sync.Pool // *macState
	m        *metrics
	parkedN  atomic.Int64
	donec    chan struct{} // closed by Close: stops the janitor
	janitorc chan struct{} // closed when the janitor returned

	mu             sync.Mutex
	newest, oldest *entry // all entries
	users          map[string]userList
	n              int
	closed         bool
	free           *entry // reusable entries, chained by older
	nfree          int
}

// New returns a running Cache; Close stops it. opts may be nil; it is
// copied. New fails if opts.Check reports a problem.
func New(opts *Options) (*Cache, error) {
	c := &Cache{
		users:    make(map[string]userList),
		donec:    make(chan struct{}),
		janitorc: make(chan struct{}),
	}
	if opts != nil {
		c.opts = *opts
	}
	if errs := c.opts.Check(); len(errs) > 0 {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOptions, errors.Join(errs...))
	}
	c.perUser, c.total = c.opts.perUser(), c.opts.total()
	c.idle, c.maxAge = c.opts.idleTimeout(), c.opts.maxAge()
	var secret [sha256.Size]byte
	if _, err := rand.Read(secret[:]); err != nil {
		return nil, fmt.Errorf("conncache: draw the HMAC key: %w", err)
	}
	c.macs.New = func() any { return &macState{h: hmac.New(sha256.New, secret[:])} }
	c.m = newMetrics(c.opts.Registerer, func() float64 { return float64(c.parkedN.Load()) })
	go janitor(c, janitorPeriod(c.idle))
	return c, nil
}

func janitorPeriod(idle time.Duration) time.Duration {
	return min(max(idle/10, minJanitorPeriod), maxJanitorPeriod)
}

// janitor expires parked connections every period until c is closed.
func janitor(c *Cache, period time.Duration) {
	defer close(c.janitorc)
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-c.donec:
			return
		case <-t.C:
			c.Expire()
		}
	}
}

// Key returns the key for account (folded with route.Fold) on backend
// with password. The password is only fed to the HMAC; neither it nor a
// plain hash of it is kept.
func (c *Cache) Key(account, backend, password string) Key {
	k := Key{account: route.Fold(account), backend: backend}
	s := c.macs.Get().(*macState)
	// Length-prefixed fields: no two (account, backend, password) triples
	// feed the HMAC the same bytes.
	b := s.buf[:0]
	for _, f := range [...]string{k.account, k.backend, password} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	s.h.Reset()
	s.h.Write(b)
	// Sum into the pooled state, not into k, which would escape.
	copy(k.mac[:], s.h.Sum(s.sum[:0]))
	clear(b) // the password was in it
	s.buf = b[:0]
	c.macs.Put(s)
	return k
}

// same reports whether a and b are the same key, comparing MACs in
// constant time.
func same(a, b *Key) bool {
	return a.account == b.account && a.backend == b.backend &&
		subtle.ConstantTimeCompare(a.mac[:], b.mac[:]) == 1
}

// Put parks conn under k, with caps, the CAPABILITY list the backend
// announced after conn's first login (kept as given: the caller must not
// modify it), and loggedIn, when that login was (zero means now). conn
// must be idle: logged in, no command outstanding, no mailbox selected.
//
// Put may evict other connections to stay within bounds and closes them.
// It returns false, and counts a refusal, when the cache is closed, conn
// is past MaxAge already, or k is the zero Key (not made by Key); the
// caller then still owns conn and closes it.
func (c *Cache) Put(k Key, conn Conn, caps []byte, loggedIn time.Time) bool {
	if k.mac == ([sha256.Size]byte{}) {
		c.m.refused(refusedOther)
		return false
	}
	now := c.opts.now()
	if loggedIn.IsZero() {
		loggedIn = now
	}
	if now.Sub(loggedIn) >= c.maxAge {
		c.m.refused(refusedAge)
		return false
	}
	var evicted [2]*entry
	var conns [2]Conn
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		c.m.refused(refusedClosed)
		return false
	}
	if u := c.users[k.account]; u.n >= c.perUser {
		evicted[0] = u.oldest
		conns[0] = c.removeLocked(u.oldest)
	}
	if c.n >= c.total {
		evicted[1] = c.oldest
		conns[1] = c.removeLocked(c.oldest)
	}
	e := c.newEntryLocked()
	e.key, e.conn, e.caps, e.loggedIn, e.parked = k, conn, caps, loggedIn, now
	c.insertLocked(e)
	c.mu.Unlock()
	c.m.parks.Inc()
	if evicted[0] != nil {
		c.evict(conns[0], evictPerUser)
	}
	if evicted[1] != nil {
		c.evict(conns[1], evictLRU)
	}
	return true
}

// Take removes and returns the most recently parked connection under k
// that is unexpired and, when Options.Alive is set, alive, with the caps
// and login time it was parked with. Expired and dead connections it
// comes across are closed. ok is false on a miss.
func (c *Cache) Take(k Key) (conn Conn, caps []byte, loggedIn time.Time, ok bool) {
	for {
		conn, caps, loggedIn, ok = c.take(&k)
		if !ok {
			c.m.misses.Inc()
			return nil, nil, time.Time{}, false
		}
		if c.opts.Alive == nil || c.opts.Alive(conn) {
			c.m.hits.Inc()
			return conn, caps, loggedIn, true
		}
		c.evict(conn, evictDead)
	}
}

// take removes the newest unexpired entry under k and returns what it
// held, closing the expired entries under k that are newer.
func (c *Cache) take(k *Key) (conn Conn, caps []byte, loggedIn time.Time, ok bool) {
	type stale struct {
		conn   Conn
		reason evictReason
	}
	var buf [4]stale
	expired := buf[:0]
	now := c.opts.now()
	c.mu.Lock()
	e := c.users[k.account].newest
	for e != nil {
		next := e.uolder
		if same(&e.key, k) {
			reason, dead := c.expiredLocked(e, now)
			if !dead {
				conn, caps, loggedIn, ok = e.conn, e.caps, e.loggedIn, true
				c.removeLocked(e)
				break
			}
			expired = append(expired, stale{c.removeLocked(e), reason})
		}
		e = next
	}
	c.mu.Unlock()
	for _, s := range expired {
		c.evict(s.conn, s.reason)
	}
	return conn, caps, loggedIn, ok
}

// expiredLocked says whether e is past IdleTimeout or MaxAge at now.
func (c *Cache) expiredLocked(e *entry, now time.Time) (evictReason, bool) {
	switch {
	case now.Sub(e.loggedIn) >= c.maxAge:
		return evictAge, true
	case now.Sub(e.parked) >= c.idle:
		return evictIdle, true
	}
	return 0, false
}

// RefusePark counts a connection the caller closed instead of parking,
// under reason: a short lower-case label such as "enable" or "idle".
// Other strings, and reasons past the 32nd distinct one, count as "other",
// so the metric's labels stay bounded whatever the caller passes.
func (c *Cache) RefusePark(reason string) { c.m.refused(reason) }

// Expire closes the connections past IdleTimeout or MaxAge and returns
// how many. The janitor calls it periodically; tests call it directly.
func (c *Cache) Expire() int {
	now := c.opts.now()
	return c.drop(func(e *entry) (evictReason, bool) { return c.expiredLocked(e, now) })
}

// DropUser closes the connections parked for account (folded with
// route.Fold) and returns how many: after a kick, a hold, an invalidation,
// a route change or a change of the user's directory entry.
func (c *Cache) DropUser(account string) int {
	account = route.Fold(account)
	var gone []Conn
	c.mu.Lock()
	for e := c.users[account].newest; e != nil; {
		next := e.uolder
		gone = append(gone, c.removeLocked(e))
		e = next
	}
	c.mu.Unlock()
	for _, conn := range gone {
		c.evict(conn, evictDropped)
	}
	return len(gone)
}

// DropBackend closes the connections parked to the backend at addr and
// returns how many: when the backend is marked down or leaves the map.
func (c *Cache) DropBackend(addr string) int {
	return c.drop(func(e *entry) (evictReason, bool) { return evictDropped, e.key.backend == addr })
}

// drop removes the entries match selects and closes their connections,
// each counted under the reason match gave.
func (c *Cache) drop(match func(*entry) (evictReason, bool)) int {
	type gone struct {
		conn   Conn
		reason evictReason
	}
	var all []gone
	c.mu.Lock()
	for e := c.newest; e != nil; {
		next := e.older
		if reason, ok := match(e); ok {
			all = append(all, gone{c.removeLocked(e), reason})
		}
		e = next
	}
	c.mu.Unlock()
	for _, g := range all {
		c.evict(g.conn, g.reason)
	}
	return len(all)
}

// Len returns the number of parked connections.
func (c *Cache) Len() int { return int(c.parkedN.Load()) }

// Close closes every parked connection, refuses later Puts and stops the
// janitor. It returns nil; it is an error for nothing, so that a drain can
// call it as an io.Closer.
func (c *Cache) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		<-c.janitorc
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	close(c.donec)
	c.drop(func(*entry) (evictReason, bool) { return evictClosed, true })
	<-c.janitorc
	return nil
}

// evict closes conn, which the cache has let go of, and counts why.
func (c *Cache) evict(conn Conn, reason evictReason) {
	c.m.evictions[reason].Inc()
	conn.Close()
}

func (c *Cache) newEntryLocked() *entry {
	if e := c.free; e != nil {
		c.free = e.older
		c.nfree--
		e.older = nil
		return e
	}
	return new(entry)
}

// insertLocked adds e as the newest entry, of the cache and its account.
func (c *Cache) insertLocked(e *entry) {
	e.older = c.newest
	if c.newest != nil {
		c.newest.newer = e
	} else {
		c.oldest = e
	}
	c.newest = e
	u := c.users[e.key.account]
	e.uolder = u.newest
	if u.newest != nil {
		u.newest.unewer = e
	} else {
		u.oldest = e
	}
	u.newest = e
	u.n++
	c.users[e.key.account] = u
	c.n++
	c.parkedN.Store(int64(c.n))
}

// removeLocked unlinks e, recycles it and returns its connection.
func (c *Cache) removeLocked(e *entry) Conn {
	if e.newer != nil {
		e.newer.older = e.older
	} else {
		c.newest = e.older
	}
	if e.older != nil {
		e.older.newer = e.newer
	} else {
		c.oldest = e.newer
	}
	u := c.users[e.key.account]
	if e.unewer != nil {
		e.unewer.uolder = e.uolder
	} else {
		u.newest = e.uolder
	}
	if e.uolder != nil {
		e.uolder.unewer = e.unewer
	} else {
		u.oldest = e.unewer
	}
	if u.n--; u.n == 0 {
		delete(c.users, e.key.account)
	} else {
		c.users[e.key.account] = u
	}
	c.n--
	c.parkedN.Store(int64(c.n))
	conn := e.conn
	*e = entry{}
	if c.nfree < maxFree {
		e.older = c.free
		c.free = e
		c.nfree++
	}
	return conn
}
