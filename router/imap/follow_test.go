package imap

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// ev is one read in a transcript: from the client (c) or the backend.
type ev struct {
	client bool
	data   string
}

func C(s string) ev { return ev{true, s} }
func S(s string) ev { return ev{false, s} }

// result is what a router learns from a follower.
type result struct {
	out          string // client bytes forwarded to the backend
	logout       bool
	tag          string
	needUnselect bool
	reason       string
	ok           bool
}

// follow feeds events to a new Follower, each cut where split says.
func follow(events []ev, split func(i int, data string) []string) result {
	var f Follower
	var r result
	var out []byte
	for i, e := range events {
		for _, chunk := range split(i, e.data) {
			if e.client {
				var lo bool
				out, lo = f.Client(out, []byte(chunk))
				r.logout = r.logout || lo
			} else {
				f.Server([]byte(chunk))
			}
		}
	}
	r.out = string(out)
	r.tag = f.LogoutTag()
	r.needUnselect, r.reason, r.ok = f.Parkable()
	return r
}

func whole(_ int, data string) []string { return []string{data} }

func bytewise(_ int, data string) []string {
	var s []string
	for i := range len(data) {
		s = append(s, data[i:i+1])
	}
	return s
}

// literal returns "{n}\r\n" and s.
func literal(s string) string { return fmt.Sprintf("{%d}\r\n%s", len(s), s) }

// A header that holds what would be a tagged completion, a BYE and a
// literal marker if it were read as lines.
var trap = "Subject: hi\r\nA0006 OK fake\r\n* BYE fake\r\nX: {9}\r\n\r\n"

// roundcube is a session as Roundcube's rcube_imap_generic runs one after
// its login, up to and including its LOGOUT.
func roundcube(beforeLogout ...ev) []ev {
	evs := []ev{
		C("A0002 CAPABILITY\r\n"),
		S("* CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES MULTIAPPEND UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY SPECIAL-USE\r\nA0002 OK Capability completed.\r\n"),
		C(`A0003 ID ("name" "Roundcube" "version" "1.6.0" "php" "8.2" "os" "Linux" "command" "/?_task=mail&_action=list{1}")` + "\r\n"),
		S(`* ID ("name" "Dovecot")` + "\r\nA0003 OK ID completed.\r\n"),
		C(`A0004 LIST (SUBSCRIBED) "" "*" RETURN (SPECIAL-USE)` + "\r\n"),
		S(`* LIST (\HasNoChildren \Subscribed) "/" INBOX` + "\r\n" +
			`* LIST (\HasNoChildren \Subscribed \Sent) "/" ` + literal("Sent {3}") + "\r\n" +
			`* LIST (\HasNoChildren) "/" "Odd \" {2}"` + "\r\n" +
			"A0004 OK List completed (0.001 + 0.000 secs).\r\n"),
		C("A0005 SELECT INBOX\r\n"),
		S("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted.\r\n* 2 EXISTS\r\n* 0 RECENT\r\n* OK [UIDVALIDITY 1700000000] UIDs valid\r\n* OK [UIDNEXT 3] Predicted next UID {5}\r\nA0005 OK [READ-WRITE] Select completed (0.001 + 0.000 secs).\r\n"),
		C("A0006 UID FETCH 1:2 (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (DATE FROM SUBJECT)])\r\n"),
		S("* 1 FETCH (UID 1 RFC822.SIZE 120 FLAGS (\\Seen) BODY[HEADER.FIELDS (DATE FROM SUBJECT)] " + literal(trap) + ")\r\n" +
			"* 2 FETCH (UID 2 RFC822.SIZE 99 FLAGS () BODY[HEADER.FIELDS (DATE FROM SUBJECT)] " + literal("Subject: {x}\r\n\r\n") + ")\r\n" +
			"A0006 OK Fetch completed (0.001 + 0.000 secs).\r\n"),
		C("A0007 UID FETCH 2 (BODY.PEEK[] BODYSTRUCTURE)\r\n"),
		S(`* 2 FETCH (UID 2 BODYSTRUCTURE ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 8 1 NIL NIL NIL NIL) BODY[] ` + literal("A0007 BAD not me\r\n") + ")\r\nA0007 OK Fetch completed.\r\n"),
		C("A0008 UID STORE 2 +FLAGS.SILENT (\\Seen)\r\nA0009 STATUS Sent (MESSAGES UNSEEN)\r\n"),
		S("A0008 OK Store completed.\r\n* STATUS Sent (MESSAGES 1 UNSEEN 0)\r\nA0009 OK Status completed.\r\n"),
	}
	evs = append(evs, beforeLogout...)
	return append(evs, C("A0099 LOGOUT\r\n"))
}

// clientBytes is what the client sent, LOGOUT line excluded.
func clientBytes(evs []ev) string {
	var b strings.Builder
	for _, e := range evs {
		if e.client {
			b.WriteString(e.data)
		}
	}
	return strings.TrimSuffix(b.String(), "A0099 LOGOUT\r\n")
}

func TestFollowerParkable(t *testing.T) {
	tests := []struct {
		name         string
		events       []ev
		needUnselect bool
	}{
		{"selected at logout", roundcube(), true},
		{"unselected", roundcube(C("A0010 UNSELECT\r\n"), S("A0010 OK Unselect completed.\r\n")), false},
		{"closed by the client", roundcube(C("A0010 CLOSE\r\n"), S("A0010 OK Close completed.\r\n")), false},
		{"failed select unselects", roundcube(C("A0010 SELECT Nope\r\n"), S("A0010 NO [NONEXISTENT] Mailbox doesn't exist: Nope\r\n")), false},
		{"failed unselect keeps it", roundcube(C("A0010 UNSELECT\r\n"), S("A0010 NO no\r\n")), true},
		{"examine", roundcube(C("A0010 UNSELECT\r\n"), S("A0010 OK\r\n"), C("A0011 EXAMINE Sent\r\n"), S("A0011 OK [READ-ONLY] Examine completed.\r\n")), true},
		{"nothing selected", []ev{C("a NOOP\r\n"), S("a OK NOOP completed.\r\n"), C("A0099 LOGOUT\r\n")}, false},
		{"idle ended with done", roundcube(C("A0010 IDLE\r\n"), S("+ idling\r\n* 3 EXISTS\r\n"), C("DONE\r\n"), S("A0010 OK Idle completed.\r\n")), true},
		{"idle refused", roundcube(C("A0010 IDLE\r\n"), S("A0010 NO not now\r\n")), true},
		{"append with literals", roundcube(
			C("A0010 APPEND Sent (\\Seen) {12}\r\n"), S("+ OK\r\n"), C("A0011 LOGOUT"), C("\r\n"),
			S("A0010 OK [APPENDUID 1 2] Append completed.\r\n")), true},
		{"append non-synchronizing", roundcube(
			C("A0010 APPEND Sent {5+}\r\nhello\r\n"), S("A0010 OK Append completed.\r\n")), true},
		{"multiappend", roundcube(
			C("A0010 APPEND Sent "+literal("one")+" "+literal("two")+"\r\n"), S("A0010 OK done\r\n")), true},
		{"quoted brace", roundcube(
			C(`A0010 CREATE "new {4}"`+"\r\n"), S(`A0010 NO Mailbox exists: new {4}`+"\r\n")), true},
		{"setmetadata", roundcube(
			C(`A0010 SETMETADATA INBOX (/private/comment "x")`+"\r\n"), S("A0010 OK done\r\n")), true},
		{"pipelined", roundcube(
			C("A0010 NOOP\r\nA0011 UID SEARCH ALL\r\nA0012 UID SORT (DATE) US-ASCII ALL\r\n"),
			S("A0010 OK\r\n* SEARCH 1 2\r\nA0011 OK\r\n* SORT 2 1\r\nA0012 OK\r\n")), true},
		{"lower case and bare LF", []ev{C("x select inbox\n"), S("x ok done\n"), C("A0099 LOGOUT\r\n")}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := follow(tt.events, whole)
			if !r.ok || r.reason != "" || r.needUnselect != tt.needUnselect {
				t.Fatalf("Parkable = %v, %q, %v; want %v, \"\", true", r.needUnselect, r.reason, r.ok, tt.needUnselect)
			}
			if !r.logout || r.tag != "A0099" {
				t.Fatalf("logout %v, tag %q", r.logout, r.tag)
			}
			if want := clientBytes(tt.events); r.out != want {
				t.Fatalf("forwarded %q,\nwant %q", r.out, want)
			}
		})
	}
}

func TestFollowerRefuses(t *testing.T) {
	long := strings.Repeat("t", maxHead+10)
	tests := []struct {
		name   string
		events []ev
		reason string
	}{
		{"enable", []ev{C("a ENABLE QRESYNC\r\n"), S("* ENABLED QRESYNC\r\na OK\r\n")}, ReasonEnable},
		{"enable utf8", []ev{C("a enable UTF8=ACCEPT\r\n"), S("a OK\r\n")}, ReasonEnable},
		{"compress", []ev{C("a COMPRESS DEFLATE\r\n"), S("a OK\r\n")}, ReasonCompress},
		{"starttls", []ev{C("a STARTTLS\r\n")}, ReasonStartTLS},
		{"authenticate", []ev{C("a AUTHENTICATE PLAIN\r\n"), S("+ \r\n"), C("AGJvYgBzZWNyZXQ=\r\n")}, ReasonAuthenticate},
		{"login again", []ev{C("a LOGIN bob secret\r\n")}, ReasonAuthenticate},
		{"unauthenticate", []ev{C("a UNAUTHENTICATE\r\n")}, ReasonAuthenticate},
		{"notify", []ev{C("a NOTIFY SET (selected MessageNew)\r\n"), S("a OK\r\n")}, ReasonNotify},
		{"language", []ev{C("a LANGUAGE DE\r\n"), S("a OK\r\n")}, ReasonLanguage},
		{"select condstore", []ev{C("a SELECT INBOX (CONDSTORE)\r\n"), S("a OK\r\n")}, ReasonCondstore},
		{"select qresync", []ev{C("a SELECT INBOX (QRESYNC (1 2))\r\n"), S("a OK\r\n")}, ReasonCondstore},
		{"fetch changedsince", []ev{C("a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12)\r\n"), S("a OK\r\n")}, ReasonCondstore},
		{"fetch modseq", []ev{C("a FETCH 1 (FLAGS MODSEQ)\r\n"), S("a OK\r\n")}, ReasonCondstore},
		{"store unchangedsince", []ev{C("a STORE 1 (UNCHANGEDSINCE 3) +FLAGS (\\Seen)\r\n"), S("a OK\r\n")}, ReasonCondstore},
		{"status highestmodseq", []ev{C("a STATUS INBOX (highestmodseq)\r\n"), S("a OK\r\n")}, ReasonCondstore},
		{"search modseq after literal", []ev{C("a SEARCH CHARSET UTF-8 SUBJECT {3}\r\n"), S("+ OK\r\n"), C("abc MODSEQ 5\r\n"), S("a OK\r\n")}, ReasonCondstore},
		{"unknown command", []ev{C("a XFOO\r\n"), S("a BAD unknown\r\n")}, ReasonUnknown},
		{"unknown uid subcommand", []ev{C("a UID XFOO 1\r\n")}, ReasonUnknown},
		{"uid alone", []ev{C("a UID\r\n")}, ReasonUnparsed},
		{"no tag", []ev{C(" NOOP\r\n")}, ReasonUnparsed},
		{"no command", []ev{C("a\r\n")}, ReasonUnparsed},
		{"bad command name", []ev{C("a NOOP(\r\n")}, ReasonUnparsed},
		{"unterminated quote", []ev{C("a SELECT \"INBOX\r\n")}, ReasonUnparsed},
		{"logout with arguments", []ev{C("a LOGOUT now\r\n")}, ReasonUnparsed},
		{"duplicate tag", []ev{C("a NOOP\r\na NOOP\r\n")}, ReasonUnparsed},
		{"answer to no command", []ev{S("zz OK\r\n")}, ReasonUnparsed},
		{"tagged data", []ev{C("a NOOP\r\n"), S("a FETCH 1\r\n")}, ReasonUnparsed},
		{"empty server line", []ev{S("\r\n")}, ReasonUnparsed},
		{"done outside idle", []ev{C("DONE\r\n")}, ReasonUnparsed},
		{"command during idle", []ev{C("a IDLE\r\n"), S("+ idling\r\n"), C("b NOOP\r\n")}, ReasonUnparsed},
		{"long tag", []ev{C(long + " NOOP\r\n")}, ReasonTooLong},
		{"long command name", []ev{C("a " + long + "\r\n")}, ReasonTooLong},
		{"long server tag", []ev{C("a NOOP\r\n"), S(long + " OK\r\n")}, ReasonTooLong},
		{"huge client literal", []ev{C("a APPEND INBOX {1234567890123456789012}\r\n")}, ReasonTooLong},
		{"huge server literal", []ev{C("a FETCH 1 BODY[]\r\n"), S("* 1 FETCH (BODY[] {1234567890123456789012}\r\n")}, ReasonTooLong},
		{"too many pipelined", []ev{C(strings.Repeat("a NOOP\r\n", 0) + pipelined(maxOutstanding+1))}, ReasonTooMany},
		{"server bad", []ev{C("a NOOP\r\n"), S("a BAD what\r\n")}, ReasonBad},
		{"untagged bad", []ev{S("* BAD garbage\r\n")}, ReasonBad},
		{"bye", []ev{C("a NOOP\r\n"), S("* BYE Autologout\r\n")}, ReasonBye},
		{"synchronizing literal refused", []ev{C("a APPEND INBOX {99999999}\r\n"), S("a NO [TOOBIG] too big\r\n")}, ReasonLiteral},
		{"literal in flight", []ev{C("a APPEND INBOX {10}\r\n"), S("+ OK\r\n"), C("12345")}, ReasonLiteral},
		{"after literal, line open", []ev{C("a APPEND INBOX {5}\r\n"), S("+ OK\r\n"), C("12345")}, ReasonLiteral},
		{"partial command", []ev{C("a NOO")}, ReasonPartial},
		{"idle without done", []ev{C("a IDLE\r\n"), S("+ idling\r\n* 4 EXISTS\r\n")}, ReasonIdle},
		{"idle done, no answer", []ev{C("a IDLE\r\n"), S("+ idling\r\n"), C("DONE\r\n")}, ReasonOutstanding},
		{"outstanding", []ev{C("a UID FETCH 1 BODY.PEEK[]\r\n")}, ReasonOutstanding},
		{"server literal in flight", []ev{C("a NOOP\r\n"), S("a OK\r\n* 1 FETCH (BODY[] {10}\r\n123")}, ReasonResponse},
		{"server line open", []ev{S("* 3 EXIS")}, ReasonResponse},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := follow(tt.events, whole)
			if r.ok || r.reason != tt.reason {
				t.Fatalf("Parkable = %v, %q, %v; want reason %q", r.needUnselect, r.reason, r.ok, tt.reason)
			}
			if r.logout {
				t.Fatal("logout reported")
			}
		})
	}
}

func pipelined(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "t%d NOOP\r\n", i)
	}
	return b.String()
}

// TestFollowerDirtyForwardsAll: once a session is not parkable, a LOGOUT
// goes to the backend like any other command, and nothing is held back.
func TestFollowerDirtyForwardsAll(t *testing.T) {
	evs := []ev{C("a ENABLE CONDSTORE\r\n"), S("a OK\r\n"), C("b SELECT INBOX\r\nc LOG"), C("OUT\r\n")}
	r := follow(evs, whole)
	if r.logout || r.reason != ReasonEnable {
		t.Fatalf("logout %v, reason %q", r.logout, r.reason)
	}
	if want := "a ENABLE CONDSTORE\r\nb SELECT INBOX\r\nc LOGOUT\r\n"; r.out != want {
		t.Fatalf("forwarded %q, want %q", r.out, want)
	}
	// Found by the server side mid-line: the held start of the client's
	// line goes out with the rest.
	var f Follower
	out, _ := f.Client(nil, []byte("a NO"))
	f.Server([]byte("* BYE shutting down\r\n"))
	out, _ = f.Client(out, []byte("OP\r\n"))
	if string(out) != "a NOOP\r\n" {
		t.Fatalf("forwarded %q", out)
	}
}

func TestFollowerAfterLogout(t *testing.T) {
	var f Follower
	out, lo := f.Client(nil, []byte("a NOOP\r\nb LOGOUT\r\nc NOOP\r\n"))
	if !lo || string(out) != "a NOOP\r\n" || f.LogoutTag() != "b" {
		t.Fatalf("Client = %q, %v, tag %q", out, lo, f.LogoutTag())
	}
	if _, reason, ok := f.Parkable(); ok || reason != ReasonOutstanding {
		t.Fatalf("Parkable = %q, %v; want outstanding (a NOOP)", reason, ok)
	}
	f.Server([]byte("a OK\r\n"))
	if _, _, ok := f.Parkable(); !ok {
		t.Fatal("not parkable once answered")
	}
	if out, lo := f.Client(nil, []byte("d NOOP\r\n")); lo || len(out) != 0 {
		t.Fatalf("after LOGOUT Client = %q, %v", out, lo)
	}
}

// TestFollowerChunking: results do not depend on how reads cut the
// streams: every event split at every point, and byte at a time.
func TestFollowerChunking(t *testing.T) {
	transcripts := map[string][]ev{
		"roundcube": roundcube(C("A0010 APPEND Sent {5+}\r\nhello\r\n"), S("A0010 OK\r\n"),
			C("A0011 IDLE\r\n"), S("+ idling\r\n"), C("DONE\r\n"), S("A0011 OK\r\n")),
		"enable":  {C("a NOOP\r\n"), S("a OK\r\n"), C("b ENABLE QRESYNC\r\nc LOGOUT\r\n")},
		"literal": {C("a APPEND INBOX {10}\r\n"), S("+ OK\r\n"), C("0123456789 LOGOUT\r\n")},
	}
	for name, evs := range transcripts {
		t.Run(name, func(t *testing.T) {
			want := follow(evs, whole)
			if got := follow(evs, bytewise); got != want {
				t.Fatalf("byte at a time: %+v\nwhole: %+v", got, want)
			}
			for i, e := range evs {
				for k := 1; k < len(e.data); k++ {
					split := func(j int, data string) []string {
						if j == i {
							return []string{data[:k], data[k:]}
						}
						return []string{data}
					}
					if got := follow(evs, split); got != want {
						t.Fatalf("event %d split at %d: %+v\nwhole: %+v", i, k, got, want)
					}
				}
			}
		})
	}
}

func TestLoginOK(t *testing.T) {
	tests := []struct{ caps, want string }{
		{"IMAP4rev1 SASL-IR SORT", "a1 OK [CAPABILITY IMAP4rev1 SASL-IR SORT] Logged in\r\n"},
		{" IMAP4rev1 \r\n", "a1 OK [CAPABILITY IMAP4rev1] Logged in\r\n"},
		{"", "a1 OK Logged in\r\n"},
		{"IMAP4rev1] injected\r\n* BYE", "a1 OK Logged in\r\n"},
	}
	for _, tt := range tests {
		if got := string(LoginOK("a1", []byte(tt.caps))); got != tt.want {
			t.Errorf("LoginOK(%q) = %q, want %q", tt.caps, got, tt.want)
		}
	}
}

// FuzzFollower feeds arbitrary chunks in both directions: the follower
// never panics, forwards a prefix of what the client sent, holds back at
// most a line's head, and keeps its state bounded.
func FuzzFollower(f *testing.F) {
	for _, evs := range [][]ev{roundcube(), {C("a APPEND INBOX {5}\r\n12345\r\n"), S("* 1 FETCH (BODY[] {3}\r\nabc)\r\n")}} {
		var b []byte
		for _, e := range evs {
			for len(e.data) > 0 {
				n := min(len(e.data), 127)
				h := byte(n)
				if e.client {
					h |= 0x80
				}
				b = append(b, h)
				b = append(b, e.data[:n]...)
				e.data = e.data[n:]
			}
		}
		f.Add(b)
	}
	f.Add([]byte("\x85a ID {\x8a999999999}\x05\r\n\r\n\x81\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var fl Follower
		var in, out []byte
		loggedOut := false
		for len(data) > 0 {
			n := min(int(data[0]&0x7f), len(data)-1)
			chunk := data[1 : 1+n]
			if data[0]&0x80 != 0 {
				var lo bool
				if !loggedOut {
					in = append(in, chunk...)
				}
				out, lo = fl.Client(out, chunk)
				loggedOut = loggedOut || lo
			} else {
				fl.Server(chunk)
			}
			data = data[1+n:]
			if !bytes.HasPrefix(in, out) {
				t.Fatalf("forwarded %q, not a prefix of %q", out, in)
			}
			if !loggedOut && fl.dirty == "" && len(in)-len(out) > maxHead {
				t.Fatalf("%d bytes held back", len(in)-len(out))
			}
			if len(fl.pending) > maxOutstanding || fl.cl.hlen > maxHead || fl.sv.hlen > maxHead {
				t.Fatalf("state grew: %d pending, heads %d, %d", len(fl.pending), fl.cl.hlen, fl.sv.hlen)
			}
			fl.Parkable()
		}
	})
}

// BenchmarkFollower follows the Roundcube session, one read per event.
func BenchmarkFollower(b *testing.B) {
	evs := roundcube()
	var n int64
	for _, e := range evs {
		n += int64(len(e.data))
	}
	b.SetBytes(n)
	b.ReportAllocs()
	out := make([]byte, 0, 4096)
	for b.Loop() {
		var f Follower
		out = out[:0]
		for _, e := range evs {
			if e.client {
				out, _ = f.Client(out, []byte(e.data))
			} else {
				f.Server([]byte(e.data))
			}
		}
		if _, _, ok := f.Parkable(); !ok {
			b.Fatal("not parkable")
		}
	}
}
