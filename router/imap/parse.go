// Package imap reads the IMAP commands a client may send before it has
// logged in (RFC 9051 and RFC 3501 section 6.1 and 6.2; LITERAL+ of RFC
// 7888; SASL-IR of RFC 4959; ID of RFC 2971) and nothing else: after
// login the router splices bytes without parsing them.
//
// Every read is bounded. A line longer than the bufio.Reader's buffer, or a
// literal larger than Reader.MaxLiteral, is refused before anything is
// allocated for it.
package imap

import (
	"bufio"
	"errors"
	"io"
	"strconv"
	"strings"

	"switchboard/router/internal/wire"
)

// DefaultMaxLiteral bounds a literal before login. Login names and
// passwords are short; nothing else needs a literal before login.
const DefaultMaxLiteral = 4096

// maxArgs bounds the number of strings in one command (ID has the most:
// at most 30 field-value pairs, RFC 2971 section 3.3).
const maxArgs = 64

// Command is one client command.
type Command struct {
	Tag  string
	Name string // upper case: "LOGIN", "AUTHENTICATE", …
	// Args: LOGIN has the user name and the password; AUTHENTICATE has the
	// mechanism, then the initial response when one was sent ("=" stands
	// for an empty one); ID has its field-value pairs in order, NIL values
	// as "". The other commands have none.
	Args []string
	// Literal is true when any argument came as a literal.
	Literal bool
}

// ParseError is a command the client got wrong. The client is answered
// "Tag BAD Text" (or "* BAD" without a tag); when Fatal is true the
// connection cannot be resynchronised and must be closed after a BYE.
type ParseError struct {
	Tag   string
	Code  string // response code without brackets, e.g. "TOOBIG", or ""
	Text  string
	Fatal bool
}

func (e *ParseError) Error() string { return "imap: " + e.Text }

// Reader reads commands from a client.
type Reader struct {
	R *bufio.Reader
	// MaxLiteral bounds each literal. Zero means DefaultMaxLiteral.
	MaxLiteral int
	// Continue is called before the bytes of a synchronizing literal are
	// read; it must send the client a continuation request ("+ …").
	Continue func() error
}

// ReadCommand reads one command. It returns a *ParseError for a malformed
// command, and the reader's error (io.EOF, a timeout) when reading fails.
func (r *Reader) ReadCommand() (*Command, error) {
	line, err := wire.ReadLine(r.R)
	if err == wire.ErrLineTooLong {
		return nil, &ParseError{Code: "TOOBIG", Text: "Command line too long.", Fatal: true}
	}
	if err != nil {
		return nil, err
	}
	p := &parser{r: r, line: line}
	cmd := &Command{}
	tag, ok := p.tag()
	if !ok {
		return nil, &ParseError{Text: "Missing or invalid tag."}
	}
	cmd.Tag = tag
	if !p.sp() {
		return nil, p.errorf(tag, "Missing command.")
	}
	name, ok := p.atom()
	if !ok {
		return nil, p.errorf(tag, "Missing command.")
	}
	cmd.Name = strings.ToUpper(name)
	switch cmd.Name {
	case "CAPABILITY", "NOOP", "LOGOUT", "STARTTLS":
	case "LOGIN":
		for i := 0; i < 2; i++ {
			if !p.sp() {
				return nil, p.errorf(tag, "LOGIN expects a user name and a password.")
			}
			s, err := p.astring()
			if err != nil {
				return nil, p.wrap(tag, err)
			}
			cmd.Args = append(cmd.Args, s)
		}
	case "AUTHENTICATE":
		if !p.sp() {
			return nil, p.errorf(tag, "AUTHENTICATE expects a mechanism.")
		}
		mech, ok := p.atom()
		if !ok {
			return nil, p.errorf(tag, "Invalid SASL mechanism.")
		}
		cmd.Args = append(cmd.Args, strings.ToUpper(mech))
		if p.sp() {
			ir, ok := p.base64()
			if !ok {
				return nil, p.errorf(tag, "Invalid initial response.")
			}
			cmd.Args = append(cmd.Args, ir)
		}
	case "ID":
		if !p.sp() {
			return nil, p.errorf(tag, "ID expects a parameter list or NIL.")
		}
		args, err := p.idParams()
		if err != nil {
			return nil, p.wrap(tag, err)
		}
		cmd.Args = args
	default:
		// Unknown or not allowed before login: the arguments do not
		// matter, and may hold literals we will not read.
		return cmd, nil
	}
	cmd.Literal = p.literal
	if p.pos != len(p.line) {
		return nil, p.errorf(tag, "Unexpected characters at end of "+cmd.Name+".")
	}
	return cmd, nil
}

var errSyntax = errors.New("syntax")

type parser struct {
	r       *Reader
	line    []byte // the current line; valid until the next read
	pos     int
	nargs   int
	literal bool
}

func (p *parser) errorf(tag, text string) *ParseError {
	return &ParseError{Tag: tag, Text: text}
}

// wrap turns an error from a string reader into what ReadCommand returns.
func (p *parser) wrap(tag string, err error) error {
	var pe *ParseError
	if errors.As(err, &pe) {
		pe.Tag = tag
		return pe
	}
	if err == errSyntax {
		return p.errorf(tag, "Syntax error in arguments.")
	}
	return err
}

func (p *parser) peek() (byte, bool) {
	if p.pos >= len(p.line) {
		return 0, false
	}
	return p.line[p.pos], true
}

func (p *parser) sp() bool {
	if c, ok := p.peek(); ok && c == ' ' {
		p.pos++
		return true
	}
	return false
}

func (p *parser) expect(c byte) bool {
	if b, ok := p.peek(); ok && b == c {
		p.pos++
		return true
	}
	return false
}

// isAtomChar reports whether c is an ATOM-CHAR (RFC 9051 section 9).
func isAtomChar(c byte) bool {
	if c <= 0x1f || c >= 0x7f {
		return false
	}
	switch c {
	case '(', ')', '{', ' ', '%', '*', '"', '\\', ']':
		return false
	}
	return true
}

func (p *parser) tag() (string, bool) {
	start := p.pos
	for p.pos < len(p.line) {
		c := p.line[p.pos]
		if !(isAtomChar(c) || c == ']') || c == '+' {
			break
		}
		p.pos++
	}
	if p.pos == start || (p.pos < len(p.line) && p.line[p.pos] != ' ') {
		return "", false
	}
	return string(p.line[start:p.pos]), true
}

func (p *parser) atom() (string, bool) {
	start := p.pos
	for p.pos < len(p.line) && isAtomChar(p.line[p.pos]) {
		p.pos++
	}
	if p.pos == start {
		return "", false
	}
	return string(p.line[start:p.pos]), true
}

// base64 reads a SASL initial response: base64 characters or "=".
func (p *parser) base64() (string, bool) {
	start := p.pos
	for p.pos < len(p.line) {
		c := p.line[p.pos]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '=') {
			break
		}
		p.pos++
	}
	if p.pos == start {
		return "", false
	}
	return string(p.line[start:p.pos]), true
}

// astring reads an atom (ASTRING-CHARs), a quoted string or a literal.
func (p *parser) astring() (string, error) {
	c, ok := p.peek()
	if !ok {
		return "", errSyntax
	}
	switch c {
	case '"':
		return p.quoted()
	case '{':
		return p.readLiteral()
	}
	start := p.pos
	for p.pos < len(p.line) && (isAtomChar(p.line[p.pos]) || p.line[p.pos] == ']') {
		p.pos++
	}
	if p.pos == start {
		return "", errSyntax
	}
	return p.arg(string(p.line[start:p.pos]))
}

// nstring reads a string or NIL (returned as "").
func (p *parser) nstring() (string, error) {
	if c, ok := p.peek(); ok && (c == 'N' || c == 'n') {
		a, _ := p.atom()
		if strings.EqualFold(a, "NIL") {
			return p.arg("")
		}
		return "", errSyntax
	}
	return p.string()
}

// string reads a quoted string or a literal.
func (p *parser) string() (string, error) {
	c, ok := p.peek()
	switch {
	case ok && c == '"':
		return p.quoted()
	case ok && c == '{':
		return p.readLiteral()
	}
	return "", errSyntax
}

func (p *parser) arg(s string) (string, error) {
	p.nargs++
	if p.nargs > maxArgs {
		return "", &ParseError{Text: "Too many arguments."}
	}
	return s, nil
}

func (p *parser) quoted() (string, error) {
	p.pos++ // opening quote
	var b []byte
	start := p.pos
	for p.pos < len(p.line) {
		c := p.line[p.pos]
		switch c {
		case '"':
			var s string
			if b == nil {
				s = string(p.line[start:p.pos])
			} else {
				s = string(b)
			}
			p.pos++
			return p.arg(s)
		case '\\':
			if b == nil {
				b = append([]byte(nil), p.line[start:p.pos]...)
			}
			p.pos++
			if p.pos >= len(p.line) || (p.line[p.pos] != '"' && p.line[p.pos] != '\\') {
				return "", errSyntax
			}
			b = append(b, p.line[p.pos])
		case 0:
			return "", errSyntax
		default:
			if b != nil {
				b = append(b, c)
			}
		}
		p.pos++
	}
	return "", errSyntax
}

// readLiteral reads "{n}" or "{n+}" at the end of the line, the n bytes
// after it, and the next line, which continues the command.
func (p *parser) readLiteral() (string, error) {
	rest := p.line[p.pos:]
	if len(rest) < 3 || rest[len(rest)-1] != '}' {
		return "", errSyntax
	}
	num := rest[1 : len(rest)-1]
	nonSync := false
	if len(num) > 0 && num[len(num)-1] == '+' {
		nonSync = true
		num = num[:len(num)-1]
	}
	if len(num) == 0 || len(num) > 10 {
		return "", errSyntax
	}
	for _, c := range num {
		if c < '0' || c > '9' {
			return "", errSyntax
		}
	}
	n, err := strconv.ParseUint(string(num), 10, 32)
	if err != nil {
		return "", errSyntax
	}
	max := p.r.MaxLiteral
	if max <= 0 {
		max = DefaultMaxLiteral
	}
	if n > uint64(max) {
		// A synchronizing literal has not been sent yet: refuse it and go
		// on. A non-synchronizing one is on its way and the stream cannot
		// be resynchronised (RFC 7888 section 4).
		return "", &ParseError{Code: "TOOBIG", Text: "Literal too big.", Fatal: nonSync}
	}
	if !nonSync && p.r.Continue != nil {
		if err := p.r.Continue(); err != nil {
			return "", err
		}
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(p.r.R, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return "", err
	}
	line, err := wire.ReadLine(p.r.R)
	if err == wire.ErrLineTooLong {
		return "", &ParseError{Code: "TOOBIG", Text: "Command line too long.", Fatal: true}
	}
	if err != nil {
		return "", err
	}
	p.line, p.pos = line, 0
	p.literal = true
	return p.arg(string(buf))
}

// idParams reads "NIL" or a parenthesised list of field-value pairs.
func (p *parser) idParams() ([]string, error) {
	if c, ok := p.peek(); ok && (c == 'N' || c == 'n') {
		if a, _ := p.atom(); strings.EqualFold(a, "NIL") {
			return nil, nil
		}
		return nil, errSyntax
	}
	if !p.expect('(') {
		return nil, errSyntax
	}
	var args []string
	for !p.expect(')') {
		if len(args) > 0 && !p.sp() {
			return nil, errSyntax
		}
		k, err := p.string()
		if err != nil {
			return nil, err
		}
		if !p.sp() {
			return nil, errSyntax
		}
		v, err := p.nstring()
		if err != nil {
			return nil, err
		}
		args = append(args, k, v)
	}
	return args, nil
}
