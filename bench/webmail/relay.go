package main

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"
)

// Relay limits.
const (
	relayDialTimeout = 5 * time.Second
	relayMaxLine     = 64 << 10 // longer lines are passed on but not parsed
	relayBufSize     = 32 << 10
)

// relaySession is what the relay saw of one client connection.
type relaySession struct {
	Start    time.Time
	Upstream string // the relay's local address towards the target
	Commands int    // tagged commands the client sent
	// LoginLatency is from the end of the client's LOGIN or AUTHENTICATE
	// line to the end of the tagged answer; zero if none.
	LoginLatency time.Duration
	LoginAnswer  string // the tagged answer's first bytes
}

// relay is a counting TCP relay in front of an IMAP server: bytes pass
// unchanged, in the sizes they were read, while a copy is parsed to count
// the client's commands and time its login. It is how the benchmark sees
// what Roundcube sends, whatever is behind.
type relay struct {
	ln     net.Listener
	target string
	log    *slog.Logger

	mu       sync.Mutex
	sessions []*relaySession
	wg       sync.WaitGroup
}

// newRelay listens on addr ("ip:0") and relays to target.
func newRelay(addr, target string, log *slog.Logger) (*relay, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	r := &relay{ln: ln, target: target, log: log}
	go r.serve()
	return r, nil
}

// Addr is the address clients connect to.
func (r *relay) Addr() string { return r.ln.Addr().String() }

// Close stops accepting and waits for the sessions.
func (r *relay) Close() {
	r.ln.Close()
	r.wg.Wait()
}

// Take returns the sessions recorded since the last Take and forgets them.
// Call it once the clients have logged out.
func (r *relay) Take() []*relaySession {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.sessions
	r.sessions = nil
	return s
}

func (r *relay) serve() {
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.wg.Add(1)
		go r.handle(c)
	}
}

// handle relays one connection.
func (r *relay) handle(client net.Conn) {
	defer r.wg.Done()
	defer client.Close()
	up, err := net.DialTimeout("tcp", r.target, relayDialTimeout)
	if err != nil {
		r.log.Warn("relay dial", "target", r.target, "err", err)
		return
	}
	defer up.Close()
	s := &relaySession{Start: time.Now(), Upstream: up.LocalAddr().String()}
	st := &loginTimer{}
	donec := make(chan struct{})
	go relayServer(up, client, s, st, donec)
	relayClient(client, up, s, st)
	up.(*net.TCPConn).CloseWrite()
	<-donec
	r.mu.Lock()
	r.sessions = append(r.sessions, s)
	r.mu.Unlock()
}

// loginTimer links the client side (which sees the login command) and
// the server side (which sees its answer).
type loginTimer struct {
	mu   sync.Mutex
	tag  string
	sent time.Time
}

// relayClient copies client→server and parses the client's commands.
func relayClient(client, up net.Conn, s *relaySession, lt *loginTimer) {
	p := lineParser{}
	saslPending := false // AUTHENTICATE without an initial response: next line is the SASL answer
	p.onLine = func(line []byte, continued bool) {
		if continued {
			return // the rest of a command after a literal
		}
		if saslPending {
			saslPending = false
			return
		}
		tag, cmd, rest := splitCommand(line)
		if tag == "" || bytes.EqualFold(line, []byte("DONE")) {
			return
		}
		s.Commands++
		switch cmd {
		case "LOGIN", "AUTHENTICATE":
			lt.mu.Lock()
			lt.tag, lt.sent = tag, time.Now()
			lt.mu.Unlock()
			if cmd == "AUTHENTICATE" && len(bytes.Fields(rest)) < 2 {
				saslPending = true
			}
		}
	}
	copyParsed(up, client, &p)
}

// relayServer copies server→client and times the login's tagged answer.
func relayServer(up, client net.Conn, s *relaySession, lt *loginTimer, donec chan<- struct{}) {
	defer close(donec)
	p := lineParser{}
	p.onLine = func(line []byte, continued bool) {
		if continued {
			return
		}
		lt.mu.Lock()
		tag, sent := lt.tag, lt.sent
		lt.mu.Unlock()
		if tag != "" && s.LoginLatency == 0 && bytes.HasPrefix(line, []byte(tag+" ")) {
			s.LoginLatency = time.Since(sent)
			s.LoginAnswer = string(line[:min(len(line), 80)])
		}
	}
	copyParsed(client, up, &p)
	client.(*net.TCPConn).CloseWrite()
}

// copyParsed copies src to dst in the chunks it reads and feeds each
// chunk to p after writing it.
func copyParsed(dst, src net.Conn, p *lineParser) {
	buf := make([]byte, relayBufSize)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			p.feed(buf[:n])
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				return
			}
			return
		}
	}
}

// lineParser splits an IMAP stream into lines, skipping literals by
// count ({n} or {n+} at the end of a line). onLine gets each line without
// CRLF and whether it continues a line that ended in a literal.
type lineParser struct {
	line      []byte
	skip      int64
	continued bool
	onLine    func(line []byte, continued bool)
}

func (p *lineParser) feed(b []byte) {
	for len(b) > 0 {
		if p.skip > 0 {
			n := min(int64(len(b)), p.skip)
			p.skip -= n
			b = b[n:]
			continue
		}
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			if len(p.line) < relayMaxLine {
				p.line = append(p.line, b...)
			}
			return
		}
		if len(p.line) < relayMaxLine {
			p.line = append(p.line, b[:i]...)
		}
		b = b[i+1:]
		line := bytes.TrimSuffix(p.line, []byte("\r"))
		p.onLine(line, p.continued)
		p.skip = literalSize(line)
		p.continued = p.skip >= 0 && bytes.HasSuffix(line, []byte("}"))
		if p.skip < 0 {
			p.skip = 0
		}
		p.line = p.line[:0]
	}
}

// literalSize returns n if line ends with {n} or {n+}, else -1.
func literalSize(line []byte) int64 {
	if !bytes.HasSuffix(line, []byte("}")) {
		return -1
	}
	i := bytes.LastIndexByte(line, '{')
	if i < 0 {
		return -1
	}
	num := bytes.TrimSuffix(line[i+1:len(line)-1], []byte("+"))
	n, err := strconv.ParseInt(string(num), 10, 64)
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// splitCommand returns a command line's tag, upper-case command name
// (with UID folded in: "UID FETCH") and the rest.
func splitCommand(line []byte) (tag, cmd string, rest []byte) {
	f := bytes.SplitN(line, []byte(" "), 3)
	if len(f) < 2 || len(f[0]) == 0 || f[0][0] == '*' || f[0][0] == '+' {
		return "", "", nil
	}
	tag, cmd = string(f[0]), string(bytes.ToUpper(f[1]))
	if len(f) == 3 {
		rest = f[2]
	}
	if cmd == "UID" && len(rest) > 0 {
		g := bytes.SplitN(rest, []byte(" "), 2)
		cmd += " " + string(bytes.ToUpper(g[0]))
		rest = nil
		if len(g) == 2 {
			rest = g[1]
		}
	}
	return tag, cmd, rest
}
