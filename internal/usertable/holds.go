package usertable

import (
	"cmp"
	"time"
)

// Hold lifetimes. A hold is a safety net for a mailbox move: it lapses by
// itself if the tool that set it dies, so it always has a TTL.
const (
	// DefaultHoldTTL applies when a hold is set with no ttl.
	DefaultHoldTTL = 10 * time.Minute
	// MaxHoldTTL caps a hold's ttl.
	MaxHoldTTL = 24 * time.Hour
	// ReleaseMinTTL is how long a release is remembered at least, so that
	// a late copy of the hold it replaces cannot bring the hold back.
	ReleaseMinTTL = time.Minute
)

// Holds are per-user hold entries, merged last-writer-wins on (Lamport
// time, writer name). The table keeps a Lamport clock that jumps past any
// time it sees, so a hold or release written after the table has seen an
// earlier one always wins over it, whichever writer wrote it. Two truly
// concurrent writes (say, on both sides of a partition) are ordered by
// Lamport time, then by writer name: arbitrary but the same everywhere, so
// copies of the table converge. With one writer (a node of its own) every
// write simply wins.
//
// A release is kept as a tombstone for as long as the hold it replaces had
// left to live (at least ReleaseMinTTL), so a stale copy of the hold
// arriving later loses against it. Every entry expires after its TTL; an
// expiring hold is released without any write, which is the safety net
// for a tool that dies mid-migration.
type Holds struct {
	m       map[string]*holdEntry
	lamport uint64
	max     int
}

// HoldRecord is one user's hold as written and as exchanged between
// copies of the table.
type HoldRecord struct {
	User    string
	Held    bool
	TTL     time.Duration // left to live
	Lamport uint64
	Writer  string
}

type holdEntry struct {
	held    bool
	expires time.Time
	lamport uint64
	writer  string
}

// olderThan reports whether (lamport, writer) orders after e.
func (e *holdEntry) olderThan(lamport uint64, writer string) bool {
	if c := cmp.Compare(e.lamport, lamport); c != 0 {
		return c < 0
	}
	return e.writer < writer
}

// NewHolds returns an empty table of at most maxEntries users
// (DefaultMaxEntries if zero or less).
func NewHolds(maxEntries int) *Holds {
	if maxEntries <= 0 {
		maxEntries = DefaultMaxEntries
	}
	return &Holds{m: make(map[string]*holdEntry), max: maxEntries}
}

// Set writes a hold (held) or a release of user at now, as writer. A hold
// lasts ttl (DefaultHoldTTL if ttl <= 0, at most MaxHoldTTL); a release
// ignores ttl and is kept as a tombstone (see Holds). It returns the
// record to pass on to other copies, whether it was applied (false only
// when the table is full), and whether the user's held state changed
// (then held is the new state).
func (h *Holds) Set(user string, held bool, ttl time.Duration, writer string, now time.Time) (rec HoldRecord, applied, changed, nowHeld bool) {
	switch {
	case ttl <= 0:
		ttl = DefaultHoldTTL
	case ttl > MaxHoldTTL:
		ttl = MaxHoldTTL
	}
	if !held {
		ttl = ReleaseMinTTL
		if e := h.m[user]; e != nil && e.expires.Sub(now) > ttl {
			ttl = e.expires.Sub(now)
		}
	}
	h.lamport++
	rec = HoldRecord{User: user, Held: held, TTL: ttl, Lamport: h.lamport, Writer: writer}
	applied, changed, nowHeld = h.Merge(&rec, now)
	return rec, applied, changed, nowHeld
}

// Merge applies r, received at now. It reports whether r was applied, and
// whether the user's held state as last reported changed (then held is the
// new state). An expired hold not swept yet counts as reported, so that
// its release is reported once.
func (h *Holds) Merge(r *HoldRecord, now time.Time) (applied, changed, held bool) {
	if r.Lamport > h.lamport {
		h.lamport = r.Lamport
	}
	cur := h.m[r.User]
	reported := cur != nil && cur.held
	if cur != nil && now.After(cur.expires) {
		delete(h.m, r.User) // expired, not swept yet
		cur = nil
	}
	switch {
	case r.TTL <= 0:
		// Nothing to apply.
	case cur != nil && !cur.olderThan(r.Lamport, r.Writer):
		// Stale.
	case cur == nil && len(h.m) >= h.max && !h.makeRoom(now):
		// Full.
	default:
		expires := now.Add(min(r.TTL, MaxHoldTTL))
		if cur == nil {
			cur = &holdEntry{}
			h.m[r.User] = cur
		} else if !r.Held && cur.held && cur.expires.After(expires) {
			expires = cur.expires // the tombstone outlives the hold it replaces
		}
		*cur = holdEntry{held: r.Held, expires: expires, lamport: r.Lamport, writer: r.Writer}
		applied = true
	}
	held = cur != nil && cur.held
	return applied, held != reported, held
}

// makeRoom removes expired tombstones to make room for a new entry;
// expired holds stay for Sweep to report.
func (h *Holds) makeRoom(now time.Time) bool {
	for user, e := range h.m {
		if !e.held && now.After(e.expires) {
			delete(h.m, user)
		}
	}
	return len(h.m) < h.max
}

// Held reports whether user is on hold at now.
func (h *Holds) Held(user string, now time.Time) bool {
	e := h.m[user]
	return e != nil && e.held && now.Before(e.expires)
}

// Expires returns when user's entry, hold or tombstone, expires, and
// whether there is one (expired entries count until swept).
func (h *Holds) Expires(user string) (time.Time, bool) {
	e := h.m[user]
	if e == nil {
		return time.Time{}, false
	}
	return e.expires, true
}

// HeldUsers returns the users on hold at now and when each hold expires.
func (h *Holds) HeldUsers(now time.Time) map[string]time.Time {
	out := make(map[string]time.Time)
	for user, e := range h.m {
		if e.held && now.Before(e.expires) {
			out[user] = e.expires
		}
	}
	return out
}

// Sweep removes expired entries and calls released, if not nil, for each
// expired hold.
func (h *Holds) Sweep(now time.Time, released func(user string)) {
	for user, e := range h.m {
		if now.After(e.expires) {
			delete(h.m, user)
			if e.held && released != nil {
				released(user)
			}
		}
	}
}

// Records returns all live entries, holds and tombstones, with the time
// each has left, for a copy of the table elsewhere.
func (h *Holds) Records(now time.Time) []HoldRecord {
	out := make([]HoldRecord, 0, len(h.m))
	for user, e := range h.m {
		ttl := e.expires.Sub(now)
		if ttl <= 0 {
			continue
		}
		out = append(out, HoldRecord{User: user, Held: e.held, TTL: ttl, Lamport: e.lamport, Writer: e.writer})
	}
	return out
}

// Lamport returns the table's Lamport clock: the latest time written or
// seen.
func (h *Holds) Lamport() uint64 { return h.lamport }

// Len returns the number of entries, tombstones and entries expired but
// not swept included.
func (h *Holds) Len() int { return len(h.m) }

// Max returns the most entries the table keeps.
func (h *Holds) Max() int { return h.max }
