package ldapmap

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/go-ldap/ldap/v3"

	"switchboard/route"
)

// Defaults for the zero values of CacheOptions.
const (
	defaultCacheTTL    = 5 * time.Minute
	defaultNegativeTTL = 30 * time.Second
	defaultMaxEntries  = 100000
	// evictSample is how many entries an eviction looks at; the one that
	// expires first goes (approximate LRU, as Redis does it).
	evictSample = 8
	// cacheShards splits the map so that parallel hits on different
	// logins do not share a lock word or a counter's cache line.
	cacheShards = 32
)

// CacheOptions configures a Cache. NewCache copies it.
type CacheOptions struct {
	// TTL is how long an answer is served from the cache. Zero means 5m.
	TTL time.Duration

	// NegativeTTL is how long a route.ErrUnknownUser answer is served
	// from the cache, so that a flood of bad logins does not reach the
	// directory. Other errors are never cached. Zero means 30s.
	NegativeTTL time.Duration

	// ServeStale, when set, answers with an expired entry (Source
	// "stale") when the inner mapper fails with route.ErrUnavailable.
	// Expired entries are then kept until evicted or invalidated.
	// Default false.
	ServeStale bool

	// MaxEntries bounds the number of cached logins, positive and
	// negative together (rounded up to a multiple of 32: the cache is
	// split in 32 shards, each with its share). When a shard is full, an
	// insert evicts, out of a few of its entries sampled at random, the
	// one that expires first. Zero means 100000.
	MaxEntries int

	// Now returns the current time. Nil means time.Now; tests set it.
	Now func() time.Time
}

// CacheStats are a Cache's counters since NewCache.
type CacheStats struct {
	Hits         uint64 // answered from a fresh positive entry
	NegativeHits uint64 // answered from a fresh negative entry
	Misses       uint64 // not cached or expired: the inner mapper was asked, or a running lookup joined
	Shared       uint64 // misses that joined a lookup already running for the same login
	StaleServed  uint64 // expired entries served because the inner mapper was unavailable
	Evictions    uint64 // entries removed to stay within MaxEntries
	Entries      uint64 // entries held now
}

// Cache is a route.Mapper that caches another one. Keys are login names
// folded to lower case. Concurrent misses for one login share a single
// inner lookup. It implements route.Invalidator. It is safe for concurrent
// use.
//
// The cache also keeps an index from each cached answer's DN to the login
// names that led to it, so that a change reported by DN (see Watcher) can
// drop every login of the entry: InvalidateDN. The index holds exactly the
// positive entries the cache holds, so MaxEntries bounds it too.
type Cache struct {
	inner      route.Mapper
	ttl        time.Duration
	negTTL     time.Duration
	serveStale bool
	maxEntries int
	now        func() time.Time

	seed     maphash.Seed
	shards   [cacheShards]cacheShard
	perShard int // MaxEntries spread over the shards

	// flightMu guards flights and gen. Lock order: flightMu, then a
	// shard's mu.
	flightMu sync.Mutex
	flights  map[string]*flight
	gen      uint64 // bumped by InvalidateAll
	dnGen    uint64 // bumped by InvalidateDN

	// index maps DNs to the keys of the positive entries that name them.
	// Lock order: a shard's mu, then index.mu.
	index dnIndex

	misses, shared, stale, evictions atomic.Uint64
}

// A cacheShard is one part of the cache, with its own lock and hit
// counters, padded to keep neighbours off its cache lines.
type cacheShard struct {
	mu            sync.RWMutex
	entries       map[string]*cacheEntry
	hits, negHits atomic.Uint64
	_             [64]byte
}

// shard returns the shard that holds key.
func (c *Cache) shard(key string) *cacheShard {
	return &c.shards[maphash.String(c.seed, key)%cacheShards]
}

// A cacheEntry is immutable once stored: a refresh stores a new one.
type cacheEntry struct {
	res     route.Result // Source already "cache"
	err     error        // non-nil for a negative entry
	expires time.Time
}

// A flight is one inner lookup that concurrent misses wait for.
type flight struct {
	donec chan struct{}
	res   route.Result
	err   error
	// forget is set by Invalidate while the lookup runs: its answer
	// predates the invalidation and must not be stored.
	forget bool
	gen    uint64
	// dnGen is Cache.dnGen when the lookup started: if an InvalidateDN
	// happened meanwhile, the answer may predate the change it reported
	// (the DN is not known before the answer), so it is not stored.
	dnGen uint64
}

// NewCache returns a Cache in front of inner. opts may be nil.
func NewCache(inner route.Mapper, opts *CacheOptions) *Cache {
	var o CacheOptions
	if opts != nil {
		o = *opts
	}
	c := &Cache{
		inner:      inner,
		ttl:        o.TTL,
		negTTL:     o.NegativeTTL,
		serveStale: o.ServeStale,
		maxEntries: o.MaxEntries,
		now:        o.Now,
		seed:       maphash.MakeSeed(),
		flights:    make(map[string]*flight),
	}
	for i := range c.shards {
		c.shards[i].entries = make(map[string]*cacheEntry)
	}
	c.index.byDN = make(map[string]map[string]struct{})
	if c.ttl <= 0 {
		c.ttl = defaultCacheTTL
	}
	if c.negTTL <= 0 {
		c.negTTL = defaultNegativeTTL
	}
	if c.maxEntries <= 0 {
		c.maxEntries = defaultMaxEntries
	}
	if c.now == nil {
		c.now = time.Now
	}
	c.perShard = (c.maxEntries + cacheShards - 1) / cacheShards
	return c
}

// cacheKey folds user to lower case. strings.ToLower returns its argument
// without allocating when there is nothing to fold.
func cacheKey(user string) string { return route.Fold(user) }

// foldASCII writes user folded to lower case into buf and reports
// whether it could: only ASCII logins that fit are folded here (which is
// what strings.ToLower does to them too); the others go through cacheKey.
func foldASCII(buf *[maxLoginLen]byte, user string) ([]byte, bool) {
	if len(user) > len(buf) {
		return nil, false
	}
	for i := 0; i < len(user); i++ {
		b := user[i]
		switch {
		case b >= utf8.RuneSelf:
			return nil, false
		case 'A' <= b && b <= 'Z':
			b += 'a' - 'A'
		}
		buf[i] = b
	}
	return buf[:len(user)], true
}

// peek returns the entry for user, if any, without allocating: logins
// that need folding are folded on the stack, and a map index with
// string(bytes) does not copy.
func (c *Cache) peek(user string) (*cacheShard, *cacheEntry) {
	var buf [maxLoginLen]byte
	if kb, ok := foldASCII(&buf, user); ok {
		sh := &c.shards[maphash.Bytes(c.seed, kb)%cacheShards]
		sh.mu.RLock()
		e := sh.entries[string(kb)]
		sh.mu.RUnlock()
		return sh, e
	}
	key := cacheKey(user)
	sh := c.shard(key)
	sh.mu.RLock()
	e := sh.entries[key]
	sh.mu.RUnlock()
	return sh, e
}

// Lookup answers from the cache when it can, and asks the inner mapper
// otherwise. Cached answers have Source "cache", expired ones served
// while the inner mapper is unavailable have Source "stale". A hit does
// not allocate.
func (c *Cache) Lookup(ctx context.Context, user string) (route.Result, error) {
	sh, e := c.peek(user)
	if e != nil && c.now().Before(e.expires) {
		if e.err != nil {
			sh.negHits.Add(1)
			return route.Result{}, e.err
		}
		sh.hits.Add(1)
		return e.res, nil
	}
	c.misses.Add(1)
	key := cacheKey(user)
	res, err := c.fetch(ctx, key, user)
	if err != nil && c.serveStale && errors.Is(err, route.ErrUnavailable) {
		sh.mu.RLock()
		e := sh.entries[key]
		sh.mu.RUnlock()
		if e != nil && e.err == nil {
			c.stale.Add(1)
			res = e.res
			res.Source = "stale"
			return res, nil
		}
	}
	return res, err
}

// fetch runs the inner lookup for key, or waits for the one running. A
// waiter whose leader's context ended, while its own has not, tries again
// rather than inherit someone else's cancellation.
func (c *Cache) fetch(ctx context.Context, key, user string) (route.Result, error) {
	for {
		c.flightMu.Lock()
		if f, ok := c.flights[key]; ok {
			c.flightMu.Unlock()
			c.shared.Add(1)
			select {
			case <-f.donec:
			case <-ctx.Done():
				return route.Result{}, fmt.Errorf("ldapmap: cache: waiting for lookup: %w: %w", ctx.Err(), route.ErrUnavailable)
			}
			if isContextErr(f.err) && ctx.Err() == nil {
				continue
			}
			return f.res, f.err
		}
		f := &flight{donec: make(chan struct{}), gen: c.gen, dnGen: c.dnGen}
		c.flights[key] = f
		c.flightMu.Unlock()
		c.lead(ctx, key, user, f)
		return f.res, f.err
	}
}

// lead runs the inner lookup for f and stores its answer, unless an
// invalidation happened meanwhile.
func (c *Cache) lead(ctx context.Context, key, user string, f *flight) {
	returned := false
	defer c.land(key, f, &returned)
	f.res, f.err = c.inner.Lookup(ctx, user)
	returned = true

	c.flightMu.Lock()
	defer c.flightMu.Unlock()
	delete(c.flights, key)
	if f.forget || f.gen != c.gen || f.dnGen != c.dnGen {
		return
	}
	now := c.now()
	switch {
	case f.err == nil:
		res := f.res
		res.Source = "cache"
		c.store(key, &cacheEntry{res: res, expires: now.Add(c.ttl)})
	case errors.Is(f.err, route.ErrUnknownUser):
		c.store(key, &cacheEntry{err: f.err, expires: now.Add(c.negTTL)})
	case errors.Is(f.err, route.ErrUnavailable) || isContextErr(f.err):
		// No news: an expired entry stays, to be served stale.
	default:
		// The source answered (no host, ambiguous): an expired entry
		// is wrong now, stale or not.
		sh := c.shard(key)
		sh.mu.Lock()
		if e := sh.entries[key]; e != nil && !now.Before(e.expires) {
			c.deleteLocked(sh, key)
		}
		sh.mu.Unlock()
	}
}

// land ends f's flight: it wakes the waiters and, if the inner lookup
// panicked, removes the flight and gives the waiters an error, so that
// neither they nor later lookups read a zero Result as an answer.
func (c *Cache) land(key string, f *flight, returned *bool) {
	if !*returned {
		f.res, f.err = route.Result{}, fmt.Errorf("ldapmap: cache: inner lookup panicked: %w", route.ErrUnavailable)
		c.flightMu.Lock()
		delete(c.flights, key)
		c.flightMu.Unlock()
	}
	close(f.donec)
}

// isContextErr reports whether err is a context's cancellation or
// deadline.
func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// store puts e under key, evicting when full. Keys longer than a valid
// login are not stored: they can only be negative answers, and keeping
// them would let garbage fill the cache with large keys.
func (c *Cache) store(key string, e *cacheEntry) {
	if len(key) > maxLoginLen {
		return
	}
	sh := c.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	old, ok := sh.entries[key]
	if !ok && len(sh.entries) >= c.perShard {
		c.evictLocked(sh)
	}
	if ok {
		c.index.remove(old, key)
	}
	sh.entries[key] = e
	c.index.add(e, key)
}

// deleteLocked removes key's entry from sh and from the index. sh.mu is
// held.
func (c *Cache) deleteLocked(sh *cacheShard, key string) {
	if e, ok := sh.entries[key]; ok {
		delete(sh.entries, key)
		c.index.remove(e, key)
	}
}

// evictLocked removes one entry of sh: of a few taken in map order (which
// Go randomises), the one that expires first. sh.mu is held.
func (c *Cache) evictLocked(sh *cacheShard) {
	var victim string
	var first time.Time
	n := 0
	for k, e := range sh.entries {
		if n == 0 || e.expires.Before(first) {
			victim, first = k, e.expires
		}
		n++
		if n == evictSample {
			break
		}
	}
	if n > 0 {
		c.deleteLocked(sh, victim)
		c.evictions.Add(1)
	}
}

// Invalidate drops what the cache holds for user, including the answer of
// a lookup for user that is running now.
func (c *Cache) Invalidate(user string) {
	key := cacheKey(user)
	c.flightMu.Lock()
	defer c.flightMu.Unlock()
	if f, ok := c.flights[key]; ok {
		f.forget = true
	}
	sh := c.shard(key)
	sh.mu.Lock()
	c.deleteLocked(sh, key)
	sh.mu.Unlock()
}

// InvalidateAll drops every entry, and the answers of lookups running now.
func (c *Cache) InvalidateAll() {
	c.flightMu.Lock()
	defer c.flightMu.Unlock()
	c.gen++
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		clear(sh.entries)
		sh.mu.Unlock()
	}
	c.index.mu.Lock()
	clear(c.index.byDN)
	c.index.n = 0
	c.index.mu.Unlock()
}

// InvalidateDN drops the cached answers that named the entry dn, and the
// answers of every lookup running now (their DN is not known yet), and
// returns the login names it dropped, folded, sorted. DNs compare as
// distinguishedNameMatch does for case-insensitive attributes: attribute
// types and values ignore case, and spacing is normalised.
func (c *Cache) InvalidateDN(dn string) []string {
	key := dnKey(dn)
	c.flightMu.Lock()
	defer c.flightMu.Unlock()
	c.dnGen++
	c.index.mu.Lock()
	logins := make([]string, 0, len(c.index.byDN[key]))
	for login := range c.index.byDN[key] {
		logins = append(logins, login)
	}
	c.index.mu.Unlock()
	for _, login := range logins {
		sh := c.shard(login)
		sh.mu.Lock()
		c.deleteLocked(sh, login)
		sh.mu.Unlock()
	}
	slices.Sort(logins)
	return logins
}

// LoginsFor returns the login names, folded and sorted, whose cached
// answers name the entry dn. It implements LoginIndex.
func (c *Cache) LoginsFor(dn string) []string {
	key := dnKey(dn)
	c.index.mu.Lock()
	logins := make([]string, 0, len(c.index.byDN[key]))
	for login := range c.index.byDN[key] {
		logins = append(logins, login)
	}
	c.index.mu.Unlock()
	slices.Sort(logins)
	return logins
}

// InvalidateChange applies a Watcher's change to the cache: it drops the
// answers for the change's DN (InvalidateDN) and for each of its login
// names (a negative answer for a login that a new entry now serves, or a
// login the index no longer holds), and returns every login name
// affected, folded, sorted and without duplicates.
func (c *Cache) InvalidateChange(ch Change) []string {
	logins := c.InvalidateDN(ch.DN)
	for _, l := range ch.Logins {
		c.Invalidate(l)
		logins = append(logins, route.Fold(l))
	}
	slices.Sort(logins)
	return slices.Compact(logins)
}

// A dnIndex maps normalised DNs to the keys of the positive cache entries
// whose answers carry that DN.
type dnIndex struct {
	mu   sync.Mutex
	byDN map[string]map[string]struct{}
	n    int // keys held, over all DNs
}

// add records that key's entry e names e.res.DN. Negative entries and
// answers without a DN are not indexed.
func (x *dnIndex) add(e *cacheEntry, key string) {
	if e.err != nil || e.res.DN == "" {
		return
	}
	dk := dnKey(e.res.DN)
	x.mu.Lock()
	defer x.mu.Unlock()
	set := x.byDN[dk]
	if set == nil {
		set = make(map[string]struct{}, 1)
		x.byDN[dk] = set
	}
	if _, ok := set[key]; !ok {
		set[key] = struct{}{}
		x.n++
	}
}

// remove forgets that key's entry e names e.res.DN.
func (x *dnIndex) remove(e *cacheEntry, key string) {
	if e.err != nil || e.res.DN == "" {
		return
	}
	dk := dnKey(e.res.DN)
	x.mu.Lock()
	defer x.mu.Unlock()
	set := x.byDN[dk]
	if _, ok := set[key]; !ok {
		return
	}
	delete(set, key)
	x.n--
	if len(set) == 0 {
		delete(x.byDN, dk)
	}
}

// len returns the number of DNs and of keys in the index.
func (x *dnIndex) len() (dns, keys int) {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.byDN), x.n
}

// dnKey normalises a DN for comparison: parsed and re-joined (spacing,
// escaping), then folded to lower case, as distinguishedNameMatch
// compares case-insensitive attributes such as mail, uid and cn. A string
// that is not a DN (the File mapper's "file:line") is only folded.
func dnKey(dn string) string {
	if d, err := ldap.ParseDN(dn); err == nil && len(d.RDNs) > 0 {
		return strings.ToLower(d.String())
	}
	return strings.ToLower(dn)
}

// Stats returns the counters.
func (c *Cache) Stats() CacheStats {
	var st CacheStats
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.RLock()
		st.Entries += uint64(len(sh.entries))
		sh.mu.RUnlock()
		st.Hits += sh.hits.Load()
		st.NegativeHits += sh.negHits.Load()
	}
	st.Misses = c.misses.Load()
	st.Shared = c.shared.Load()
	st.StaleServed = c.stale.Load()
	st.Evictions = c.evictions.Load()
	return st
}

var (
	_ route.Mapper      = (*Cache)(nil)
	_ route.Invalidator = (*Cache)(nil)
	_ route.Mapper      = (*LDAP)(nil)
	_ route.Mapper      = (*File)(nil)
)
