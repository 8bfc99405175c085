package cluster

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"net/netip"
	"reflect"
	"strings"
	"switchboard/internal/usertable"
	"testing"
	"time"
)

func sampleMessages() []*message {
	return []*message{
		{Kind: kindInvalidate, Origin: "n1", Boot: 1700000000000000000, Seq: 1, User: "alice@example.org", Kick: true},
		{Kind: kindInvalidate, Origin: "n2", Boot: 42, Seq: 1 << 40, User: "bob", Age: 90 * time.Second},
		{Kind: kindHold, Origin: "n3", Boot: 7, Seq: 9, Hold: holdRecord{User: "carol", Held: true, TTL: 10 * time.Minute, Lamport: 12, Writer: "n3"}},
		{Kind: kindLeave, Origin: "n4", Boot: 8, Seq: 3},
		{Kind: kindState, Origin: "n5", Boot: 9, Seq: 4, State: &stateRecord{
			Full:      true,
			Health:    []healthRecord{{"imap1", true}, {"imap2", false}},
			Sessions:  []sessionRecord{{"alice", "imap", 3}, {"bob", "pop3", 1}},
			IPFails:   []ipFailRecord{{netip.MustParseAddr("192.0.2.1"), 2.5}, {netip.MustParseAddr("2001:db8::1"), 1}},
			UserFails: []userFailRecord{{"mallory", 12}},
		}},
		{Kind: kindState, Origin: "n6", Boot: 9, Seq: 5, State: &stateRecord{}},
	}
}

func TestMessageRoundTrip(t *testing.T) {
	for _, m := range sampleMessages() {
		b := encodeMessage(m)
		got, err := decodeMessage(b)
		if err != nil {
			t.Fatalf("%s: %v", kindNames[m.Kind], err)
		}
		if !reflect.DeepEqual(normalize(got), normalize(m)) {
			t.Errorf("%s: round trip\n got %+v\nwant %+v", kindNames[m.Kind], got, m)
		}
	}
}

// normalize makes empty and nil slices compare equal.
func normalize(m *message) *message {
	c := *m
	if s := c.State; s != nil {
		s2 := *s
		for _, p := range []any{&s2.Health, &s2.Sessions, &s2.IPFails, &s2.UserFails} {
			v := reflect.ValueOf(p).Elem()
			if v.Len() == 0 {
				v.Set(reflect.Zero(v.Type()))
			}
		}
		c.State = &s2
	}
	return &c
}

func TestSyncRoundTrip(t *testing.T) {
	msgs := sampleMessages()
	p := &syncPayload{
		Holds:  []holdRecord{{User: "u", Held: false, TTL: time.Minute, Lamport: 3, Writer: "n1"}},
		Events: []*message{msgs[0], msgs[1]},
		Snap:   msgs[4],
	}
	got, err := decodeSync(encodeSync(p))
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Holds) != 1 || got.Holds[0] != p.Holds[0] || len(got.Events) != 2 || got.Snap == nil ||
		!reflect.DeepEqual(normalize(got.Snap), normalize(p.Snap)) || got.Events[1].Age != 90*time.Second {
		t.Errorf("sync round trip: %+v", got)
	}
	empty, err := decodeSync(encodeSync(&syncPayload{}))
	if err != nil || empty.Snap != nil || len(empty.Events) != 0 {
		t.Errorf("empty sync: %+v, %v", empty, err)
	}
	// A state message is not an acceptable event.
	bad := &syncPayload{Events: []*message{msgs[4]}}
	if _, err := decodeSync(encodeSync(bad)); !errors.Is(err, errGarbled) {
		t.Errorf("state as event: %v", err)
	}
}

func TestLargestEventFitsGossip(t *testing.T) {
	name := strings.Repeat("n", maxNameLen)
	user := strings.Repeat("u", maxUserLen)
	for _, m := range []*message{
		{Kind: kindInvalidate, Origin: name, Boot: math.MaxUint64, Seq: math.MaxUint64, User: user, Kick: true, Age: time.Duration(maxAgeMillis) * time.Millisecond},
		{Kind: kindHold, Origin: name, Boot: math.MaxUint64, Seq: math.MaxUint64, Hold: holdRecord{User: user, Held: true, TTL: usertable.MaxHoldTTL, Lamport: math.MaxUint64, Writer: name}},
	} {
		if n := len(encodeMessage(m)); n > minBroadcast {
			t.Errorf("largest %s is %d bytes, over %d", kindNames[m.Kind], n, minBroadcast)
		}
	}
}

func TestDecodeRefuses(t *testing.T) {
	inv := encodeMessage(sampleMessages()[0])
	state := encodeMessage(sampleMessages()[4])
	withByte := func(b []byte, i int, v byte) []byte {
		c := bytes.Clone(b)
		c[i] = v
		return c
	}
	// A state message claiming 2^40 health entries.
	var e encoder
	e.header(kindState, "n", 1, 1)
	e.byte(0)
	e.uvarint(1 << 40)
	hugeCount := e.b
	// A score that is NaN.
	var e2 encoder
	e2.header(kindState, "n", 1, 1)
	e2.byte(0)
	e2.uvarint(0)
	e2.uvarint(0)
	e2.uvarint(1)
	e2.bytes([]byte{192, 0, 2, 1})
	e2.b = binary.BigEndian.AppendUint32(e2.b, math.Float32bits(float32(math.NaN())))
	e2.uvarint(0)
	nanScore := e2.b

	cases := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"one byte", []byte{1}},
		{"bad version", withByte(inv, 0, 9)},
		{"unknown kind", withByte(inv, 1, 99)},
		{"truncated", inv[:len(inv)-1]},
		{"trailing", append(bytes.Clone(inv), 0)},
		{"truncated state", state[:len(state)-3]},
		{"huge count", hugeCount},
		{"nan score", nanScore},
		{"oversized", append(bytes.Clone(inv), make([]byte, maxMsgBytes)...)},
		{"user too long", encodeMessage(&message{Kind: kindInvalidate, Origin: "n", Boot: 1, Seq: 1, User: strings.Repeat("x", maxUserLen+1)})},
		{"empty origin", encodeMessage(&message{Kind: kindLeave, Boot: 1, Seq: 1})},
		{"bad flags", withByte(inv, len(inv)-2, 0x80)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if m, err := decodeMessage(tc.b); err == nil {
				t.Errorf("decoded %+v", m)
			} else if !errors.Is(err, errGarbled) {
				t.Errorf("error %v is not errGarbled", err)
			}
		})
	}
}

// FuzzDecode checks that no input makes the decoders panic or allocate
// wildly, and that whatever decodes re-encodes to something that decodes
// to the same message.
func FuzzDecode(f *testing.F) {
	for _, m := range sampleMessages() {
		f.Add(encodeMessage(m))
	}
	msgs := sampleMessages()
	f.Add(encodeSync(&syncPayload{Holds: []holdRecord{msgs[2].Hold}, Events: msgs[:2], Snap: msgs[4]}))
	f.Add([]byte{1, 3, 1, 'n', 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, err := decodeMessage(b); err == nil {
			again, err := decodeMessage(encodeMessage(m))
			if err != nil {
				t.Fatalf("re-encoded message does not decode: %v", err)
			}
			if !reflect.DeepEqual(normalize(again), normalize(m)) {
				t.Fatalf("round trip differs:\n%+v\n%+v", again, m)
			}
		}
		if p, err := decodeSync(b); err == nil {
			if _, err := decodeSync(encodeSync(p)); err != nil {
				t.Fatalf("re-encoded sync does not decode: %v", err)
			}
		}
		decodeMeta(b)
	})
}

func TestMetaCodec(t *testing.T) {
	in := map[string]string{"version": "1.0", "imap": "10.0.0.1:143", "": ""}
	b, err := encodeMeta(in)
	if err != nil {
		t.Fatal(err)
	}
	if got := decodeMeta(b); !reflect.DeepEqual(got, in) {
		t.Errorf("meta round trip: %v", got)
	}
	if decodeMeta([]byte{1, 5, 1}) != nil || decodeMeta(append(b, 0)) != nil {
		t.Error("garbled meta decoded")
	}
}
