package admin

import (
	"github.com/prometheus/client_golang/prometheus"

	"switchboard/cluster"
)

// otherBackend is the backend label of sessions to a backend that is not
// in the host map.
const otherBackend = "other"

// Metric descriptions. Everything is read at scrape time from the
// counters the packages keep (router.Stats, ldapmap.CacheStats,
// cluster.Stats, gate.Stats) and from the live sessions, so nothing is
// counted twice and no label value comes from a client.
var (
	descBuildInfo = prometheus.NewDesc("switchboard_build_info",
		"Always 1; the version label says which build runs.", []string{"version"}, nil)
	descDraining = prometheus.NewDesc("switchboard_draining",
		"1 while the node drains after SIGTERM.", nil, nil)

	descSessions = prometheus.NewDesc("switchboard_sessions",
		"Logged-in sessions on this node, by protocol and backend (a name of [hosts], or \"other\").",
		[]string{"protocol", "backend"}, nil)
	descConnections = prometheus.NewDesc("switchboard_router_connections",
		"Open client connections on this node, logged in or not, by protocol.", []string{"protocol"}, nil)
	descAccepted = prometheus.NewDesc("switchboard_router_accepted_total",
		"Client connections accepted.", nil, nil)
	descLogins = prometheus.NewDesc("switchboard_router_logins_total",
		"Logins by outcome: ok, auth_failed (wrong password or unknown user), refused (hold, limit, failures), unavailable (map or backend).",
		[]string{"outcome"}, nil)
	descPreauthClosed = prometheus.NewDesc("switchboard_router_preauth_closed_total",
		"Connections that ended before a login: client gone, timeout, TLS or protocol error.", nil, nil)
	descKicked = prometheus.NewDesc("switchboard_router_kicked_total",
		"Sessions closed by a kick (invalidation or mailbox move).", nil, nil)
	descPreDialUsed = prometheus.NewDesc("switchboard_router_predial_used_total",
		"Logins served by a connection dialled and greeted in advance.", nil, nil)
	descPanics = prometheus.NewDesc("switchboard_router_panics_total",
		"Sessions ended by a recovered panic.", nil, nil)
	descBytes = prometheus.NewDesc("switchboard_router_bytes_total",
		"Bytes spliced: in is client to backend, out is backend to client.", []string{"direction"}, nil)

	descCacheHits = prometheus.NewDesc("switchboard_ldap_cache_hits_total",
		"Lookups answered from a fresh cached entry, by kind: positive (a route) or negative (unknown user).", []string{"kind"}, nil)
	descCacheMisses = prometheus.NewDesc("switchboard_ldap_cache_misses_total",
		"Lookups not answered from the cache (the directory was asked, or a running lookup joined).", nil, nil)
	descCacheStale = prometheus.NewDesc("switchboard_ldap_cache_stale_total",
		"Expired entries served because the directory was unavailable.", nil, nil)
	descCacheEvictions = prometheus.NewDesc("switchboard_ldap_cache_evictions_total",
		"Entries removed to stay within the cache's size.", nil, nil)
	descCacheEntries = prometheus.NewDesc("switchboard_ldap_cache_entries",
		"Entries in the cache.", nil, nil)

	descBackendUp = prometheus.NewDesc("switchboard_backend_up",
		"Backend health: 1 up, 0 down. view=\"node\" is this node's own probes (absent before the first), view=\"cluster\" the cluster's verdict that logins follow.",
		[]string{"backend", "view"}, nil)

	descMembers = prometheus.NewDesc("switchboard_cluster_members",
		"Cluster members as this node sees them, by state (alive, dead, left).", []string{"state"}, nil)
	descMessages = prometheus.NewDesc("switchboard_cluster_messages_total",
		"Cluster messages by type (invalidate, hold, state, leave, sync) and event (sent_direct, sent_gossip, received, duplicate).",
		[]string{"type", "event"}, nil)
	descGarbled = prometheus.NewDesc("switchboard_cluster_garbled_total",
		"Cluster messages refused by the decoder.", nil, nil)
	descDirectFailed = prometheus.NewDesc("switchboard_cluster_direct_send_failures_total",
		"Direct sends to a member that failed (gossip carries the message on).", nil, nil)
	descHandlerDropped = prometheus.NewDesc("switchboard_cluster_handler_dropped_total",
		"Invalidations, kicks or holds dropped because too many were waiting.", nil, nil)
	descEntriesDropped = prometheus.NewDesc("switchboard_cluster_entries_dropped_total",
		"Shared-state entries refused or evicted because a table was full.", nil, nil)
	descQueue = prometheus.NewDesc("switchboard_cluster_broadcast_queue",
		"Messages waiting to be gossiped.", nil, nil)

	descGateRefusals = prometheus.NewDesc("switchboard_gate_refusals_total",
		"Logins refused before the map was asked, by reason: held, limit, failures.", []string{"reason"}, nil)
	descGateDelayed = prometheus.NewDesc("switchboard_gate_delayed_total",
		"Logins delayed because of recent failed logins.", nil, nil)
)

// collector is the Prometheus collector of a Server.
type collector struct{ s *Server }

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descBuildInfo, descDraining,
		descSessions, descConnections, descAccepted, descLogins, descPreauthClosed, descKicked, descPreDialUsed, descPanics, descBytes,
		descCacheHits, descCacheMisses, descCacheStale, descCacheEvictions, descCacheEntries,
		descBackendUp,
		descMembers, descMessages, descGarbled, descDirectFailed, descHandlerDropped, descEntriesDropped, descQueue,
		descGateRefusals, descGateDelayed,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	version := s.opts.Version
	if version == "" {
		version = "unknown"
	}
	gauge(descBuildInfo, 1, version)
	gauge(descDraining, b2f(s.draining.Load()))

	// Sessions by protocol and backend; every backend of the host map
	// shows, with 0 when it has none.
	type key struct{ proto, backend string }
	counts := make(map[key]int)
	for _, p := range []string{"imap", "pop3"} {
		for _, b := range s.opts.Backends {
			counts[key{p, b}] = 0
		}
	}
	for _, si := range s.opts.Router.Sessions() {
		b := ""
		if s.opts.BackendName != nil {
			b = s.opts.BackendName(si.Backend)
		}
		if b == "" {
			b = otherBackend
		}
		counts[key{si.Protocol, b}]++
	}
	for k, n := range counts {
		gauge(descSessions, float64(n), k.proto, k.backend)
	}

	st := s.opts.Router.Stats()
	gauge(descConnections, float64(st.ActiveIMAP), "imap")
	gauge(descConnections, float64(st.ActivePOP3), "pop3")
	counter(descAccepted, st.Accepted)
	counter(descLogins, st.LoginOK, "ok")
	counter(descLogins, st.LoginFailed, "auth_failed")
	counter(descLogins, st.LoginRefused, "refused")
	counter(descLogins, st.Unavailable, "unavailable")
	counter(descPreauthClosed, st.PreauthClosed)
	counter(descKicked, st.Kicked)
	counter(descPreDialUsed, st.PreDialUsed)
	counter(descPanics, st.Panics)
	counter(descBytes, st.BytesIn, "in")
	counter(descBytes, st.BytesOut, "out")

	if f := s.opts.MapCache; f != nil {
		cs := f()
		counter(descCacheHits, cs.Hits, "positive")
		counter(descCacheHits, cs.NegativeHits, "negative")
		counter(descCacheMisses, cs.Misses)
		counter(descCacheStale, cs.StaleServed)
		counter(descCacheEvictions, cs.Evictions)
		gauge(descCacheEntries, float64(cs.Entries))
	}

	if f := s.opts.Gate; f != nil {
		gs := f()
		counter(descGateRefusals, gs.Held, "held")
		counter(descGateRefusals, gs.Limited, "limit")
		counter(descGateRefusals, gs.Refused, "failures")
		counter(descGateDelayed, gs.Delayed)
	}

	cl := s.opts.Cluster
	if cl == nil {
		return
	}
	own := cl.Health()[cl.Name()]
	for _, b := range s.opts.Backends {
		if up, ok := own[b]; ok {
			gauge(descBackendUp, b2f(up), b, "node")
		}
		gauge(descBackendUp, b2f(!cl.BackendDown(b)), b, "cluster")
	}
	states := map[string]int{cluster.StateAlive.String(): 0, cluster.StateDead.String(): 0, cluster.StateLeft.String(): 0}
	for _, m := range cl.Members() {
		states[m.State.String()]++
	}
	for state, n := range states {
		gauge(descMembers, float64(n), state)
	}
	cs := cl.Stats()
	for typ, ms := range cs.Messages {
		counter(descMessages, ms.SentDirect, typ, "sent_direct")
		counter(descMessages, ms.SentGossip, typ, "sent_gossip")
		counter(descMessages, ms.Received, typ, "received")
		counter(descMessages, ms.Duplicate, typ, "duplicate")
	}
	counter(descGarbled, cs.Garbled)
	counter(descDirectFailed, cs.DirectFailed)
	counter(descHandlerDropped, cs.HandlerDropped)
	counter(descEntriesDropped, cs.EntriesDropped)
	gauge(descQueue, float64(cs.QueuedBroadcasts))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
