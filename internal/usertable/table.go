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
	User  string
	Proto string // "imap", "pop3"
}

// Table is one node's own counts: live sessions per (user, protocol) and
// decaying failure scores per client address and per user.
type Table struct {
	max    int
	tau    time.Duration
	forget float64

	sessions  map[SessionKey]int
	ipFails   map[netip.Addr]decay.Count
	userFails map[string]decay.Count
	dropped   uint64
}

// New returns an empty Table.
func New(opts *Options) *Table {
	return &Table{
		max:       opts.maxEntries(),
		tau:       opts.failureWindow(),
		forget:    opts.forgetBelow(),
		sessions:  make(map[SessionKey]int),
		ipFails:   make(map[netip.Addr]decay.Count),
		userFails: make(map[string]decay.Count),
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

// LoginFailed adds a failure at now to ip's score and user's score; a
// zero ip or an empty user is skipped. IPv4-mapped addresses count as
// IPv4.
func (t *Table) LoginFailed(ip netip.Addr, user string, now time.Time) {
	ip = ip.Unmap()
	if ip.IsValid() {
		addScore(t, t.ipFails, ip, now)
	}
	if user != "" {
		addScore(t, t.userFails, user, now)
	}
}

func addScore[K comparable](t *Table, m map[K]decay.Count, k K, now time.Time) {
	d, ok := m[k]
	if !ok && len(m) >= t.max {
		EvictLowest(m, func(v decay.Count) float64 { return v.Value(now, t.tau) })
		t.dropped++
	}
	m[k] = d.Add(now, t.tau, 1)
}

// IPScore returns ip's decayed failure score at now.
func (t *Table) IPScore(ip netip.Addr, now time.Time) float64 {
	return t.ipFails[ip.Unmap()].Value(now, t.tau)
}

// UserScore returns user's decayed failure score at now.
func (t *Table) UserScore(user string, now time.Time) float64 {
	return t.userFails[user].Value(now, t.tau)
}

// EachIPScore calls f with every address's score at now that is not yet
// below ForgetBelow.
func (t *Table) EachIPScore(now time.Time, f func(ip netip.Addr, score float64)) {
	for ip, d := range t.ipFails {
		if v := d.Value(now, t.tau); v >= t.forget {
			f(ip, v)
		}
	}
}

// EachUserScore calls f with every user's score at now that is not yet
// below ForgetBelow.
func (t *Table) EachUserScore(now time.Time, f func(user string, score float64)) {
	for u, d := range t.userFails {
		if v := d.Value(now, t.tau); v >= t.forget {
			f(u, v)
		}
	}
}

// Sweep drops failure scores that have faded below ForgetBelow.
func (t *Table) Sweep(now time.Time) {
	for k, d := range t.ipFails {
		if d.Value(now, t.tau) < t.forget {
			delete(t.ipFails, k)
		}
	}
	for k, d := range t.userFails {
		if d.Value(now, t.tau) < t.forget {
			delete(t.userFails, k)
		}
	}
}

// Len returns the number of entries of each table.
func (t *Table) Len() (sessions, ipFails, userFails int) {
	return len(t.sessions), len(t.ipFails), len(t.userFails)
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
