package usertable

import (
	"math"
	"net/netip"
	"time"

	"switchboard/internal/decay"
)

// Defaults for Options fields left zero.
const (
	// DefaultMaxEntries caps each table: holds, session counts, address
	// failures, user failures.
	DefaultMaxEntries = 100_000
	// DefaultFailureWindow is the time constant of failure scores.
	DefaultFailureWindow = 15 * time.Minute
	// DefaultForgetBelow is the failure score under which Sweep drops an
	// entry. It is low because a cluster adds the scores of every node:
	// ten nodes at 0.4 make 4.
	DefaultForgetBelow = 0.05
)

// MaxSessions caps one session count, so that it fits the cluster's wire
// format.
const MaxSessions = 1 << 24

// evictSamples is how many entries EvictLowest looks at.
const evictSamples = 5

// Options configure a Table. New copies them.
type Options struct {
	// MaxEntries caps each of the three tables; zero means
	// DefaultMaxEntries. A full session table refuses new users; a full
	// failure table evicts a low score.
	MaxEntries int
	// FailureWindow is the time constant of the failure scores; zero
	// means DefaultFailureWindow (15 min). A steady rate of r failures a
	// minute reads about 15r, as a 15-minute sliding window would, and a
	// burst of n reads n at once and n/e one window later.
	FailureWindow time.Duration
	// ForgetBelow is the score under which Sweep drops a failure entry;
	// zero means DefaultForgetBelow (0.05). A node of its own may forget
	// at 0.5, where a score rounds to zero.
	ForgetBelow float64
}

func (o *Options) maxEntries() int {
	if o.MaxEntries > 0 {
		return o.MaxEntries
	}
	return DefaultMaxEntries
}

func (o *Options) failureWindow() time.Duration {
	if o.FailureWindow > 0 {
		return o.FailureWindow
	}
	return DefaultFailureWindow
}

func (o *Options) forgetBelow() float64 {
	if o.ForgetBelow > 0 {
		return o.ForgetBelow
	}
	return DefaultForgetBelow
}

// SessionKey names one session count.
type SessionKey struct {
	User  string // the account (see package doc)
	Proto string // "imap", "pop3"
}

// PairKey names one failure score of an account from a source address.
type PairKey struct {
	Account string
	Source  netip.Addr // as SourceKey returns it
}

// sourceV6Bits is the prefix an IPv6 source counts as: one /64 is one
// subscriber's LAN (RFC 6177), and an attacker gets its 2^64 addresses
// as easily as one.
const sourceV6Bits = 64

// SourceKey returns the address under which ip's failures count: IPv4
// (IPv4-mapped addresses too) as itself, IPv6 as the first address of its
// /64. A zero ip stays zero.
func SourceKey(ip netip.Addr) netip.Addr {
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.WithZone("").Prefix(sourceV6Bits)
		return p.Addr()
	}
	return ip
}

// Table is one node's own counts: live sessions per (account, protocol),
// decaying failure scores per (account, source), and per source the
// decaying count of distinct accounts that failed from it (password
// spraying).
type Table struct {
	max    int
	tau    time.Duration
	forget float64

	sessions  map[SessionKey]int
	srcFails  map[netip.Addr]decay.Count
	pairFails map[PairKey]decay.Count
	dropped   uint64
}

// New returns an empty Table.
func New(opts *Options) *Table {
	return &Table{
		max:       opts.maxEntries(),
		tau:       opts.failureWindow(),
		forget:    opts.forgetBelow(),
		sessions:  make(map[SessionKey]int),
		srcFails:  make(map[netip.Addr]decay.Count),
		pairFails: make(map[PairKey]decay.Count),
	}
}

// SessionDelta changes the count of k's sessions by delta, clamped to
// [0, MaxSessions]; a count reaching zero is removed. It reports whether
// the change was recorded: not for an empty user or a zero delta, nor for
// a new key when the table is full (a full table under-counts rather than
// grows).
func (t *Table) SessionDelta(k SessionKey, delta int) bool {
	if k.User == "" || delta == 0 {
		return false
	}
	n, ok := t.sessions[k]
	if !ok && delta > 0 && len(t.sessions) >= t.max {
		t.dropped++
		return false
	}
	if n = min(max(n+delta, 0), MaxSessions); n == 0 {
		delete(t.sessions, k)
	} else {
		t.sessions[k] = n
	}
	return true
}

// Sessions returns the count of k's sessions.
func (t *Table) Sessions(k SessionKey) int { return t.sessions[k] }

// EachSession calls f for every non-zero session count.
func (t *Table) EachSession(f func(k SessionKey, n int)) {
	for k, n := range t.sessions {
		f(k, n)
	}
}

// PairFailed adds a failure at now to k's score. A zero source or an
// empty account is skipped.
func (t *Table) PairFailed(k PairKey, now time.Time) {
	k.Source = SourceKey(k.Source)
	if k.Account == "" || !k.Source.IsValid() {
		return
	}
	addScore(t, t.pairFails, k, now, 1)
}

// SourceFailed adds one at now to src's score of failed accounts; a zero
// src is skipped.
func (t *Table) SourceFailed(src netip.Addr, now time.Time) {
	if src = SourceKey(src); src.IsValid() {
		addScore(t, t.srcFails, src, now, 1)
	}
}

// ClearPair sets k's score to -offset: zero, less what other nodes
// counted for k (offset), so that the sum over the nodes reads zero and
// stays zero as every share decays alike. A node of its own clears with
// offset 0.
func (t *Table) ClearPair(k PairKey, offset float64, now time.Time) {
	k.Source = SourceKey(k.Source)
	if _, ok := t.pairFails[k]; !ok && offset <= 0 {
		return
	}
	t.pairFails[k] = decay.Count{Score: -offset, At: now}
}

func addScore[K comparable](t *Table, m map[K]decay.Count, k K, now time.Time, n float64) {
	d, ok := m[k]
	if !ok && len(m) >= t.max {
		EvictLowest(m, func(v decay.Count) float64 { return v.Value(now, t.tau) })
		t.dropped++
	}
	m[k] = d.Add(now, t.tau, n)
}

// PairScore returns k's decayed failure score at now; it is negative
// after ClearPair with an offset.
func (t *Table) PairScore(k PairKey, now time.Time) float64 {
	k.Source = SourceKey(k.Source)
	return t.pairFails[k].Value(now, t.tau)
}

// SourceScore returns src's decayed score of failed accounts at now.
func (t *Table) SourceScore(src netip.Addr, now time.Time) float64 {
	return t.srcFails[SourceKey(src)].Value(now, t.tau)
}

// EachSourceScore calls f with every source's score at now that is not
// yet below ForgetBelow.
func (t *Table) EachSourceScore(now time.Time, f func(src netip.Addr, score float64)) {
	for ip, d := range t.srcFails {
		if v := d.Value(now, t.tau); v >= t.forget {
			f(ip, v)
		}
	}
}

// EachPairScore calls f with every pair's score at now whose size is not
// yet below ForgetBelow (cleared pairs are negative).
func (t *Table) EachPairScore(now time.Time, f func(k PairKey, score float64)) {
	for k, d := range t.pairFails {
		if v := d.Value(now, t.tau); math.Abs(v) >= t.forget {
			f(k, v)
		}
	}
}

// Sweep drops failure scores that have faded below ForgetBelow.
func (t *Table) Sweep(now time.Time) {
	for k, d := range t.srcFails {
		if d.Value(now, t.tau) < t.forget {
			delete(t.srcFails, k)
		}
	}
	for k, d := range t.pairFails {
		if math.Abs(d.Value(now, t.tau)) < t.forget {
			delete(t.pairFails, k)
		}
	}
}

// Len returns the number of entries of each table.
func (t *Table) Len() (sessions, srcFails, pairFails int) {
	return len(t.sessions), len(t.srcFails), len(t.pairFails)
}

// Dropped counts entries refused or evicted because a table was full.
func (t *Table) Dropped() uint64 { return t.dropped }

// FailureWindow returns the time constant of the failure scores.
func (t *Table) FailureWindow() time.Duration { return t.tau }

// MaxEntries returns the cap on each table.
func (t *Table) MaxEntries() int { return t.max }

// EvictLowest removes one of a few sampled entries of m with the lowest
// value. Go's map iteration order is random, so this approximates
// evicting the least important entry in O(1).
func EvictLowest[K comparable, V any](m map[K]V, value func(V) float64) {
	var (
		victim K
		low    = math.Inf(1)
		n      int
	)
	for k, v := range m {
		if x := value(v); x < low {
			victim, low = k, x
		}
		if n++; n == evictSamples {
			break
		}
	}
	if n > 0 {
		delete(m, victim)
	}
}
