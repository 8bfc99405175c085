package cluster

import (
	"net/netip"
	"time"

	"switchboard/internal/decay"
	"switchboard/internal/usertable"
)

// Each node is the only writer of its own state: backend health as its
// checker sees it, its live session counts per (user, protocol), and its
// login failure scores per IP and per user. It gossips changes every
// StateInterval as absolute values ("alice/imap is now 2 here"), never as
// increments, so a duplicated or reordered message cannot skew a count.
// Every value carries the sequence number of the message that brought it;
// an older message never overwrites a newer value. A full snapshot travels
// in every push/pull and replaces what the receiver had from that node,
// which repairs any delta lost on the way.
//
// Cluster-wide figures are sums over this node and the peers currently
// alive. A peer's sessions and health are dropped when it fails or leaves
// (its sessions died with it, or cannot be checked); its failure scores
// stay and decay, since the attempts happened.

// zeroTTL is how long a zero session count is kept as a tombstone against
// reordered older values.
const zeroTTL = time.Minute

// minScore is the decayed failure score below which a peer's entry is
// dropped; this node's own table forgets at the same score.
const minScore = usertable.DefaultForgetBelow

type sessKey = usertable.SessionKey

type localHealth struct {
	up bool
	at time.Time // last SetBackendHealth
}

// localState is this node's own state: the counts every node keeps alike
// (usertable), backend health, and what changed since the last gossip.
// The Cluster's mutex guards it.
type localState struct {
	table  *usertable.Table
	health map[string]localHealth

	dirtySess   map[sessKey]struct{}
	dirtyIP     map[netip.Addr]struct{}
	dirtyUser   map[string]struct{}
	dirtyHealth bool
	lastHealth  time.Time // last time all health was sent
}

func newLocalState(opts *usertable.Options) localState {
	return localState{
		table:     usertable.New(opts),
		health:    make(map[string]localHealth),
		dirtySess: make(map[sessKey]struct{}),
		dirtyIP:   make(map[netip.Addr]struct{}),
		dirtyUser: make(map[string]struct{}),
	}
}

type remoteCount struct {
	n   int
	ver uint64
	at  time.Time
}

type remoteHealth struct {
	up  bool
	ver uint64
	at  time.Time
}

type remoteScore struct {
	decay.Count
	ver uint64
}

// peerState is what this node knows of another node's own state.
type peerState struct {
	boot      uint64
	floor     uint64 // seq of the newest full snapshot applied; older deltas are void
	heard     time.Time
	sessions  map[sessKey]remoteCount
	health    map[string]remoteHealth
	ipFails   map[netip.Addr]remoteScore
	userFails map[string]remoteScore
}

func newPeerState(boot uint64) *peerState {
	return &peerState{
		boot:      boot,
		sessions:  make(map[sessKey]remoteCount),
		health:    make(map[string]remoteHealth),
		ipFails:   make(map[netip.Addr]remoteScore),
		userFails: make(map[string]remoteScore),
	}
}

// dropVolatile forgets sessions and health, when the peer fails or leaves.
func (p *peerState) dropVolatile() {
	clear(p.sessions)
	clear(p.health)
}

// tables bundles the limits applying to state tables.
type tables struct {
	max int           // MaxEntries
	tau time.Duration // FailureWindow
	// dropped counts entries refused or evicted because a table was full.
	dropped uint64
}

// putScore sets m[k] under the table limit, evicting a low entry if needed.
func putScore[K comparable](t *tables, m map[K]remoteScore, k K, v remoteScore, now time.Time) {
	if _, ok := m[k]; !ok && len(m) >= t.max {
		usertable.EvictLowest(m, func(s remoteScore) float64 { return s.Value(now, t.tau) })
		t.dropped++
	}
	m[k] = v
}

// applyState merges a state message from p's node carrying sequence seq.
func (t *tables) applyState(p *peerState, s *stateRecord, seq uint64, now time.Time) {
	if seq <= p.floor {
		return
	}
	p.heard = now
	if s.Full {
		p.floor = seq
		// Keep only values newer than the snapshot; the snapshot replaces
		// the rest.
		keepNewer(p.sessions, seq, func(v remoteCount) uint64 { return v.ver })
		keepNewer(p.health, seq, func(v remoteHealth) uint64 { return v.ver })
		keepNewer(p.ipFails, seq, func(v remoteScore) uint64 { return v.ver })
		keepNewer(p.userFails, seq, func(v remoteScore) uint64 { return v.ver })
	}
	for _, h := range s.Health {
		if cur, ok := p.health[h.Backend]; ok && cur.ver > seq {
			continue
		}
		if _, ok := p.health[h.Backend]; !ok && len(p.health) >= t.max {
			t.dropped++
			continue
		}
		p.health[h.Backend] = remoteHealth{up: h.Up, ver: seq, at: now}
	}
	for _, r := range s.Sessions {
		k := sessKey{User: r.User, Proto: r.Proto}
		cur, ok := p.sessions[k]
		if ok && cur.ver > seq {
			continue
		}
		if !ok && len(p.sessions) >= t.max {
			t.dropped++
			continue
		}
		p.sessions[k] = remoteCount{n: r.Count, ver: seq, at: now}
	}
	for _, r := range s.IPFails {
		if cur, ok := p.ipFails[r.IP]; ok && cur.ver > seq {
			continue
		}
		putScore(t, p.ipFails, r.IP, remoteScore{decay.Count{Score: r.Score, At: now}, seq}, now)
	}
	for _, r := range s.UserFails {
		if cur, ok := p.userFails[r.User]; ok && cur.ver > seq {
			continue
		}
		putScore(t, p.userFails, r.User, remoteScore{decay.Count{Score: r.Score, At: now}, seq}, now)
	}
}

func keepNewer[K comparable, V any](m map[K]V, seq uint64, ver func(V) uint64) {
	for k, v := range m {
		if ver(v) <= seq {
			delete(m, k)
		}
	}
}

// sweepPeer drops tombstones, decayed scores and expired health.
func (t *tables) sweepPeer(p *peerState, now time.Time, healthTTL time.Duration) {
	for k, v := range p.sessions {
		if v.n == 0 && now.Sub(v.at) > zeroTTL {
			delete(p.sessions, k)
		}
	}
	for k, v := range p.health {
		if now.Sub(v.at) > healthTTL {
			delete(p.health, k)
		}
	}
	for k, v := range p.ipFails {
		if v.Value(now, t.tau) < minScore {
			delete(p.ipFails, k)
		}
	}
	for k, v := range p.userFails {
		if v.Value(now, t.tau) < minScore {
			delete(p.userFails, k)
		}
	}
}

// sweepLocal drops decayed local failure scores and stale health reports.
func (t *tables) sweepLocal(l *localState, now time.Time, healthTTL time.Duration) {
	l.table.Sweep(now)
	for k, v := range l.health {
		if now.Sub(v.at) > healthTTL {
			delete(l.health, k)
			l.dirtyHealth = true
		}
	}
}

// chunker splits state records into messages of about maxBroadcast bytes.
type chunker struct {
	limit    int // message size
	overhead int // header size estimate
	size     int
	cur      *stateRecord
	out      []*stateRecord
}

func newChunker(origin string, limit int) *chunker {
	// version, kind, origin, boot, seq, flags, four counts.
	return &chunker{limit: limit, overhead: 2 + 2 + len(origin) + 8 + 10 + 1 + 4*3}
}

func (c *chunker) room(n int) *stateRecord {
	if c.cur == nil || c.size+n > c.limit {
		c.cur = &stateRecord{}
		c.out = append(c.out, c.cur)
		c.size = c.overhead
	}
	c.size += n
	return c.cur
}

func (c *chunker) health(r healthRecord) {
	s := c.room(len(r.Backend) + 3)
	s.Health = append(s.Health, r)
}

func (c *chunker) session(r sessionRecord) {
	s := c.room(len(r.User) + len(r.Proto) + 8)
	s.Sessions = append(s.Sessions, r)
}

func (c *chunker) ipFail(r ipFailRecord) {
	s := c.room(1 + 16 + 4)
	s.IPFails = append(s.IPFails, r)
}

func (c *chunker) userFail(r userFailRecord) {
	s := c.room(len(r.User) + 2 + 4)
	s.UserFails = append(s.UserFails, r)
}

// deltas collects this node's changes since the last call, in messages of
// at most limit bytes. All health is included every refresh.
func (t *tables) deltas(l *localState, origin string, now time.Time, refresh time.Duration, limit int) []*stateRecord {
	ch := newChunker(origin, limit)
	if l.dirtyHealth || now.Sub(l.lastHealth) >= refresh {
		for b, h := range l.health {
			ch.health(healthRecord{Backend: b, Up: h.up})
		}
		l.dirtyHealth = false
		l.lastHealth = now
	}
	for k := range l.dirtySess {
		ch.session(sessionRecord{User: k.User, Proto: k.Proto, Count: l.table.Sessions(k)})
	}
	clear(l.dirtySess)
	for ip := range l.dirtyIP {
		ch.ipFail(ipFailRecord{IP: ip, Score: l.table.IPScore(ip, now)})
	}
	clear(l.dirtyIP)
	for u := range l.dirtyUser {
		ch.userFail(userFailRecord{User: u, Score: l.table.UserScore(u, now)})
	}
	clear(l.dirtyUser)
	return ch.out
}

// snapshot returns this node's full state, within about budget bytes. If
// the budget runs out the snapshot is marked partial (not Full), so
// receivers merge it instead of replacing.
func (t *tables) snapshot(l *localState, now time.Time, budget int) *stateRecord {
	s := &stateRecord{Full: true}
	size := 0
	fits := func(n int) bool {
		if size+n > budget {
			s.Full = false
			return false
		}
		size += n
		return true
	}
	for b, h := range l.health {
		if fits(len(b) + 3) {
			s.Health = append(s.Health, healthRecord{Backend: b, Up: h.up})
		}
	}
	l.table.EachSession(func(k sessKey, n int) {
		if fits(len(k.User) + len(k.Proto) + 8) {
			s.Sessions = append(s.Sessions, sessionRecord{User: k.User, Proto: k.Proto, Count: n})
		}
	})
	l.table.EachIPScore(now, func(ip netip.Addr, v float64) {
		if fits(21) {
			s.IPFails = append(s.IPFails, ipFailRecord{IP: ip, Score: v})
		}
	})
	l.table.EachUserScore(now, func(u string, v float64) {
		if fits(len(u) + 6) {
			s.UserFails = append(s.UserFails, userFailRecord{User: u, Score: v})
		}
	})
	return s
}

// truncUser shortens a counter key to maxUserLen bytes.
func truncUser(s string) string {
	if len(s) > maxUserLen {
		return s[:maxUserLen]
	}
	return s
}

func truncProto(s string) string {
	if len(s) > maxProtoLen {
		return s[:maxProtoLen]
	}
	return s
}
