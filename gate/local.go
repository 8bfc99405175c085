package gate

import (
	"fmt"
	"math"
	"net/netip"
	"sync"
	"time"

	"switchboard/internal/usertable"
)

const (
	// sweepInterval is how often writes also drop expired holds and
	// failure counts that have faded below localForgetBelow.
	sweepInterval = time.Minute
	// localForgetBelow is the decayed failure count under which an entry
	// is dropped; it rounds to zero. (A cluster keeps smaller scores,
	// which add up over the nodes.)
	localForgetBelow = 0.5
)

// Local is a State for a node without a cluster: the same holds, session
// counts and decaying failure counts as package cluster keeps (both use
// internal/usertable), for this node only. It is safe for concurrent use
// and runs no goroutine: expired entries are swept by the writes.
type Local struct {
	now func() time.Time

	mu        sync.Mutex
	holds     *usertable.Holds
	table     *usertable.Table
	lastSweep time.Time
}

// NewLocal returns an empty Local whose failure counts decay with time
// constant failureWindow (15 min if zero), as cluster.FailureScore does.
func NewLocal(failureWindow time.Duration) *Local {
	return &Local{
		now:   time.Now,
		holds: usertable.NewHolds(0),
		table: usertable.New(&usertable.Options{FailureWindow: failureWindow, ForgetBelow: localForgetBelow}),
	}
}

// Hold puts user on hold (held) or releases them. A hold expires by
// itself after ttl (10 min if ttl <= 0, at most 24 h), like cluster.Hold.
// It fails only when 100 000 users are on hold.
func (l *Local) Hold(user string, held bool, ttl time.Duration) error {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepLocked(now)
	if _, applied, _, _ := l.holds.Set(user, held, ttl, "", now); !applied {
		return fmt.Errorf("gate: hold table full (%d entries)", l.holds.Max())
	}
	return nil
}

// Held implements State.
func (l *Local) Held(user string) bool {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.holds.Held(user, now)
}

// Holds returns the users on hold and when each hold expires.
func (l *Local) Holds() map[string]time.Time {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.holds.HeldUsers(now)
}

// Sessions implements State.
func (l *Local) Sessions(user, proto string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.table.Sessions(usertable.SessionKey{User: user, Proto: proto})
}

// SessionDelta implements State. Counts never go below zero.
func (l *Local) SessionDelta(user, proto string, delta int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.table.SessionDelta(usertable.SessionKey{User: user, Proto: proto}, delta)
}

// LoginFailed implements State.
func (l *Local) LoginFailed(ip netip.Addr, user string) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepLocked(now)
	l.table.LoginFailed(ip, user, now)
}

// FailureScore implements State: the decayed counts, rounded.
func (l *Local) FailureScore(ip netip.Addr, user string) (ipFails, userFails int) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if ip.IsValid() {
		ipFails = int(math.Round(l.table.IPScore(ip, now)))
	}
	if user != "" {
		userFails = int(math.Round(l.table.UserScore(user, now)))
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
	l.holds.Sweep(now, nil)
	l.table.Sweep(now)
}

var _ State = (*Local)(nil)
