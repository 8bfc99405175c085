package cluster

import "time"

// A message is identified by (origin, boot, seq): the node that created it,
// that node's start time in Unix nanoseconds, and a per-boot sequence number
// starting at 1. Receivers remember, per origin, the newest boot and a window
// of the last dedupeWindow sequence numbers. Anything older than the window,
// or from an older boot, counts as already seen: that is the safe side,
// because a replayed Kick would close sessions opened after the original one.
const (
	dedupeWindow  = 1024
	dedupeIdleTTL = time.Hour // forget origins silent for this long
	maxOrigins    = 4096      // bound on remembered origins
)

type seenWindow struct {
	boot uint64
	top  uint64 // highest seq seen
	bits [dedupeWindow / 64]uint64
	used time.Time
}

// fresh reports whether seq was not seen before and marks it seen.
func (w *seenWindow) fresh(seq uint64) bool {
	if seq == 0 {
		return false
	}
	switch {
	case seq > w.top:
		// Clear the slots between the old top and seq.
		if seq-w.top >= dedupeWindow {
			w.bits = [dedupeWindow / 64]uint64{}
		} else {
			for s := w.top + 1; s < seq; s++ {
				w.clear(s)
			}
		}
		w.top = seq
		w.set(seq)
		return true
	case w.top-seq >= dedupeWindow:
		return false
	case w.has(seq):
		return false
	default:
		w.set(seq)
		return true
	}
}

func (w *seenWindow) slot(s uint64) (int, uint64) {
	i := s % dedupeWindow
	return int(i / 64), 1 << (i % 64)
}
func (w *seenWindow) set(s uint64)      { i, m := w.slot(s); w.bits[i] |= m }
func (w *seenWindow) clear(s uint64)    { i, m := w.slot(s); w.bits[i] &^= m }
func (w *seenWindow) has(s uint64) bool { i, m := w.slot(s); return w.bits[i]&m != 0 }

// deduper tracks seen windows by origin name. It is not safe for concurrent
// use; the Cluster's mutex guards it.
type deduper struct {
	origins map[string]*seenWindow
}

// fresh reports whether (origin, boot, seq) is new. A newer boot resets the
// origin's window; an older boot is never fresh.
func (d *deduper) fresh(origin string, boot, seq uint64, now time.Time) bool {
	if d.origins == nil {
		d.origins = make(map[string]*seenWindow)
	}
	w := d.origins[origin]
	switch {
	case w == nil:
		if len(d.origins) >= maxOrigins {
			d.expire(now, 0)
			if len(d.origins) >= maxOrigins {
				return false
			}
		}
		w = &seenWindow{boot: boot}
		d.origins[origin] = w
	case boot > w.boot:
		*w = seenWindow{boot: boot}
	case boot < w.boot:
		return false
	}
	w.used = now
	return w.fresh(seq)
}

// expire forgets origins idle for longer than ttl (dedupeIdleTTL if zero).
func (d *deduper) expire(now time.Time, ttl time.Duration) {
	if ttl == 0 {
		ttl = dedupeIdleTTL
	}
	for name, w := range d.origins {
		if now.Sub(w.used) > ttl {
			delete(d.origins, name)
		}
	}
}
