package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"switchboard/internal/usertable"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

var (
	// ErrClosed is returned after Shutdown.
	ErrClosed = errors.New("cluster: shut down")
	// ErrNotDelivered wraps the error of Invalidate, Hold and Leave when a
	// direct send to some live member failed or did not finish within 1 s.
	// The message is still gossiped, so those members normally receive it
	// a moment later.
	ErrNotDelivered = errors.New("cluster: not delivered directly to every member")
	// ErrBadUser is returned for an empty user name or one over 255 bytes.
	ErrBadUser = errors.New("cluster: bad user name")
)

// Cluster is this node's membership in the cluster. Its methods are safe
// for concurrent use.
type Cluster struct {
	name    string
	boot    uint64 // start time, Unix ns: orders this node's restarts
	opts    Options
	logger  *slog.Logger
	ml      *memberlist.Memberlist
	queue   *memberlist.TransmitLimitedQueue // state and leave messages
	urgent  *memberlist.TransmitLimitedQueue // invalidations and holds: sent first, more often
	disp    *dispatcher
	meta    []byte
	stateIv time.Duration

	seq      atomic.Uint64
	numAlive atomic.Int64 // alive members including this one
	stats    counters

	mu      sync.Mutex
	seen    deduper
	holds   *usertable.Holds
	events  []loggedEvent // recent invalidations, oldest first
	tabs    tables
	local   localState
	peers   map[string]*peerState
	members map[string]*Member
	leaving map[string]time.Time // leave announcements by node name

	directSem chan struct{} // bounds direct sends in flight, all messages together
	chunk     int           // largest state message that fits a gossip packet

	syncMu  sync.Mutex
	syncSet map[string]bool // nodes to push this node's state to
	syncc   chan struct{}

	lifeMu sync.RWMutex // guards closed and wg.Add against Shutdown
	closed bool
	left   bool
	donec  chan struct{}
	wg     sync.WaitGroup
}

type loggedEvent struct {
	m  *message
	at time.Time // received or created
}

// counters are the Stats counters.
type counters struct {
	kind [numKinds]struct {
		sentDirect, sentGossip, received, duplicate atomic.Uint64
	}
	garbled, directFailed atomic.Uint64
}

// New starts this node: it binds the gossip port, then joins Options.Peers
// in the background and keeps retrying (see Options.Peers). The node is
// usable immediately, as a cluster of one until the join succeeds.
func New(opts *Options) (*Cluster, error) {
	c := &Cluster{
		opts:      *opts,
		boot:      uint64(time.Now().UnixNano()),
		peers:     make(map[string]*peerState),
		members:   make(map[string]*Member),
		leaving:   make(map[string]time.Time),
		syncSet:   make(map[string]bool),
		syncc:     make(chan struct{}, 1),
		directSem: make(chan struct{}, maxDirectInFlight),
		donec:     make(chan struct{}),
	}
	c.opts.Peers = slices.Clone(opts.Peers)
	c.opts.Keys = slices.Clone(opts.Keys)
	c.logger = c.opts.logger()
	c.stateIv = c.opts.stateInterval()
	c.tabs = tables{max: c.opts.maxEntries(), tau: c.opts.failureWindow()}
	c.holds = usertable.NewHolds(c.opts.maxEntries())
	c.local = newLocalState(&usertable.Options{MaxEntries: c.opts.maxEntries(), FailureWindow: c.opts.failureWindow()})

	name, err := c.opts.nodeName()
	if err != nil {
		return nil, fmt.Errorf("cluster: node name: %w", err)
	}
	if name == "" || len(name) > maxNameLen || strings.ContainsAny(name, "/ \t\r\n") {
		return nil, fmt.Errorf("cluster: bad node name %q", name)
	}
	c.name = name
	c.logger = c.logger.With("node", name)
	if c.meta, err = encodeMeta(c.opts.Meta); err != nil {
		return nil, err
	}
	mc, err := c.opts.memberlistConfig(name, c.logger)
	if err != nil {
		return nil, err
	}
	// Room for one message in a gossip packet: memberlist's compound
	// header, the label header, encryption, and per-message overheads.
	room := mc.UDPBufferSize - 2 - (2 + len(mc.Label)) - 3
	if mc.Keyring != nil {
		room -= 1 + 12 + 16 // version, nonce, GCM tag
	}
	c.chunk = min(maxBroadcast, room)
	if c.chunk < minBroadcast {
		return nil, fmt.Errorf("cluster: udp buffer size %d leaves %d bytes per message, need %d (shorter label or larger buffer)", mc.UDPBufferSize, room, minBroadcast)
	}
	d := &delegate{c: c}
	mc.Delegate = d
	mc.Events = d
	numNodes := func() int { return int(c.numAlive.Load()) }
	c.queue = &memberlist.TransmitLimitedQueue{NumNodes: numNodes, RetransmitMult: mc.RetransmitMult}
	c.urgent = &memberlist.TransmitLimitedQueue{NumNodes: numNodes, RetransmitMult: urgentRetransmitMult * mc.RetransmitMult}
	c.numAlive.Store(1)
	c.disp = newDispatcher(c.opts.Handler, c.logger)

	ml, err := memberlist.Create(mc)
	if err != nil {
		c.disp.close()
		return nil, fmt.Errorf("cluster: %w", err)
	}
	c.ml = ml
	if mc.Keyring == nil {
		c.logger.Warn("cluster gossip is not encrypted: anyone who can reach the port can join")
	}
	ln := ml.LocalNode()
	c.logger.Info("cluster node started", "addr", net.JoinHostPort(ln.Addr.String(), strconv.Itoa(int(ln.Port))), "peers", c.opts.Peers)

	c.wg.Add(3)
	go c.runTicker()
	go c.runJoiner()
	go c.runSyncer()
	return c, nil
}

// Name returns this node's name.
func (c *Cluster) Name() string { return c.name }

func (c *Cluster) nextSeq() uint64 { return c.seq.Add(1) }

// goTracked runs f on a goroutine that Shutdown waits for; it reports false
// (and does not run f) once Shutdown has begun.
func (c *Cluster) goTracked(f func()) bool {
	c.lifeMu.RLock()
	defer c.lifeMu.RUnlock()
	if c.closed {
		return false
	}
	c.wg.Add(1)
	go f()
	return true
}

func (c *Cluster) hasLeft() bool {
	c.lifeMu.RLock()
	defer c.lifeMu.RUnlock()
	return c.left
}

func (c *Cluster) isClosed() bool {
	c.lifeMu.RLock()
	defer c.lifeMu.RUnlock()
	return c.closed
}

func checkUser(user string) error {
	if user == "" || len(user) > maxUserLen {
		return ErrBadUser
	}
	return nil
}

// Invalidate drops user's cached route on every node, and with kick closes
// user's live sessions everywhere. It queues the Handler calls for this
// node, sends the message straight to every live member over TCP in
// parallel and queues it for gossip as well. It waits at most 1 s for the
// direct sends; the error (ErrNotDelivered) names members not reached
// directly, which the gossip copy normally reaches shortly after.
func (c *Cluster) Invalidate(user string, kick bool) error {
	if err := checkUser(user); err != nil {
		return err
	}
	if c.isClosed() {
		return ErrClosed
	}
	now := time.Now()
	m := &message{Kind: kindInvalidate, Origin: c.name, Boot: c.boot, Seq: c.nextSeq(), User: user, Kick: kick}
	c.mu.Lock()
	c.logEvent(m, now)
	c.mu.Unlock()
	calls := []handlerCall{{op: opInvalidate, user: user}}
	if kick {
		calls = append(calls, handlerCall{op: opKick, user: user})
	}
	c.disp.push(calls...)
	return c.publish(m, deliveryTimeout)
}

// Hold puts user on hold (held) or releases them, on every node, delivered
// like Invalidate. A hold expires by itself after ttl (10 min if ttl <= 0,
// at most 24 h) as a safety net; renew it by calling Hold again. For a
// release ttl is ignored. Nodes that join later learn current holds in
// their first state exchange. Concurrent writes resolve last-writer-wins.
func (c *Cluster) Hold(user string, held bool, ttl time.Duration) error {
	if err := checkUser(user); err != nil {
		return err
	}
	if c.isClosed() {
		return ErrClosed
	}
	c.mu.Lock()
	rec, applied, changed, nowHeld := c.holds.Set(user, held, ttl, c.name, time.Now())
	c.mu.Unlock()
	if !applied {
		return fmt.Errorf("cluster: hold table full (%d entries)", c.holds.Max())
	}
	if changed {
		c.disp.push(handlerCall{op: opHold, user: user, held: nowHeld})
	}
	m := &message{Kind: kindHold, Origin: c.name, Boot: c.boot, Seq: c.nextSeq(), Hold: rec}
	return c.publish(m, deliveryTimeout)
}

// Held reports whether user is on hold, as far as this node knows.
func (c *Cluster) Held(user string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.holds.Held(user, time.Now())
}

// publish gossips m and sends it directly to every live member, waiting up
// to wait for the direct sends.
func (c *Cluster) publish(m *message, wait time.Duration) error {
	raw := encodeMessage(m)
	c.queueBroadcast(m.Kind, raw)
	targets := c.aliveTargets()
	if len(targets) == 0 || c.opts.gossipOnly {
		return nil
	}
	results := make(chan error, len(targets))
	started, skipped := 0, 0
	for _, t := range targets {
		select {
		case c.directSem <- struct{}{}:
		default:
			skipped++ // too many sends in flight (unreachable members): gossip covers
			continue
		}
		s := &directSend{c: c, to: t, msg: raw, kind: m.Kind, results: results}
		if !c.goTracked(s.run) {
			<-c.directSem
			return ErrClosed
		}
		started++
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	var failed []error
	if skipped > 0 {
		c.stats.directFailed.Add(uint64(skipped))
		failed = append(failed, fmt.Errorf("%d member(s) skipped: %d direct sends in flight", skipped, cap(c.directSem)))
	}
	for done := 0; done < started; done++ {
		select {
		case err := <-results:
			if err != nil {
				failed = append(failed, err)
			}
		case <-timer.C:
			failed = append(failed, fmt.Errorf("%d member(s) not confirmed within %v", started-done, wait))
			done = started
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%w: %w", ErrNotDelivered, errors.Join(failed...))
	}
	return nil
}

// directSend is one TCP send of a message to one member.
type directSend struct {
	c       *Cluster
	to      memberlist.Node
	msg     []byte
	kind    byte
	results chan<- error
}

// run is the goroutine of a direct send.
func (s *directSend) run() {
	defer s.c.wg.Done()
	defer func() { <-s.c.directSem }()
	err := s.c.ml.SendReliable(&s.to, s.msg)
	if err != nil {
		s.c.stats.directFailed.Add(1)
		// Debug only: the caller gets the error, and during a partition
		// every message would log it again.
		s.c.logger.Debug("cluster direct send failed", "to", s.to.Name, "type", kindNames[s.kind], "err", err)
		err = fmt.Errorf("%s: %w", s.to.Name, err)
	} else {
		s.c.stats.kind[s.kind].sentDirect.Add(1)
	}
	s.results <- err
}

// aliveTargets returns the other live members.
func (c *Cluster) aliveTargets() []memberlist.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []memberlist.Node
	for _, m := range c.members {
		if m.State == StateAlive && m.Name != c.name {
			out = append(out, memberlist.Node{Name: m.Name, Addr: net.IP(m.Addr.Addr().AsSlice()), Port: m.Addr.Port()})
		}
	}
	return out
}

type broadcast struct{ msg []byte }

func (b *broadcast) Invalidates(memberlist.Broadcast) bool { return false }
func (b *broadcast) Message() []byte                       { return b.msg }
func (b *broadcast) Finished()                             {}

func (c *Cluster) queueBroadcast(kind byte, raw []byte) {
	if kind == kindInvalidate || kind == kindHold {
		c.urgent.QueueBroadcast(&broadcast{msg: raw})
	} else {
		c.queue.QueueBroadcast(&broadcast{msg: raw})
	}
	c.stats.kind[kind].sentGossip.Add(1)
}

// logEvent records an invalidation for replay in push/pull. Caller holds mu.
func (c *Cluster) logEvent(m *message, now time.Time) {
	if m.Kind != kindInvalidate {
		return
	}
	if len(c.events) >= maxSyncEvents {
		c.events = slices.Delete(c.events, 0, len(c.events)-maxSyncEvents+1)
	}
	c.events = append(c.events, loggedEvent{m: m, at: now.Add(-m.Age)})
}

// receive handles a message from gossip or a direct send.
func (c *Cluster) receive(b []byte) {
	if c.isClosed() {
		return
	}
	if messageKind(b) == kindSync {
		c.mergeSync(b) // pushed by a node that saw this one join
		return
	}
	m, err := decodeMessage(b)
	if err != nil {
		c.stats.garbled.Add(1)
		c.logger.Warn("cluster message refused", "type", kindNames[messageKind(b)], "bytes", len(b), "err", err)
		return
	}
	if !c.apply(m, time.Now(), false) {
		c.stats.kind[m.Kind].duplicate.Add(1)
		return
	}
	c.stats.kind[m.Kind].received.Add(1)
	// Relay: each node that learns something new gossips it on, so it
	// spreads epidemically rather than only as far as its origin's own
	// retransmissions reach.
	c.queueBroadcast(m.Kind, slices.Clone(b))
}

// apply applies a decoded message and reports whether it was new.
func (c *Cluster) apply(m *message, now time.Time, replay bool) bool {
	if m.Origin == c.name {
		return false
	}
	var calls []handlerCall
	c.mu.Lock()
	if !c.seen.fresh(m.Origin, m.Boot, m.Seq, now) {
		c.mu.Unlock()
		return false
	}
	switch m.Kind {
	case kindInvalidate:
		c.logEvent(m, now)
		calls = append(calls, handlerCall{op: opInvalidate, user: m.User})
		if m.Kick && m.Age < kickReplayMaxAge {
			calls = append(calls, handlerCall{op: opKick, user: m.User})
		}
	case kindHold:
		if _, changed, held := c.holds.Merge(&m.Hold, now); changed {
			calls = append(calls, handlerCall{op: opHold, user: m.Hold.User, held: held})
		}
	case kindState:
		c.applyPeerState(m, now)
	case kindLeave:
		c.markLeaving(m.Origin, now)
	}
	c.mu.Unlock()
	if len(calls) > 0 {
		c.disp.push(calls...)
	}
	if replay && m.Kind == kindInvalidate {
		c.logger.Info("cluster invalidation replayed", "origin", m.Origin, "user", m.User, "age", m.Age.Round(time.Millisecond))
	}
	return true
}

// applyPeerState merges a state message. Caller holds mu.
func (c *Cluster) applyPeerState(m *message, now time.Time) {
	p := c.peers[m.Origin]
	switch {
	case p == nil:
		if len(c.peers) >= maxOrigins {
			return
		}
		p = newPeerState(m.Boot)
		c.peers[m.Origin] = p
	case m.Boot > p.boot:
		*p = *newPeerState(m.Boot) // restarted: its old state is gone
	case m.Boot < p.boot:
		return
	}
	c.tabs.applyState(p, m.State, m.Seq, now)
}

// markLeaving records that a node announced it is leaving. Caller holds mu.
func (c *Cluster) markLeaving(name string, now time.Time) {
	c.leaving[name] = now
	if m := c.members[name]; m != nil && m.State == StateDead {
		m.State = StateLeft
	}
}

// SetBackendHealth records what this node's checker sees of backend. A
// report not renewed within HealthTTL expires.
func (c *Cluster) SetBackendHealth(backend string, up bool) {
	if backend == "" || len(backend) > maxNameLen {
		return
	}
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	prev, ok := c.local.health[backend]
	if !ok && len(c.local.health) >= c.tabs.max {
		c.tabs.dropped++
		return
	}
	if !ok || prev.up != up {
		c.local.dirtyHealth = true
		if ok {
			c.logger.Info("cluster backend health changed", "backend", backend, "up", up)
		}
	}
	c.local.health[backend] = localHealth{up: up, at: now}
}

// BackendDown reports the cluster's view of backend: down when a strict
// majority of the fresh reports on it, from this node and the peers
// currently alive, say down. With no fresh report, or a tie, it is up:
// a node that alone cannot reach a backend does not take it away from the
// others, and two nodes out of three seeing it down is enough everywhere.
func (c *Cluster) BackendDown(backend string) bool {
	now := time.Now()
	ttl := c.opts.healthTTL()
	c.mu.Lock()
	defer c.mu.Unlock()
	reports, downs := 0, 0
	if h, ok := c.local.health[backend]; ok && now.Sub(h.at) <= ttl {
		reports++
		if !h.up {
			downs++
		}
	}
	for name, p := range c.peers {
		if !c.aliveLocked(name) {
			continue
		}
		if h, ok := p.health[backend]; ok && now.Sub(h.at) <= ttl {
			reports++
			if !h.up {
				downs++
			}
		}
	}
	return 2*downs > reports
}

// Health returns the fresh backend reports of this node and of the peers
// currently alive: node name -> backend -> up. For status pages.
func (c *Cluster) Health() map[string]map[string]bool {
	now := time.Now()
	ttl := c.opts.healthTTL()
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]map[string]bool)
	own := make(map[string]bool)
	for b, h := range c.local.health {
		if now.Sub(h.at) <= ttl {
			own[b] = h.up
		}
	}
	out[c.name] = own
	for name, p := range c.peers {
		if !c.aliveLocked(name) {
			continue
		}
		m := make(map[string]bool)
		for b, h := range p.health {
			if now.Sub(h.at) <= ttl {
				m[b] = h.up
			}
		}
		out[name] = m
	}
	return out
}

// SessionDelta changes this node's count of live sessions of user over
// proto ("imap", "pop3") by delta. Counts below zero are clamped to zero.
// Changes are gossiped every StateInterval.
func (c *Cluster) SessionDelta(user, proto string, delta int) {
	if user == "" || delta == 0 {
		return
	}
	k := sessKey{User: truncUser(user), Proto: truncProto(proto)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.local.table.SessionDelta(k, delta) {
		c.local.dirtySess[k] = struct{}{}
	}
}

// Sessions returns the approximate number of user's live sessions over
// proto on all live nodes: this node's exact count plus each peer's count
// as last gossiped (at most about StateInterval plus gossip time old).
func (c *Cluster) Sessions(user, proto string) int {
	k := sessKey{User: truncUser(user), Proto: truncProto(proto)}
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.local.table.Sessions(k)
	for name, p := range c.peers {
		if c.aliveLocked(name) {
			n += p.sessions[k].n
		}
	}
	return n
}

// LoginFailed records a failed login from ip for user (either may be zero
// or empty).
func (c *Cluster) LoginFailed(ip netip.Addr, user string) {
	now := time.Now()
	ip = ip.Unmap()
	user = truncUser(user)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.local.table.LoginFailed(ip, user, now)
	if ip.IsValid() {
		c.local.dirtyIP[ip] = struct{}{}
	}
	if user != "" {
		c.local.dirtyUser[user] = struct{}{}
	}
}

// FailureScore returns the cluster-wide recent login failures from ip and
// for user. Each count decays exponentially with time constant
// FailureWindow (15 min): a steady rate of r failures a minute reads about
// 15r, as a 15-minute sliding window would, and a burst of n reads n at
// once, n/e after 15 minutes and under 1 after about 15·ln(n) minutes.
// Counts from other nodes arrive within about a second.
func (c *Cluster) FailureScore(ip netip.Addr, user string) (ipFails, userFails int) {
	now := time.Now()
	ip = ip.Unmap()
	user = truncUser(user)
	tau := c.tabs.tau
	c.mu.Lock()
	defer c.mu.Unlock()
	var ipSum, userSum float64
	if ip.IsValid() {
		ipSum = c.local.table.IPScore(ip, now)
	}
	if user != "" {
		userSum = c.local.table.UserScore(user, now)
	}
	for _, p := range c.peers {
		if ip.IsValid() {
			ipSum += p.ipFails[ip].Value(now, tau)
		}
		if user != "" {
			userSum += p.userFails[user].Value(now, tau)
		}
	}
	return int(math.Round(ipSum)), int(math.Round(userSum))
}

// aliveLocked reports whether a node is an alive member. Caller holds mu.
func (c *Cluster) aliveLocked(name string) bool {
	m := c.members[name]
	return m != nil && m.State == StateAlive
}

// State is a member's state as this node sees it.
type State uint8

// Member states. memberlist's own "suspect" phase is not visible through
// its API, so a suspect member shows as alive until declared dead.
const (
	StateAlive State = iota // reachable, directly or through others
	StateDead               // failed: stopped answering probes
	StateLeft               // left on purpose (Leave)
)

func (s State) String() string {
	switch s {
	case StateAlive:
		return "alive"
	case StateDead:
		return "dead"
	case StateLeft:
		return "left"
	}
	return "unknown"
}

// Member is one node as this node sees it.
type Member struct {
	Name  string
	Addr  netip.AddrPort
	State State
	Since time.Time // when State last changed here
	Meta  map[string]string
	Local bool // this node
}

// Members returns every node known here, this one included, sorted by
// name. Dead and left members are kept for 6 hours.
func (c *Cluster) Members() []Member {
	c.mu.Lock()
	out := make([]Member, 0, len(c.members))
	for _, m := range c.members {
		mm := *m
		mm.Meta = maps.Clone(m.Meta)
		out = append(out, mm)
	}
	c.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// MessageStats count one type of message.
type MessageStats struct {
	SentDirect uint64 // sent straight to a member over TCP
	SentGossip uint64 // queued for gossip, own and relayed
	Received   uint64 // new to this node and applied
	Duplicate  uint64 // already seen, or from an older restart of the sender
}

// Stats are counters for metrics.
type Stats struct {
	// Messages by type: "invalidate", "hold", "state", "leave", "sync".
	Messages map[string]MessageStats
	// Garbled counts messages refused by the decoder.
	Garbled uint64
	// DirectFailed counts direct sends that failed.
	DirectFailed uint64
	// HandlerDropped counts Handler calls dropped because 65536 were
	// already waiting.
	HandlerDropped uint64
	// EntriesDropped counts table entries refused or evicted at MaxEntries.
	EntriesDropped uint64
	// QueuedBroadcasts is the current gossip queue length.
	QueuedBroadcasts int
	// AliveMembers counts alive members, this node included.
	AliveMembers int
}

// Stats returns the current counters.
func (c *Cluster) Stats() Stats {
	s := Stats{
		Messages:         make(map[string]MessageStats, numKinds-1),
		Garbled:          c.stats.garbled.Load(),
		DirectFailed:     c.stats.directFailed.Load(),
		HandlerDropped:   c.disp.droppedCalls(),
		QueuedBroadcasts: c.queue.NumQueued() + c.urgent.NumQueued(),
		AliveMembers:     int(c.numAlive.Load()),
	}
	for k := 1; k < numKinds; k++ {
		st := &c.stats.kind[k]
		s.Messages[kindNames[k]] = MessageStats{
			SentDirect: st.sentDirect.Load(),
			SentGossip: st.sentGossip.Load(),
			Received:   st.received.Load(),
			Duplicate:  st.duplicate.Load(),
		}
	}
	c.mu.Lock()
	s.EntriesDropped = c.tabs.dropped + c.local.table.Dropped()
	c.mu.Unlock()
	return s
}

// Leave announces that this node is leaving, so the others show it as left
// rather than failed and stop expecting it, and waits up to timeout for
// the announcement to go out. Call it before draining sessions, then call
// Shutdown. The node keeps receiving messages until Shutdown.
func (c *Cluster) Leave(timeout time.Duration) error {
	c.lifeMu.Lock()
	if c.closed {
		c.lifeMu.Unlock()
		return ErrClosed
	}
	already := c.left
	c.left = true
	c.lifeMu.Unlock()
	if already {
		return nil
	}
	m := &message{Kind: kindLeave, Origin: c.name, Boot: c.boot, Seq: c.nextSeq()}
	start := time.Now()
	if err := c.publish(m, min(timeout, deliveryTimeout)); err != nil {
		c.logger.Warn("cluster leave announcement", "err", err)
	}
	// Hold off Shutdown: memberlist panics on Leave after Shutdown.
	c.lifeMu.RLock()
	defer c.lifeMu.RUnlock()
	if c.closed {
		return ErrClosed
	}
	if err := c.ml.Leave(max(timeout-time.Since(start), time.Millisecond)); err != nil {
		return fmt.Errorf("cluster: leave: %w", err)
	}
	c.logger.Info("cluster node left")
	return nil
}

// Shutdown stops all gossip and background work and waits for it. Without
// a prior Leave the other nodes see this node fail. Calling it again does
// nothing.
func (c *Cluster) Shutdown() error {
	c.lifeMu.Lock()
	if c.closed {
		c.lifeMu.Unlock()
		return nil
	}
	c.closed = true
	close(c.donec)
	c.lifeMu.Unlock()
	c.wg.Wait() // direct sends, joins and syncs finish within TCPTimeout
	err := c.ml.Shutdown()
	c.disp.close()
	c.logger.Info("cluster node shut down")
	if err != nil {
		return fmt.Errorf("cluster: shutdown: %w", err)
	}
	return nil
}

// sleep waits d or until shutdown; it reports false on shutdown.
func (c *Cluster) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.donec:
		return false
	}
}

// runTicker is the goroutine that gossips this node's state changes and
// expires old entries.
func (c *Cluster) runTicker() {
	defer c.wg.Done()
	tk := time.NewTicker(c.stateIv)
	defer tk.Stop()
	lastSweep := time.Now()
	for {
		select {
		case <-c.donec:
			return
		case now := <-tk.C:
			c.flushState(now)
			c.expireHolds(now)
			if now.Sub(lastSweep) >= 5*time.Second {
				c.sweep(now)
				lastSweep = now
			}
			for _, q := range []*memberlist.TransmitLimitedQueue{c.queue, c.urgent} {
				if q.NumQueued() > maxQueuedBroadcasts {
					q.Prune(maxQueuedBroadcasts) // panics on a queue never used
				}
			}
		}
	}
}

// flushState gossips this node's state changes.
func (c *Cluster) flushState(now time.Time) {
	c.mu.Lock()
	recs := c.tabs.deltas(&c.local, c.name, now, c.opts.healthTTL()/3, c.chunk)
	// Sequence numbers are taken under mu so that a snapshot (LocalState)
	// and deltas are ordered the same way as the changes they carry.
	msgs := make([]*message, len(recs))
	for i, r := range recs {
		msgs[i] = &message{Kind: kindState, Origin: c.name, Boot: c.boot, Seq: c.nextSeq(), State: r}
	}
	c.mu.Unlock()
	for _, m := range msgs {
		c.queueBroadcast(kindState, encodeMessage(m))
	}
}

func (c *Cluster) expireHolds(now time.Time) {
	var calls []handlerCall
	c.mu.Lock()
	c.holds.Sweep(now, func(user string) {
		calls = append(calls, handlerCall{op: opHold, user: user, held: false})
	})
	c.mu.Unlock()
	for _, call := range calls {
		c.logger.Info("cluster hold expired", "user", call.user)
	}
	c.disp.push(calls...)
}

// sweep expires old entries everywhere.
func (c *Cluster) sweep(now time.Time) {
	healthTTL := c.opts.healthTTL()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tabs.sweepLocal(&c.local, now, healthTTL)
	for name, p := range c.peers {
		c.tabs.sweepPeer(p, now, healthTTL)
		if !c.aliveLocked(name) && now.Sub(p.heard) > 3*c.tabs.tau {
			delete(c.peers, name)
		}
	}
	c.seen.expire(now, 0)
	i := 0
	for i < len(c.events) && now.Sub(c.events[i].at) > eventLogTTL {
		i++
	}
	c.events = slices.Delete(c.events, 0, i)
	for name, m := range c.members {
		if m.State != StateAlive && now.Sub(m.Since) > reconnectTimeout {
			delete(c.members, name)
		}
	}
	for name, t := range c.leaving {
		if now.Sub(t) > reconnectTimeout {
			delete(c.leaving, name)
		}
	}
}

// runJoiner is the goroutine that joins the seeds at start and afterwards
// reconnects: while alone it retries the seeds with backoff (0.5 s doubling
// to ReconnectInterval); otherwise, every ReconnectInterval, it retries
// failed members and seeds that are not members, which also merges two
// halves that formed separately.
func (c *Cluster) runJoiner() {
	defer c.wg.Done()
	backoff := 500 * time.Millisecond
	maxBackoff := c.opts.reconnectInterval()
	warned := false
	for {
		if c.hasLeft() {
			return // after Leave only Shutdown remains
		}
		alone := c.numAlive.Load() <= 1
		targets := c.joinTargets(alone)
		joined := 0
		for _, t := range targets {
			if c.isClosed() {
				return
			}
			n, err := c.ml.Join([]string{t})
			if err != nil {
				c.logger.Debug("cluster join failed", "peer", t, "err", err)
			}
			joined += n
		}
		switch {
		case joined > 0:
			c.logger.Info("cluster joined", "peers", joined, "members", c.numAlive.Load())
			warned = false
		case alone && len(targets) > 0 && !warned:
			c.logger.Warn("cluster alone: no peer reachable, retrying in the background", "peers", targets)
			warned = true
		}
		wait := maxBackoff
		if alone && joined == 0 {
			wait = backoff + rand.N(backoff/4+1)
			backoff = min(2*backoff, maxBackoff)
		} else if !alone {
			backoff = 500 * time.Millisecond
		}
		if !c.sleep(wait) {
			return
		}
	}
}

// joinTargets lists addresses to (re)join: seeds not currently alive
// members, and members that failed (not left) in the last 6 hours.
func (c *Cluster) joinTargets(alone bool) []string {
	var self netip.AddrPort
	if ln := c.ml.LocalNode(); ln != nil {
		if a, ok := netip.AddrFromSlice(ln.Addr); ok {
			self = netip.AddrPortFrom(a.Unmap(), ln.Port)
		}
	}
	c.mu.Lock()
	alive := make(map[netip.AddrPort]bool)
	var failed []string
	for _, m := range c.members {
		switch m.State {
		case StateAlive:
			alive[m.Addr] = true
		case StateDead:
			failed = append(failed, m.Name+"/"+m.Addr.String())
		}
	}
	c.mu.Unlock()
	var out []string
	for _, p := range c.opts.Peers {
		ap, err := netip.ParseAddrPort(p)
		if a, aerr := netip.ParseAddr(strings.Trim(p, "[]")); err != nil && aerr == nil {
			ap, err = netip.AddrPortFrom(a, self.Port()), nil // port defaults to ours
		}
		if err == nil {
			ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
			if ap == self || (alive[ap] && !alone) {
				continue
			}
		}
		out = append(out, p)
	}
	return append(out, failed...)
}

// requestSync asks runSyncer to push/pull with node name.
func (c *Cluster) requestSync(name string) {
	c.syncMu.Lock()
	if len(c.syncSet) < maxOrigins {
		c.syncSet[name] = true
	}
	c.syncMu.Unlock()
	select {
	case c.syncc <- struct{}{}:
	default:
	}
}

// runSyncer is the goroutine that pushes this node's sync payload (holds,
// recent invalidations, own full state) to nodes that just joined or came
// back, so their session counts, holds and missed invalidations converge
// without waiting for the periodic push/pull. Both sides of a join push
// to each other, over one TCP message each: unlike a memberlist push/pull
// this carries no membership list, so a node joining a large cluster costs
// each member one small message.
func (c *Cluster) runSyncer() {
	defer c.wg.Done()
	for {
		select {
		case <-c.donec:
			return
		case <-c.syncc:
		}
		c.syncMu.Lock()
		names := make([]string, 0, len(c.syncSet))
		for n := range c.syncSet {
			names = append(names, n)
		}
		clear(c.syncSet)
		c.syncMu.Unlock()
		for _, name := range names {
			if c.isClosed() {
				return
			}
			c.mu.Lock()
			m := c.members[name]
			var to *memberlist.Node
			if m != nil && m.State == StateAlive {
				to = &memberlist.Node{Name: name, Addr: net.IP(m.Addr.Addr().AsSlice()), Port: m.Addr.Port()}
			}
			c.mu.Unlock()
			if to == nil {
				continue
			}
			if err := c.ml.SendReliable(to, c.syncPayload()); err != nil {
				c.logger.Debug("cluster state push failed", "peer", name, "err", err)
				continue
			}
			c.stats.kind[kindSync].sentDirect.Add(1)
		}
	}
}

// delegate implements memberlist's Delegate and EventDelegate, keeping
// those methods off Cluster's API.
type delegate struct{ c *Cluster }

// NodeMeta implements memberlist.Delegate.
func (d *delegate) NodeMeta(limit int) []byte {
	if len(d.c.meta) > limit {
		return nil
	}
	return d.c.meta
}

// NotifyMsg implements memberlist.Delegate; b is only valid during the call.
func (d *delegate) NotifyMsg(b []byte) { d.c.receive(b) }

// GetBroadcasts implements memberlist.Delegate.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	out := d.c.urgent.GetBroadcasts(overhead, limit)
	for _, b := range out {
		limit -= overhead + len(b)
	}
	if limit > overhead {
		out = append(out, d.c.queue.GetBroadcasts(overhead, limit)...)
	}
	return out
}

// LocalState implements memberlist.Delegate: current holds, recent
// invalidations and this node's full state.
func (d *delegate) LocalState(join bool) []byte {
	d.c.stats.kind[kindSync].sentDirect.Add(1)
	return d.c.syncPayload()
}

// syncPayload encodes current holds, recent invalidations and this node's
// full state.
func (c *Cluster) syncPayload() []byte {
	now := time.Now()
	c.mu.Lock()
	p := &syncPayload{Holds: c.holds.Records(now)}
	for _, e := range c.events {
		m := *e.m
		m.Age = now.Sub(e.at)
		p.Events = append(p.Events, &m)
	}
	budget := maxSyncBytes / 2
	for _, h := range p.Holds {
		budget -= len(h.User) + len(h.Writer) + 24
	}
	snap := c.tabs.snapshot(&c.local, now, max(budget, 0))
	p.Snap = &message{Kind: kindState, Origin: c.name, Boot: c.boot, Seq: c.nextSeq(), State: snap}
	c.mu.Unlock()
	return encodeSync(p)
}

// MergeRemoteState implements memberlist.Delegate.
func (d *delegate) MergeRemoteState(b []byte, join bool) {
	if !d.c.isClosed() {
		d.c.mergeSync(b)
	}
}

// mergeSync applies another node's sync payload: its holds, its recent
// invalidations and its own full state.
func (c *Cluster) mergeSync(b []byte) {
	p, err := decodeSync(b)
	if err != nil {
		c.stats.garbled.Add(1)
		c.logger.Warn("cluster state exchange refused", "bytes", len(b), "err", err)
		return
	}
	c.stats.kind[kindSync].received.Add(1)
	now := time.Now()
	var calls []handlerCall
	c.mu.Lock()
	for i := range p.Holds {
		if _, changed, held := c.holds.Merge(&p.Holds[i], now); changed {
			calls = append(calls, handlerCall{op: opHold, user: p.Holds[i].User, held: held})
		}
	}
	if s := p.Snap; s != nil && s.Origin != c.name {
		c.applyPeerState(s, now)
	}
	c.mu.Unlock()
	c.disp.push(calls...)
	for _, m := range p.Events {
		if c.apply(m, now, true) {
			c.stats.kind[m.Kind].received.Add(1)
		}
	}
}

// NotifyJoin implements memberlist.EventDelegate. It runs with memberlist's
// node lock held: it must not call into memberlist.
func (d *delegate) NotifyJoin(n *memberlist.Node) {
	c := d.c
	now := time.Now()
	addr := nodeAddr(n)
	meta := decodeMeta(n.Meta)
	c.mu.Lock()
	m := c.members[n.Name]
	rejoin := m != nil
	if m == nil {
		m = &Member{Name: n.Name}
		c.members[n.Name] = m
	}
	*m = Member{Name: n.Name, Addr: addr, State: StateAlive, Since: now, Meta: meta, Local: n.Name == c.name}
	delete(c.leaving, n.Name)
	alive := c.countAliveLocked()
	c.mu.Unlock()
	c.numAlive.Store(int64(alive))
	if n.Name == c.name {
		return
	}
	if rejoin {
		c.logger.Info("cluster member back", "member", n.Name, "addr", addr, "members", alive)
	} else {
		c.logger.Info("cluster member joined", "member", n.Name, "addr", addr, "members", alive)
	}
	c.requestSync(n.Name)
}

// NotifyLeave implements memberlist.EventDelegate.
func (d *delegate) NotifyLeave(n *memberlist.Node) {
	c := d.c
	now := time.Now()
	c.mu.Lock()
	m := c.members[n.Name]
	if m == nil {
		m = &Member{Name: n.Name, Addr: nodeAddr(n)}
		c.members[n.Name] = m
	}
	m.State = StateDead
	if _, ok := c.leaving[n.Name]; ok || n.Name == c.name {
		m.State = StateLeft
	}
	m.Since = now
	if p := c.peers[n.Name]; p != nil {
		p.dropVolatile()
	}
	alive := c.countAliveLocked()
	state := m.State
	c.mu.Unlock()
	c.numAlive.Store(int64(alive))
	if state == StateLeft {
		c.logger.Info("cluster member left", "member", n.Name, "members", alive)
	} else {
		c.logger.Warn("cluster member failed", "member", n.Name, "addr", nodeAddr(n), "members", alive)
	}
}

// NotifyUpdate implements memberlist.EventDelegate.
func (d *delegate) NotifyUpdate(n *memberlist.Node) {
	c := d.c
	c.mu.Lock()
	if m := c.members[n.Name]; m != nil {
		m.Addr = nodeAddr(n)
		m.Meta = decodeMeta(n.Meta)
	}
	c.mu.Unlock()
}

func (c *Cluster) countAliveLocked() int {
	n := 0
	for _, m := range c.members {
		if m.State == StateAlive {
			n++
		}
	}
	return max(n, 1)
}

func nodeAddr(n *memberlist.Node) netip.AddrPort {
	a, _ := netip.AddrFromSlice(n.Addr)
	return netip.AddrPortFrom(a.Unmap(), n.Port)
}

// encodeMeta encodes Options.Meta for memberlist's node meta: the wire
// version, then key/value pairs sorted by key.
func encodeMeta(meta map[string]string) ([]byte, error) {
	var e encoder
	e.byte(wireVersion)
	keys := make([]string, 0, len(meta))
	for k := range meta {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	e.uvarint(uint64(len(keys)))
	for _, k := range keys {
		e.str(k)
		e.str(meta[k])
	}
	if len(e.b) > metaMaxSize {
		return nil, fmt.Errorf("cluster: meta is %d bytes encoded, limit %d", len(e.b), metaMaxSize)
	}
	return e.b, nil
}

func decodeMeta(b []byte) map[string]string {
	if len(b) == 0 || len(b) > metaMaxSize {
		return nil
	}
	d := decoder{b: b}
	if d.byte() != wireVersion {
		return nil
	}
	n := d.count(2)
	out := make(map[string]string, n)
	for i := 0; i < n && d.err == nil; i++ {
		k := d.str(metaMaxSize)
		out[k] = d.str(metaMaxSize)
	}
	if d.err != nil || len(d.b) != 0 {
		return nil
	}
	return out
}
