// Package decay is the exponentially fading count behind login failure
// scores: package gate keeps them for one node, package cluster shares them
// between nodes.
package decay

import (
	"math"
	"time"
)

// Count is a count that fades exponentially with time: Score as of At.
type Count struct {
	Score float64
	At    time.Time
}

// Value is the count at now, faded with time constant tau.
func (c Count) Value(now time.Time, tau time.Duration) float64 {
	if c.Score == 0 {
		return 0
	}
	age := now.Sub(c.At)
	if age <= 0 {
		return c.Score
	}
	return c.Score * math.Exp(-float64(age)/float64(tau))
}

// Add returns the count faded to now, plus n.
func (c Count) Add(now time.Time, tau time.Duration, n float64) Count {
	return Count{Score: c.Value(now, tau) + n, At: now}
}
