package imap

import (
	"bytes"
	"strconv"
	"strings"
)

// Follower limits. The follower keeps no line whole: only the start of a
// command or response (tag, name, UID subcommand) is kept, in a buffer of
// maxHead bytes; the rest of a line is scanned and forwarded as it comes,
// literals are skipped by count. Memory stays bounded whatever the peers
// send; whatever does not fit makes the session unparkable, never bigger.
const (
	// maxHead bounds the start of a line the follower keeps, and so the
	// bytes of a command's first line it holds back before forwarding
	// (the pre-login line buffer of the router is 4096 B; a tag and a
	// command name need far less).
	maxHead = 256
	// maxOutstanding bounds the pipelined commands followed at once.
	maxOutstanding = 64
	// maxLiteralDigits bounds the digits of a literal's size: 18 digits
	// fit an int64 (RFC 9051 section 9: number64).
	maxLiteralDigits = 18
	// maxKeyword is the longest word the follower looks for in commands
	// ("UNCHANGEDSINCE").
	maxKeyword = 14
)

// Reasons Parkable gives for refusing, short and bounded so that they can
// label a metric.
const (
	ReasonEnable       = "enable"       // ENABLE (CONDSTORE, QRESYNC, UTF8=ACCEPT…): changes every later response
	ReasonCondstore    = "condstore"    // a CONDSTORE-enabling parameter (RFC 7162 section 3.1)
	ReasonCompress     = "compress"     // COMPRESS: the stream is deflated from then on
	ReasonStartTLS     = "starttls"     // STARTTLS after login: nothing sane follows
	ReasonAuthenticate = "authenticate" // LOGIN, AUTHENTICATE or UNAUTHENTICATE after login
	ReasonNotify       = "notify"       // NOTIFY: unsolicited events for later clients
	ReasonLanguage     = "language"     // LANGUAGE: server texts change for later clients
	ReasonUnknown      = "unknown"      // a command the follower does not know
	ReasonUnparsed     = "unparsed"     // input it could not follow (syntax, unknown tag)
	ReasonTooLong      = "too_long"     // a tag, command name or literal size over the limits
	ReasonTooMany      = "too_many"     // more than maxOutstanding pipelined commands
	ReasonBad          = "bad"          // the server answered BAD: it may read the stream otherwise
	ReasonBye          = "bye"          // the server said BYE
	ReasonLiteral      = "literal"      // a literal still in flight, or refused by the server
	ReasonPartial      = "partial"      // a command line not yet complete
	ReasonIdle         = "idle"         // IDLE not ended with DONE
	ReasonOutstanding  = "outstanding"  // a command not yet answered
	ReasonResponse     = "response"     // a server response not yet complete
)

// cmdKind is what the follower does when a command completes.
type cmdKind uint8

const (
	cmdPlain    cmdKind = iota // no session state to follow
	cmdSelect                  // SELECT, EXAMINE: OK selects, a failure unselects
	cmdUnselect                // CLOSE, UNSELECT: OK unselects
	cmdIdle                    // IDLE: DONE ends it
	cmdLogout                  // LOGOUT
	cmdUID                     // UID: the subcommand says
)

// followed are the commands of the authenticated and selected states that
// leave nothing behind in the session for a later client but what the
// follower tracks (the selected mailbox). Stored data may change (STORE,
// SETMETADATA, SETACL…): it is the same account's, and visible to its
// next session anyway.
var followed = map[string]cmdKind{
	"CAPABILITY": cmdPlain, "NOOP": cmdPlain, "CHECK": cmdPlain, "ID": cmdPlain,
	"LIST": cmdPlain, "LSUB": cmdPlain, "STATUS": cmdPlain, "NAMESPACE": cmdPlain,
	"CREATE": cmdPlain, "DELETE": cmdPlain, "RENAME": cmdPlain,
	"SUBSCRIBE": cmdPlain, "UNSUBSCRIBE": cmdPlain, "APPEND": cmdPlain,
	"FETCH": cmdPlain, "STORE": cmdPlain, "COPY": cmdPlain, "MOVE": cmdPlain,
	"SEARCH": cmdPlain, "SORT": cmdPlain, "THREAD": cmdPlain, "EXPUNGE": cmdPlain,
	"GETQUOTA": cmdPlain, "GETQUOTAROOT": cmdPlain, "SETQUOTA": cmdPlain,
	"GETACL": cmdPlain, "SETACL": cmdPlain, "DELETEACL": cmdPlain,
	"LISTRIGHTS": cmdPlain, "MYRIGHTS": cmdPlain,
	"GETMETADATA": cmdPlain, "SETMETADATA": cmdPlain,
	"SELECT": cmdSelect, "EXAMINE": cmdSelect,
	"CLOSE": cmdUnselect, "UNSELECT": cmdUnselect,
	"IDLE": cmdIdle, "LOGOUT": cmdLogout, "UID": cmdUID,
}

// uidFollowed are the UID subcommands followed (RFC 9051 section 6.4.9,
// RFC 6851 MOVE, RFC 5256 SORT and THREAD).
var uidFollowed = map[string]bool{
	"FETCH": true, "STORE": true, "COPY": true, "MOVE": true,
	"SEARCH": true, "SORT": true, "THREAD": true, "EXPUNGE": true,
}

// forbidden are the known commands that change the session for good.
var forbidden = map[string]string{
	"ENABLE": ReasonEnable, "COMPRESS": ReasonCompress, "STARTTLS": ReasonStartTLS,
	"LOGIN": ReasonAuthenticate, "AUTHENTICATE": ReasonAuthenticate,
	"UNAUTHENTICATE": ReasonAuthenticate, "NOTIFY": ReasonNotify, "LANGUAGE": ReasonLanguage,
}

// condstoreWords enable CONDSTORE implicitly when a client uses them
// (RFC 7162 section 3.1: "CONDSTORE enabling commands"); a session where
// one was sent gets MODSEQ in every later FETCH, as after ENABLE.
var condstoreWords = []string{"CONDSTORE", "QRESYNC", "CHANGEDSINCE", "UNCHANGEDSINCE", "MODSEQ", "HIGHESTMODSEQ"}

// pending is a command sent and not yet answered.
type pending struct {
	tag  string
	kind cmdKind
}

// brace states: where a line stands in a trailing "{123}" or "{123+}".
const (
	braceNone   = iota
	braceOpen   // "{"
	braceDigits // "{1…"
	bracePlus   // "{1…+"
	braceClosed // "{1…}" or "{1…+}": a literal follows if the line ends here
)

// scan is the state of one direction's byte stream.
type scan struct {
	litLeft int64 // literal bytes still to come
	cont    bool  // the current line continues a command or response begun before a literal
	lineLen int   // bytes of the current line so far

	head [maxHead]byte // the start of a command's or response's first line
	hlen int
	held bool // client: head has not been forwarded yet

	inQuote, esc bool
	brace        uint8
	litDigits    int
	litN         int64

	word  [maxKeyword]byte // client: the letters of the current word, upper case
	wlen  int
	wover bool

	// server: what the first line is.
	kind   uint8 // respUnknown, respText, respData
	spaces int
}

// Server response line kinds.
const (
	respUnknown = iota // not decided yet: the first two words are being read
	respText           // a status response or continuation: text, no literal
	respData           // untagged data: strings, literals
)

// Follower follows the IMAP traffic of one logged-in session closely
// enough to tell whether its backend connection can be parked for
// another session of the same account when the client logs out: in the
// authenticated state, nothing outstanding, nothing enabled, no literal,
// IDLE or response in flight, and nothing it could not parse. It starts
// after the login (its zero value is ready) and never sees a password.
//
// The router feeds it every byte in order: the client's bytes through
// Client, before they reach the backend, and the backend's through
// Server. Chunks may split or join commands and responses anywhere. The
// follower holds its state in a few hundred bytes whatever it is fed;
// once it finds a reason not to park, it stops following and only passes
// the client's bytes on.
type Follower struct {
	cl, sv   scan
	pending  []pending
	curTag   string // the command the client is sending, until its last line
	selected bool
	idle     bool // IDLE sent, DONE not yet
	// condstore: a CONDSTORE-enabling word was seen in the current
	// command; it counts once the command's name is known, so that
	// "ENABLE CONDSTORE" is refused as an ENABLE.
	condstore bool
	dirty     string // a reason never to park, once found
	logout    bool
	tag       string // the LOGOUT's tag
}

// Client follows p, bytes the client sent, and appends to dst those to
// forward to the backend now, returning the extended buffer. The first
// line of each command is held back until it ends (at most 256 bytes of
// it), so that a LOGOUT never reaches the backend: when p completes a
// LOGOUT command, logout is true, out holds the bytes before it, and the
// follower stops following (anything the client sends after LOGOUT is
// dropped). The router then calls Parkable; if it will not park, it sends
// "tag LOGOUT" (LogoutTag) to the backend itself.
func (f *Follower) Client(dst, p []byte) (out []byte, logout bool) {
	out = dst
	if f.logout {
		return out, false
	}
	s := &f.cl
	if f.dirty != "" {
		if s.held {
			// Held when the reason was found, mid-line.
			out = append(out, s.head[:s.hlen]...)
			s.held, s.hlen = false, 0
		}
		return append(out, p...), false
	}
	for i := 0; i < len(p); {
		if s.litLeft > 0 {
			k := int(min(int64(len(p)-i), s.litLeft))
			out = append(out, p[i:i+k]...)
			s.litLeft -= int64(k)
			i += k
			continue
		}
		c := p[i]
		i++
		if s.lineLen == 0 && !s.cont {
			s.held = true
		}
		s.lineLen++
		if s.held {
			if s.hlen < maxHead {
				s.head[s.hlen] = c
				s.hlen++
			} else {
				// Too long to hold: pass it on; it is parsed from the
				// head it has if the tag and name fit.
				out = append(out, s.head[:s.hlen]...)
				s.held = false
			}
		}
		if !s.held {
			out = append(out, c)
		}
		if c != '\n' {
			f.clientByte(c)
			continue
		}
		held := s.held
		f.clientLineEnd()
		switch {
		case f.logout:
			return out, true
		case held:
			out = append(out, s.head[:s.hlen]...)
		}
		s.held = false
		s.hlen = 0
		if f.dirty != "" {
			return append(out, p[i:]...), false
		}
	}
	return out, false
}

// clientByte follows one byte of a command line, outside literals.
func (f *Follower) clientByte(c byte) {
	s := &f.cl
	if s.inQuote {
		s.quoted(c)
		return
	}
	if isLetter(c) {
		if s.wlen < maxKeyword {
			s.word[s.wlen] = c &^ 0x20
			s.wlen++
		} else {
			s.wover = true
		}
		s.brace = braceNone
		return
	}
	f.endWord()
	s.braces(c)
}

// endWord checks the word just read for a CONDSTORE-enabling one.
func (f *Follower) endWord() {
	s := &f.cl
	if s.wlen > 0 && !s.wover {
		for _, w := range condstoreWords {
			if string(s.word[:s.wlen]) == w {
				f.condstore = true
			}
		}
	}
	s.wlen, s.wover = 0, false
}

func isLetter(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }

// quoted follows a byte inside a quoted string (RFC 9051 section 9:
// quoted-specials are escaped with a backslash).
func (s *scan) quoted(c byte) {
	switch {
	case s.esc:
		s.esc = false
	case c == '\\':
		s.esc = true
	case c == '"':
		s.inQuote = false
	}
}

// braces follows a byte outside quoted strings: quotes, and a literal's
// "{n}" or "{n+}" that may end the line. A bare CR does not count, so
// that CRLF and LF endings read alike.
func (s *scan) braces(c byte) {
	switch {
	case c == '"':
		s.inQuote = true
		s.brace = braceNone
	case c == '{':
		s.brace, s.litN, s.litDigits = braceOpen, 0, 0
	case c >= '0' && c <= '9' && (s.brace == braceOpen || s.brace == braceDigits):
		s.brace = braceDigits
		s.litDigits++
		if s.litDigits <= maxLiteralDigits {
			s.litN = s.litN*10 + int64(c-'0')
		}
	case c == '+' && s.brace == braceDigits:
		s.brace = bracePlus
	case c == '}' && (s.brace == braceDigits || s.brace == bracePlus):
		s.brace = braceClosed
	case c == '\r':
	default:
		s.brace = braceNone
	}
}

// lineEnd ends a line of s: it reports whether a literal follows, and
// fails f when the line cannot be followed.
func (s *scan) lineEnd(f *Follower) (literal bool) {
	switch {
	case s.inQuote:
		f.fail(ReasonUnparsed)
	case s.brace == braceClosed && s.litDigits > maxLiteralDigits:
		f.fail(ReasonTooLong)
	case s.brace == braceClosed:
		literal = true
		s.litLeft = s.litN
	}
	s.inQuote, s.esc, s.brace, s.lineLen = false, false, braceNone, 0
	return literal
}

// clientLineEnd follows the end of a client line.
func (f *Follower) clientLineEnd() {
	s := &f.cl
	f.endWord()
	first := !s.cont
	literal := s.lineEnd(f)
	if f.dirty != "" {
		return
	}
	if first {
		f.commandStart(literal)
	}
	if f.condstore {
		f.fail(ReasonCondstore)
	}
	if f.dirty != "" || f.logout {
		return
	}
	s.cont = literal
	if !literal {
		f.curTag = ""
	}
}

// commandStart follows a command's first line, held in the head.
func (f *Follower) commandStart(literal bool) {
	s := &f.cl
	line := bytes.TrimRight(s.head[:s.hlen], "\r\n")
	truncated := s.hlen == maxHead && s.head[s.hlen-1] != '\n'
	if f.idle {
		// RFC 2177: the only thing a client may send during IDLE.
		if !literal && strings.EqualFold(string(line), "DONE") {
			f.idle = false
			return
		}
		f.fail(ReasonUnparsed)
		return
	}
	p := &parser{line: line}
	tag, ok := p.tag()
	var name, sub string
	if ok = ok && p.sp(); ok {
		name, ok = p.atom()
		name = strings.ToUpper(name)
	}
	kind, known := followed[name]
	if ok && kind == cmdUID {
		if ok = p.sp(); ok {
			sub, ok = p.atom()
			sub = strings.ToUpper(sub)
		}
	}
	end := p.pos == len(line)
	switch {
	case truncated && (!ok || end):
		// The tag or the name may go on past what was kept.
		f.fail(ReasonTooLong)
	case !ok || !end && line[p.pos] != ' ':
		f.fail(ReasonUnparsed)
	case forbidden[name] != "":
		f.fail(forbidden[name])
	case !known || kind == cmdUID && !uidFollowed[sub]:
		f.fail(ReasonUnknown)
	case kind == cmdLogout && (!end || literal):
		f.fail(ReasonUnparsed)
	case kind == cmdLogout:
		f.logout, f.tag = true, tag
	default:
		f.send(tag, kind)
	}
}

// send records a command the backend is to answer.
func (f *Follower) send(tag string, kind cmdKind) {
	if len(f.pending) >= maxOutstanding {
		f.fail(ReasonTooMany)
		return
	}
	for _, p := range f.pending {
		if p.tag == tag {
			f.fail(ReasonUnparsed) // answers could not be told apart
			return
		}
	}
	f.pending = append(f.pending, pending{tag: tag, kind: kind})
	f.curTag = tag
	if kind == cmdIdle {
		f.idle = true
	}
}

// fail records the first reason never to park and stops following.
func (f *Follower) fail(reason string) {
	if f.dirty == "" {
		f.dirty = reason
	}
}

// Server follows p, bytes the backend sent.
func (f *Follower) Server(p []byte) {
	s := &f.sv
	for i := 0; i < len(p) && f.dirty == ""; {
		if s.litLeft > 0 {
			k := int(min(int64(len(p)-i), s.litLeft))
			s.litLeft -= int64(k)
			i += k
			continue
		}
		if s.kind == respText {
			// Text to the end of the line: nothing in it counts.
			j := bytes.IndexByte(p[i:], '\n')
			if j < 0 {
				s.lineLen += len(p) - i
				return
			}
			i += j + 1
			f.serverLineEnd()
			continue
		}
		c := p[i]
		i++
		s.lineLen++
		switch {
		case c == '\n':
			f.serverLineEnd()
		case s.kind == respUnknown:
			f.serverHeadByte(c)
		case s.inQuote:
			s.quoted(c)
		default:
			s.braces(c)
		}
	}
}

// serverHeadByte keeps a byte of a response's first two words and
// decides the response's kind after them.
func (f *Follower) serverHeadByte(c byte) {
	s := &f.sv
	if s.hlen == maxHead {
		f.fail(ReasonTooLong)
		return
	}
	s.head[s.hlen] = c
	s.hlen++
	if c == ' ' {
		s.spaces++
		if s.spaces == 1 && s.hlen == 2 && s.head[0] == '+' || s.spaces == 2 {
			s.kind = f.respKind()
		}
	}
}

// respKind tells from the head whether a response is text (a status
// response or a continuation request, RFC 9051 section 7.1 and 7.5) or
// data, whose strings and literals must be followed.
func (f *Follower) respKind() uint8 {
	w0, w1, n := headWords(f.sv.head[:f.sv.hlen])
	switch {
	case string(w0) == "+":
		return respText
	case string(w0) == "*" && n > 1 && status(w1) != "":
		return respText
	case string(w0) == "*":
		return respData
	case n > 1 && status(w1) != "" && status(w1) != "BYE" && status(w1) != "PREAUTH":
		return respText
	}
	f.fail(ReasonUnparsed) // a tagged line must be a status response
	return respText
}

// headWords returns the first two words of a response's head, and how
// many there are.
func headWords(head []byte) (w0, w1 []byte, n int) {
	head = bytes.TrimRight(head, "\r\n")
	w0, rest, found := bytes.Cut(head, []byte(" "))
	if !found {
		return w0, nil, 1
	}
	w1, _, _ = bytes.Cut(rest, []byte(" "))
	return w0, w1, 2
}

// status returns w in upper case if it is a status (RFC 9051 section
// 7.1), or "".
func status(w []byte) string {
	for _, s := range [...]string{"OK", "NO", "BAD", "BYE", "PREAUTH"} {
		if bytes.EqualFold(w, []byte(s)) {
			return s
		}
	}
	return ""
}

// serverLineEnd follows the end of a backend line.
func (f *Follower) serverLineEnd() {
	s := &f.sv
	if s.kind == respUnknown {
		s.kind = f.respKind()
	}
	if s.kind == respData {
		if s.lineEnd(f) {
			s.cont = true
			return
		}
	}
	if f.dirty == "" && s.kind == respText {
		f.response()
	}
	s.inQuote, s.esc, s.brace, s.lineLen = false, false, braceNone, 0
	s.kind, s.spaces, s.hlen, s.cont = respUnknown, 0, 0, false
}

// response follows a complete status response or continuation request.
func (f *Follower) response() {
	w0, w1, n := headWords(f.sv.head[:f.sv.hlen])
	st := status(w1)
	switch {
	case n < 2 || string(w0) == "+":
	case string(w0) == "*" && st == "BYE":
		f.fail(ReasonBye)
	case string(w0) == "*" && st == "BAD":
		f.fail(ReasonBad)
	case string(w0) == "*":
	default:
		f.complete(w0, st)
	}
}

// complete follows the tagged completion of a command.
func (f *Follower) complete(tag []byte, status string) {
	i := 0
	for i < len(f.pending) && f.pending[i].tag != string(tag) {
		i++
	}
	if i == len(f.pending) {
		f.fail(ReasonUnparsed)
		return
	}
	cmd := f.pending[i]
	f.pending = append(f.pending[:i], f.pending[i+1:]...)
	switch {
	case cmd.tag == f.curTag:
		// Answered before the client sent all of it: a synchronizing
		// literal refused, which the client will not send.
		f.fail(ReasonLiteral)
	case status == "BAD":
		f.fail(ReasonBad)
	}
	switch cmd.kind {
	case cmdSelect:
		// RFC 9051 section 6.3.2: a failed SELECT leaves no mailbox selected.
		f.selected = status == "OK"
	case cmdUnselect:
		if status == "OK" {
			f.selected = false
		}
	case cmdIdle:
		f.idle = false
	}
}

// Parkable reports whether the backend connection can be parked now. ok
// is true when no command is outstanding and nothing forbids it; then
// needUnselect says a mailbox is selected and the router must reset the
// connection with UNSELECT (RFC 3691) before parking it. Never CLOSE,
// which expunges. When ok is false, reason is one of the Reason
// constants, for logs and the refusal metric.
//
// A connection that is only busy ("outstanding", "response", "partial",
// "literal" in flight, "idle") may become parkable once the backend has
// answered; the others never do.
func (f *Follower) Parkable() (needUnselect bool, reason string, ok bool) {
	switch {
	case f.dirty != "":
		return false, f.dirty, false
	case f.cl.litLeft > 0 || f.cl.cont:
		return false, ReasonLiteral, false
	case f.cl.lineLen > 0:
		return false, ReasonPartial, false
	case f.idle:
		return false, ReasonIdle, false
	case len(f.pending) > 0:
		return false, ReasonOutstanding, false
	case f.sv.lineLen > 0 || f.sv.litLeft > 0 || f.sv.cont:
		return false, ReasonResponse, false
	}
	return f.selected, "", true
}

// LogoutTag returns the tag of the LOGOUT Client reported, or "".
func (f *Follower) LogoutTag() string { return f.tag }

// LoginOK returns the answer to a login served from the cache, in one
// buffer so that it goes out in one write: "tag OK [CAPABILITY caps]
// Logged in". caps is the list the backend announced after the
// connection's first login, as in its response code ("IMAP4rev1
// SASL-IR …"); a list with a CR, LF or "]" in it is left out rather than
// sent broken.
func LoginOK(tag string, caps []byte) []byte {
	caps = bytes.TrimSpace(caps)
	b := make([]byte, 0, len(tag)+len(caps)+32)
	b = append(b, tag...)
	b = append(b, " OK "...)
	if len(caps) > 0 && bytes.IndexAny(caps, "\r\n]") < 0 {
		b = append(b, "[CAPABILITY "...)
		b = append(b, caps...)
		b = append(b, "] "...)
	}
	return append(b, "Logged in\r\n"...)
}

// String describes the follower's state for debugging, without data.
func (f *Follower) String() string {
	_, reason, ok := f.Parkable()
	return "follower{pending=" + strconv.Itoa(len(f.pending)) + " selected=" + strconv.FormatBool(f.selected) +
		" parkable=" + strconv.FormatBool(ok) + " reason=" + reason + "}"
}
