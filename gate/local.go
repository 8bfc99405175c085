package gate

import (
	"math"
	"net/netip"
	"sync"
	"time"

	"switchboard/internal/decay"
)

// Local's defaults and limits, the same as package cluster's so that a
// node behaves alike with or without a cluster.
const (
	defaultFailureWindow = 15 * time.Minute
	defaultHoldTTL       = 10 * time.Minute
	maxHoldTTL           = 24 * time.Hour
	// maxLocalEntries caps each table (holds, session counts, address
	// failures, user failures).
	maxLocalEntries = 100_000
	// sweepInterval is how often writes also drop expired holds and
	// failure counts that have faded below one half.
	sweepInterval = time.Minute
	// forgetBelow is the decayed failure count under which an entry is
	// dropped; it rounds to zero.
	forgetBelow = 0.5
)

// Local is a State for a node without a cluster: the same holds, session
// counts and decaying failure counts as package cluster keeps, for this
// node only. It is safe for concurrent use and runs no goroutine: expired
// entries are swept by the writes.
type Local struct {
	tau time.Duration
	now func() time.Time

	mu        sync.Mutex
	holds     map[string]time.Time // user -> expiry
	sessions  map[sessKey]int
	ipFails   map[netip.Addr]decay.Count
	userFails map[string]decay.Count
	lastSweep time.Time
}

type sessKey struct{ user, proto string }

// NewLocal returns an empty Local whose failure counts decay with time
// constant failureWindow (15 min if zero), as cluster.FailureScore does.
func NewLocal(failureWindow time.Duration) *Local {
	if failureWindow <= 0 {
		failureWindow = defaultFailureWindow
	}
	return &Local{
		tau:       failureWindow,
		now:       time.Now,
		holds:     make(map[string]time.Time),
		sessions:  make(map[sessKey]int),
		ipFails:   make(map[netip.Addr]decay.Count),
		userFails: make(map[string]decay.Count),
	}
}

// Hold puts user on hold (held) or releases them. A hold expires by
// itself after ttl (10 min if ttl <= 0, at most 24 h), like cluster.Hold.
// It never fails; the error is there to match cluster.Hold.
func (l *Local) Hold(user string, held bool, ttl time.Duration) error {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepLocked(now)
	if !held {
		delete(l.holds, user)
		return nil
	}
	switch {
	case ttl <= 0:
		ttl = defaultHoldTTL
	case ttl > maxHoldTTL:
		ttl = maxHoldTTL
	}
	if _, ok := l.holds[user]; !ok && len(l.holds) >= maxLocalEntries {
		dropOne(l.holds)
	}
	l.holds[user] = now.Add(ttl)
	return nil
}

// Held implements State.
func (l *Local) Held(user string) bool {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	exp, ok := l.holds[user]
	return ok && now.Before(exp)
}

// Holds returns the users on hold and when each hold expires.
func (l *Local) Holds() map[string]time.Time {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]time.Time, len(l.holds))
	for u, exp := range l.holds {
		if now.Before(exp) {
			out[u] = exp
		}
	}
	return out
}

// Sessions implements State.
func (l *Local) Sessions(user, proto string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sessions[sessKey{user, proto}]
}

// SessionDelta implements State. Counts never go below zero.
func (l *Local) SessionDelta(user, proto string, delta int) {
	if user == "" || delta == 0 {
		return
	}
	k := sessKey{user, proto}
	l.mu.Lock()
	defer l.mu.Unlock()
	n, ok := l.sessions[k]
	if !ok && delta > 0 && len(l.sessions) >= maxLocalEntries {
		return // a full table under-counts rather than grows
	}
	if n = max(n+delta, 0); n == 0 {
		delete(l.sessions, k)
	} else {
		l.sessions[k] = n
	}
}

// LoginFailed implements State.
func (l *Local) LoginFailed(ip netip.Addr, user string) {
	now := l.now()
	ip = ip.Unmap()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepLocked(now)
	if ip.IsValid() {
		d, ok := l.ipFails[ip]
		if !ok && len(l.ipFails) >= maxLocalEntries {
			dropOne(l.ipFails)
		}
		l.ipFails[ip] = d.Add(now, l.tau, 1)
	}
	if user != "" {
		d, ok := l.userFails[user]
		if !ok && len(l.userFails) >= maxLocalEntries {
			dropOne(l.userFails)
		}
		l.userFails[user] = d.Add(now, l.tau, 1)
	}
}

// FailureScore implements State: the decayed counts, rounded.
func (l *Local) FailureScore(ip netip.Addr, user string) (ipFails, userFails int) {
	now := l.now()
	ip = ip.Unmap()
	l.mu.Lock()
	defer l.mu.Unlock()
	if ip.IsValid() {
		ipFails = int(math.Round(l.ipFails[ip].Value(now, l.tau)))
	}
	if user != "" {
		userFails = int(math.Round(l.userFails[user].Value(now, l.tau)))
	}
	return ipFails, userFails
}

// sweepLocked drops expired holds and faded failure counts, at most once
// per sweepInterval. Caller holds mu.
func (l *Local) sweepLocked(now time.Time) {
	if now.Sub(l.lastSweep) < sweepInterval {
		return
	}
	l.lastSweep = now
	for u, exp := range l.holds {
		if !now.Before(exp) {
			delete(l.holds, u)
		}
	}
	for ip, d := range l.ipFails {
		if d.Value(now, l.tau) < forgetBelow {
			delete(l.ipFails, ip)
		}
	}
	for u, d := range l.userFails {
		if d.Value(now, l.tau) < forgetBelow {
			delete(l.userFails, u)
		}
	}
}

// dropOne removes an arbitrary entry of a full table.
func dropOne[K comparable, V any](m map[K]V) {
	for k := range m {
		delete(m, k)
		return
	}
}

var _ State = (*Local)(nil)
