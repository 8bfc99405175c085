package config

import (
	"strconv"
	"strings"
)

// Key paths name a value in the file the way messages show it: dotted
// TOML keys, with the index of an array element in brackets, counting from
// zero: "listen[1].address", "tls.extra[0].cert", "hosts.mx2.imap". A
// segment that is not a bare key is quoted, as TOML writes it.

// join returns the path of key name inside parent.
func join(parent, name string) string {
	if parent == "" {
		return quoteKey(name)
	}
	return parent + "." + quoteKey(name)
}

// index returns the path of element i of the array at path.
func index(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

// quoteKey quotes name unless it is a bare key (TOML 1.0 section "Keys").
func quoteKey(name string) string {
	if name == "" {
		return `""`
	}
	for i := 0; i < len(name); i++ {
		if !isBare(name[i]) {
			return strconv.Quote(name)
		}
	}
	return name
}

func isBare(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// parent returns the path one level up from path ("listen[1].address" ->
// "listen[1]" -> "listen"), or "" at the top.
func parent(path string) string {
	if path == "" {
		return ""
	}
	if strings.HasSuffix(path, "]") {
		if i := strings.LastIndexByte(path, '['); i >= 0 {
			return path[:i]
		}
	}
	// Find where the last segment starts, skipping quoted segments.
	last := 0
	for i := 0; i < len(path); i++ {
		switch path[i] {
		case '"':
			for i++; i < len(path) && path[i] != '"'; i++ {
				if path[i] == '\\' {
					i++
				}
			}
		case '.':
			last = i
		}
	}
	return path[:last]
}

// unindexed drops the array indices from path, giving the form the TOML
// library uses in its key lists and messages ("listen[1].bogus" ->
// "listen.bogus").
func unindexed(path string) string {
	if !strings.Contains(path, "[") {
		return path
	}
	var b strings.Builder
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch c {
		case '"':
			j := i + 1
			for ; j < len(path) && path[j] != '"'; j++ {
				if path[j] == '\\' {
					j++
				}
			}
			b.WriteString(path[i:min(j+1, len(path))])
			i = j
		case '[':
			for i < len(path) && path[i] != ']' {
				i++
			}
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// keyLine is one key written in the file.
type keyLine struct {
	path string
	line int
}

// keyLines knows the line of each key, table header and array-of-tables
// element written in a file. BurntSushi/toml keeps key positions private,
// so the file is scanned again here after it parsed without error.
type keyLines struct {
	lines map[string]int // first line of each path
	order []keyLine      // every key and header, in file order
}

// line returns the line of path or, for a key not written in the file (a
// missing key, or one inside an inline table), of its nearest written
// ancestor. It returns 1 when nothing of path is in the file.
func (k *keyLines) line(path string) int {
	for p := path; p != ""; p = parent(p) {
		if n, ok := k.lines[p]; ok {
			return n
		}
	}
	return 1
}

// has reports whether path itself is written in the file.
func (k *keyLines) has(path string) bool {
	_, ok := k.lines[path]
	return ok
}

// scanKeys maps the keys of data, which must be valid TOML, to their lines.
// It understands what a configuration file may contain: comments, [table]
// and [[array]] headers, dotted and quoted keys, and values of every kind,
// including multi-line strings and arrays, whose contents it skips.
func scanKeys(data string) *keyLines {
	s := &scanner{data: data, line: 1}
	k := &keyLines{lines: make(map[string]int)}
	add := func(path string, line int) {
		if _, ok := k.lines[path]; !ok {
			k.lines[path] = line
		}
		k.order = append(k.order, keyLine{path, line})
	}
	counts := make(map[string]int) // array-of-tables path -> elements so far
	// resolve turns the segments of a header into a path, pointing each
	// array-of-tables segment but the last at its latest element.
	resolve := func(segs []string) string {
		p := ""
		for i, seg := range segs {
			p = join(p, seg)
			if n, ok := counts[p]; ok && i < len(segs)-1 {
				p = index(p, n-1)
			}
		}
		return p
	}
	table := ""
	for {
		s.skipSpace(true)
		if s.eof() {
			return k
		}
		line := s.line
		switch {
		case strings.HasPrefix(s.rest(), "[["):
			s.pos += 2
			segs := s.key()
			s.skipSpace(false)
			s.pos += 2 // "]]"
			base := resolve(segs)
			n := counts[base]
			counts[base] = n + 1
			table = index(base, n)
			add(base, line)
			add(table, line)
		case s.peek() == '[':
			s.pos++
			segs := s.key()
			s.skipSpace(false)
			s.pos++ // "]"
			table = resolve(segs)
			add(table, line)
		default:
			segs := s.key()
			p := table
			for _, seg := range segs {
				p = join(p, seg)
				add(p, line)
			}
			s.skipSpace(false)
			s.pos++ // "="
			s.value(p, add)
		}
		s.skipLine()
	}
}

// scanner walks TOML text that is known to be valid.
type scanner struct {
	data string
	pos  int
	line int
}

func (s *scanner) eof() bool    { return s.pos >= len(s.data) }
func (s *scanner) rest() string { return s.data[s.pos:] }

func (s *scanner) peek() byte {
	if s.eof() {
		return 0
	}
	return s.data[s.pos]
}

// skipSpace skips blanks and, with newlines set, also line ends and
// comments.
func (s *scanner) skipSpace(newlines bool) {
	for !s.eof() {
		switch c := s.data[s.pos]; {
		case c == ' ' || c == '\t' || c == '\r':
			s.pos++
		case newlines && c == '\n':
			s.pos++
			s.line++
		case newlines && c == '#':
			s.skipComment()
		default:
			return
		}
	}
}

func (s *scanner) skipComment() {
	for !s.eof() && s.data[s.pos] != '\n' {
		s.pos++
	}
}

// skipLine skips the rest of a statement's line: blanks and a comment.
func (s *scanner) skipLine() {
	s.skipSpace(false)
	if s.peek() == '#' {
		s.skipComment()
	}
}

// key reads a dotted key and returns its segments, unquoted.
func (s *scanner) key() []string {
	var segs []string
	for {
		s.skipSpace(false)
		switch s.peek() {
		case '"':
			raw := s.basicString()
			seg, err := strconv.Unquote(raw)
			if err != nil {
				seg = trimQuotes(raw, '"')
			}
			segs = append(segs, seg)
		case '\'':
			segs = append(segs, trimQuotes(s.literalString(), '\''))
		default:
			start := s.pos
			for !s.eof() && isBare(s.data[s.pos]) {
				s.pos++
			}
			segs = append(segs, s.data[start:s.pos])
		}
		s.skipSpace(false)
		if s.peek() != '.' {
			return segs
		}
		s.pos++
	}
}

// trimQuotes strips the quotes q around raw; the closing one may be
// missing in text that is not valid TOML.
func trimQuotes(raw string, q byte) string {
	raw = raw[1:]
	if n := len(raw); n > 0 && raw[n-1] == q {
		raw = raw[:n-1]
	}
	return raw
}

// value reads one value of the key at path, however many lines it spans,
// and records the keys of inline tables in it through add ("mx2 = { imap
// = … }" gives "hosts.mx2.imap"; elements of arrays are indexed).
func (s *scanner) value(path string, add func(string, int)) {
	s.skipSpace(false)
	switch s.peek() {
	case '"':
		if strings.HasPrefix(s.rest(), `"""`) {
			s.multiline(`"""`)
		} else {
			s.basicString()
		}
	case '\'':
		if strings.HasPrefix(s.rest(), `'''`) {
			s.multiline(`'''`)
		} else {
			s.literalString()
		}
	case '{':
		s.pos++
		for {
			s.skipSpace(true)
			if s.eof() {
				return
			}
			if s.peek() == '}' {
				s.pos++
				return
			}
			if s.peek() == ',' {
				s.pos++
				continue
			}
			line := s.line
			p := path
			for _, seg := range s.key() {
				p = join(p, seg)
				add(p, line)
			}
			s.skipSpace(false)
			if s.peek() != '=' {
				return // not valid TOML; give up on this table
			}
			s.pos++
			s.value(p, add)
		}
	case '[':
		s.pos++
		for i := 0; ; {
			s.skipSpace(true)
			switch s.peek() {
			case 0:
				return
			case ']':
				s.pos++
				return
			case ',':
				s.pos++
				continue
			}
			start := s.pos
			s.value(index(path, i), add)
			i++
			if s.pos == start {
				s.pos++ // not valid TOML; make progress
			}
		}
	default:
		// A number, boolean or date: up to what ends a value. Dates may
		// hold a space.
		for !s.eof() && !strings.ContainsRune(",]}\n#", rune(s.data[s.pos])) {
			s.pos++
		}
	}
}

// basicString reads a "…" string and returns it with its quotes.
func (s *scanner) basicString() string {
	start := s.pos
	s.pos++
	for !s.eof() && s.data[s.pos] != '"' && s.data[s.pos] != '\n' {
		if s.data[s.pos] == '\\' {
			s.pos++
		}
		s.pos++
	}
	s.pos++
	return s.data[start:min(s.pos, len(s.data))]
}

// literalString reads a '…' string and returns it with its quotes.
func (s *scanner) literalString() string {
	start := s.pos
	s.pos++
	for !s.eof() && s.data[s.pos] != '\'' && s.data[s.pos] != '\n' {
		s.pos++
	}
	s.pos++
	return s.data[start:min(s.pos, len(s.data))]
}

// multiline skips a multi-line string delimited by delim, counting lines.
// Up to two quotes may directly precede the closing delimiter.
func (s *scanner) multiline(delim string) {
	s.pos += 3
	for !s.eof() {
		c := s.data[s.pos]
		switch {
		case c == '\\' && delim == `"""`:
			s.pos++
			if s.peek() == '\n' {
				s.line++
			}
		case c == '\n':
			s.line++
		case strings.HasPrefix(s.rest(), delim):
			s.pos += 3
			for i := 0; i < 2 && s.peek() == delim[0]; i++ {
				s.pos++
			}
			return
		}
		s.pos++
	}
}
