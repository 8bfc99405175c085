package conncache

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// evictReason says why a parked connection was closed without being
// handed out. Its name is the value of the evictions counter's label.
type evictReason int

const (
	evictIdle    evictReason = iota // parked longer than IdleTimeout
	evictAge                        // logged in longer than MaxAge ago
	evictLRU                        // Total reached; least recently parked
	evictPerUser                    // PerUser reached; the account's oldest
	evictDropped                    // DropUser or DropBackend
	evictDead                       // Options.Alive said so
	evictClosed                     // Close
	numEvictReasons
)

var evictReasonNames = [numEvictReasons]string{"idle", "age", "lru", "per_user", "dropped", "dead", "closed"}

// Refusal reasons the cache itself counts in park_refusals_total.
const (
	refusedClosed = "closed" // Put after Close
	refusedAge    = "age"    // Put of a connection already past MaxAge
	refusedOther  = "other"  // a RefusePark reason that was not a valid label, or one too many
)

// maxRefusalReasons bounds the distinct values of the reason label of
// park_refusals_total; later reasons are counted as "other".
const maxRefusalReasons = 32

// maxReasonLen bounds a RefusePark reason's length.
const maxReasonLen = 32

// metrics are one cache's Prometheus metrics. They live in the Cache, not
// in package variables, so that tests may create many caches.
type metrics struct {
	hits      prometheus.Counter
	misses    prometheus.Counter
	parks     prometheus.Counter
	refusals  *prometheus.CounterVec
	evictions [numEvictReasons]prometheus.Counter

	mu      sync.Mutex
	reasons map[string]prometheus.Counter // refusal label values in use
}

func newMetrics(reg prometheus.Registerer, parked func() float64) *metrics {
	m := &metrics{
		hits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_conncache_hits_total",
			Help: "Logins answered with a parked backend connection.",
		}),
		misses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_conncache_misses_total",
			Help: "Cache lookups that found no live parked connection for the account, backend and password.",
		}),
		parks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_conncache_parks_total",
			Help: "Backend connections parked at a client's LOGOUT.",
		}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_conncache_park_refusals_total",
			Help: "Backend connections closed instead of parked at LOGOUT, by reason (the session state that forbade it, or closed, age).",
		}, []string{"reason"}),
		reasons: make(map[string]prometheus.Counter),
	}
	ev := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "switchboard_conncache_evictions_total",
		Help: "Parked connections closed without being handed out, by reason: idle, age, lru, per_user, dropped, dead, closed.",
	}, []string{"reason"})
	for r := range m.evictions {
		m.evictions[r] = ev.WithLabelValues(evictReasonNames[r])
	}
	gauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "switchboard_conncache_parked",
		Help: "Backend connections parked now.",
	}, parked)
	if reg != nil {
		reg.MustRegister(m.hits, m.misses, m.parks, m.refusals, ev, gauge)
	}
	return m
}

// refused counts one refusal to park under reason, or under "other" when
// reason is not a short lower-case label or too many reasons were seen.
func (m *metrics) refused(reason string) {
	m.mu.Lock()
	c, ok := m.reasons[reason]
	if !ok {
		if !validReason(reason) || len(m.reasons) >= maxRefusalReasons-1 {
			reason = refusedOther
		}
		if c, ok = m.reasons[reason]; !ok {
			c = m.refusals.WithLabelValues(reason)
			m.reasons[reason] = c
		}
	}
	m.mu.Unlock()
	c.Inc()
}

func validReason(s string) bool {
	if s == "" || len(s) > maxReasonLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}
