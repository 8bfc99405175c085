package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"switchboard/internal/usertable"
	"time"
)

// Wire format, version 1. Every message starts with a version byte and a kind
// byte. Integers are unsigned varints unless noted, strings are a varint
// length followed by the bytes. All lengths and counts are checked against
// fixed limits and against the bytes left before anything is allocated, so a
// garbled or hostile message costs at most its own size.
//
//	header  = version(1) kind(1) origin:str boot:u64be seq
//	invalidate = header user:str flags(1, bit0 kick) ageMs
//	hold    = header holdRecord
//	holdRecord = user:str held(1) ttlMs lamport writer:str
//	state   = header flags(1, bit0 full)
//	          nHealth {backend:str up(1)}
//	          nSessions {user:str proto:str count}
//	          nIPFails {ip:str(4|16 bytes) score:f32be}
//	          nUserFails {user:str score:f32be}
//	leave   = header
//	sync    = version(1) kindSync nHolds {holdRecord} nEvents {event:bytes} snapshot:bytes
//
// A sync message is the push/pull payload (memberlist LocalState); it carries
// whole encoded invalidate/hold events and the sender's full state message.
const (
	wireVersion = 1

	kindInvalidate byte = 1
	kindHold       byte = 2
	kindState      byte = 3
	kindLeave      byte = 4
	kindSync       byte = 5
	numKinds            = 6

	flagKick byte = 1 << 0 // invalidate: also close live sessions
	flagFull byte = 1 << 0 // state: complete snapshot of the origin's state
)

// Limits on what a message may carry.
const (
	maxNameLen    = 128                   // node and backend names
	maxUserLen    = 255                   // user names (longer counter keys are truncated)
	maxProtoLen   = 16                    // "imap", "pop3"
	maxCount      = usertable.MaxSessions // a session count
	maxScore      = 1e9                   // a failure score
	maxTTLMillis  = uint64(7 * 24 * time.Hour / time.Millisecond)
	maxAgeMillis  = uint64(24 * time.Hour / time.Millisecond)
	maxMsgBytes   = 64 << 10 // any single gossip or direct message
	maxSyncBytes  = 16 << 20 // a push/pull payload
	maxBroadcast  = 1024     // target size of one gossip broadcast (fits a 1300 B packet)
	minBroadcast  = 600      // smallest room per gossip message New accepts; fits any event
	maxSyncEvents = 1024     // event log entries carried in a sync
)

var kindNames = [numKinds]string{"unknown", "invalidate", "hold", "state", "leave", "sync"}

var errGarbled = errors.New("cluster: garbled message")

// holdRecord is one user's hold state: TTL is its remaining lifetime at
// encoding time, Writer the node that set it (the tie-breaker for equal
// Lamport times). usertable.Holds has the merge rule.
type holdRecord = usertable.HoldRecord

type healthRecord struct {
	Backend string
	Up      bool
}

type sessionRecord struct {
	User, Proto string
	Count       int
}

type ipFailRecord struct {
	IP    netip.Addr
	Score float64
}

type userFailRecord struct {
	User  string
	Score float64
}

// stateRecord is a delta (or with Full, a snapshot) of one node's own state.
type stateRecord struct {
	Full      bool
	Health    []healthRecord
	Sessions  []sessionRecord
	IPFails   []ipFailRecord
	UserFails []userFailRecord
}

// message is any decoded message except sync.
type message struct {
	Kind   byte
	Origin string
	Boot   uint64
	Seq    uint64

	// invalidate
	User string
	Kick bool
	Age  time.Duration

	Hold  holdRecord   // hold
	State *stateRecord // state
}

// syncPayload is the push/pull payload.
type syncPayload struct {
	Holds  []holdRecord
	Events []*message
	Snap   *message // the sender's full state; may be nil
}

// encoder appends to a byte slice.
type encoder struct{ b []byte }

func (e *encoder) byte(v byte)      { e.b = append(e.b, v) }
func (e *encoder) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) u64(v uint64)     { e.b = binary.BigEndian.AppendUint64(e.b, v) }
func (e *encoder) f32(v float64) {
	e.b = binary.BigEndian.AppendUint32(e.b, math.Float32bits(float32(min(max(v, 0), maxScore))))
}
func (e *encoder) str(s string)           { e.uvarint(uint64(len(s))); e.b = append(e.b, s...) }
func (e *encoder) bytes(p []byte)         { e.uvarint(uint64(len(p))); e.b = append(e.b, p...) }
func (e *encoder) bool(v bool)            { e.byte(boolByte(v)) }
func (e *encoder) millis(d time.Duration) { e.uvarint(uint64(max(d, 0) / time.Millisecond)) }

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// decoder reads from a byte slice; the first error sticks and later reads
// return zero values, so callers check err once at the end (like go-imap's
// Decoder).
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: "+format, append([]any{errGarbled}, args...)...)
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail("short")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint(limit uint64) uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	if v > limit {
		d.fail("value %d over limit %d", v, limit)
		return 0
	}
	return v
}

func (d *decoder) u64() uint64 {
	if len(d.b) < 8 {
		d.fail("short")
		return 0
	}
	v := binary.BigEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *decoder) f32() float64 {
	if len(d.b) < 4 {
		d.fail("short")
		return 0
	}
	v := float64(math.Float32frombits(binary.BigEndian.Uint32(d.b)))
	d.b = d.b[4:]
	if math.IsNaN(v) || v < 0 || v > maxScore {
		d.fail("bad score")
		return 0
	}
	return v
}

func (d *decoder) raw(limit int) []byte {
	n := d.uvarint(uint64(limit))
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail("length %d beyond end", n)
		return nil
	}
	p := d.b[:n:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) str(limit int) string { return string(d.raw(limit)) }

// nonEmpty reads a string that must not be empty.
func (d *decoder) name(limit int) string {
	s := d.str(limit)
	if s == "" && d.err == nil {
		d.fail("empty name")
	}
	return s
}

func (d *decoder) bool() bool {
	switch d.byte() {
	case 0:
		return false
	case 1:
		return true
	}
	d.fail("bad bool")
	return false
}

func (d *decoder) millis(limit uint64) time.Duration {
	return time.Duration(d.uvarint(limit)) * time.Millisecond
}

// count reads an entry count; each entry takes at least minSize bytes, so a
// count larger than what is left is garbage and is refused before any
// allocation.
func (d *decoder) count(minSize int) int {
	n := d.uvarint(uint64(len(d.b) / minSize))
	return int(n)
}

func (e *encoder) header(kind byte, origin string, boot, seq uint64) {
	e.byte(wireVersion)
	e.byte(kind)
	e.str(origin)
	e.u64(boot)
	e.uvarint(seq)
}

func (e *encoder) holdRecord(h *holdRecord) {
	e.str(h.User)
	e.bool(h.Held)
	e.millis(h.TTL)
	e.uvarint(h.Lamport)
	e.str(h.Writer)
}

func (d *decoder) holdRecord() holdRecord {
	var h holdRecord
	h.User = d.name(maxUserLen)
	h.Held = d.bool()
	h.TTL = d.millis(maxTTLMillis)
	h.Lamport = d.uvarint(math.MaxUint64)
	h.Writer = d.name(maxNameLen)
	return h
}

// encodeMessage encodes m; it never fails for messages built by this package.
func encodeMessage(m *message) []byte {
	var e encoder
	e.header(m.Kind, m.Origin, m.Boot, m.Seq)
	switch m.Kind {
	case kindInvalidate:
		e.str(m.User)
		var flags byte
		if m.Kick {
			flags |= flagKick
		}
		e.byte(flags)
		e.millis(m.Age)
	case kindHold:
		e.holdRecord(&m.Hold)
	case kindState:
		encodeState(&e, m.State)
	case kindLeave:
	default:
		panic(fmt.Sprintf("cluster: encode of kind %d", m.Kind))
	}
	return e.b
}

func encodeState(e *encoder, s *stateRecord) {
	var flags byte
	if s.Full {
		flags |= flagFull
	}
	e.byte(flags)
	e.uvarint(uint64(len(s.Health)))
	for _, h := range s.Health {
		e.str(h.Backend)
		e.bool(h.Up)
	}
	e.uvarint(uint64(len(s.Sessions)))
	for _, r := range s.Sessions {
		e.str(r.User)
		e.str(r.Proto)
		e.uvarint(uint64(r.Count))
	}
	e.uvarint(uint64(len(s.IPFails)))
	for _, r := range s.IPFails {
		e.bytes(r.IP.AsSlice())
		e.f32(r.Score)
	}
	e.uvarint(uint64(len(s.UserFails)))
	for _, r := range s.UserFails {
		e.str(r.User)
		e.f32(r.Score)
	}
}

// decodeMessage decodes one non-sync message. It never panics; anything that
// does not parse exactly (including trailing bytes) is an error.
func decodeMessage(b []byte) (*message, error) {
	if len(b) > maxMsgBytes {
		return nil, fmt.Errorf("%w: %d bytes", errGarbled, len(b))
	}
	d := decoder{b: b}
	m := decodeMessageFrom(&d)
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return nil, d.err
	}
	return m, nil
}

func decodeMessageFrom(d *decoder) *message {
	if v := d.byte(); v != wireVersion && d.err == nil {
		d.fail("version %d", v)
	}
	m := &message{Kind: d.byte()}
	m.Origin = d.name(maxNameLen)
	m.Boot = d.u64()
	m.Seq = d.uvarint(math.MaxUint64)
	if d.err != nil {
		return nil
	}
	switch m.Kind {
	case kindInvalidate:
		m.User = d.name(maxUserLen)
		flags := d.byte()
		if flags&^flagKick != 0 {
			d.fail("flags %#x", flags)
		}
		m.Kick = flags&flagKick != 0
		m.Age = d.millis(maxAgeMillis)
	case kindHold:
		m.Hold = d.holdRecord()
	case kindState:
		m.State = decodeState(d)
	case kindLeave:
	default:
		d.fail("kind %d", m.Kind)
	}
	if d.err != nil {
		return nil
	}
	return m
}

func decodeState(d *decoder) *stateRecord {
	s := &stateRecord{}
	flags := d.byte()
	if flags&^flagFull != 0 {
		d.fail("flags %#x", flags)
	}
	s.Full = flags&flagFull != 0
	n := d.count(2)
	for i := 0; i < n && d.err == nil; i++ {
		s.Health = append(s.Health, healthRecord{Backend: d.name(maxNameLen), Up: d.bool()})
	}
	n = d.count(3)
	for i := 0; i < n && d.err == nil; i++ {
		s.Sessions = append(s.Sessions, sessionRecord{
			User:  d.name(maxUserLen),
			Proto: d.name(maxProtoLen),
			Count: int(d.uvarint(maxCount)),
		})
	}
	n = d.count(9)
	for i := 0; i < n && d.err == nil; i++ {
		raw := d.raw(16)
		ip, ok := netip.AddrFromSlice(raw)
		if !ok && d.err == nil {
			d.fail("bad ip length %d", len(raw))
		}
		s.IPFails = append(s.IPFails, ipFailRecord{IP: ip, Score: d.f32()})
	}
	n = d.count(6)
	for i := 0; i < n && d.err == nil; i++ {
		s.UserFails = append(s.UserFails, userFailRecord{User: d.name(maxUserLen), Score: d.f32()})
	}
	if d.err != nil {
		return nil
	}
	return s
}

func encodeSync(p *syncPayload) []byte {
	var e encoder
	e.byte(wireVersion)
	e.byte(kindSync)
	e.uvarint(uint64(len(p.Holds)))
	for i := range p.Holds {
		e.holdRecord(&p.Holds[i])
	}
	e.uvarint(uint64(len(p.Events)))
	for _, m := range p.Events {
		e.bytes(encodeMessage(m))
	}
	if p.Snap != nil {
		e.bytes(encodeMessage(p.Snap))
	} else {
		e.bytes(nil)
	}
	return e.b
}

func decodeSync(b []byte) (*syncPayload, error) {
	if len(b) > maxSyncBytes {
		return nil, fmt.Errorf("%w: sync of %d bytes", errGarbled, len(b))
	}
	d := decoder{b: b}
	if v := d.byte(); v != wireVersion {
		d.fail("version %d", v)
	}
	if k := d.byte(); k != kindSync && d.err == nil {
		d.fail("kind %d is not sync", k)
	}
	p := &syncPayload{}
	n := d.count(7)
	for i := 0; i < n && d.err == nil; i++ {
		p.Holds = append(p.Holds, d.holdRecord())
	}
	n = d.count(14)
	if n > maxSyncEvents {
		d.fail("%d events", n)
	}
	for i := 0; i < n && d.err == nil; i++ {
		raw := d.raw(maxMsgBytes)
		if d.err != nil {
			break
		}
		m, err := decodeMessage(raw)
		switch {
		case err != nil:
			d.err = err
		case m.Kind != kindInvalidate && m.Kind != kindHold:
			d.fail("event of kind %d", m.Kind)
		default:
			p.Events = append(p.Events, m)
		}
	}
	if raw := d.raw(maxSyncBytes); d.err == nil && len(raw) > 0 {
		var sd decoder
		sd.b = raw
		m := decodeMessageFrom(&sd)
		switch {
		case sd.err != nil:
			d.err = sd.err
		case len(sd.b) != 0:
			d.fail("trailing bytes in snapshot")
		case m.Kind != kindState:
			d.fail("snapshot of kind %d", m.Kind)
		default:
			p.Snap = m
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return nil, d.err
	}
	return p, nil
}

// messageKind returns the kind byte of an encoded message, for statistics of
// messages that fail to decode.
func messageKind(b []byte) byte {
	if len(b) < 2 || b[1] >= numKinds {
		return 0
	}
	return b[1]
}
