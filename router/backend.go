package router

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"switchboard/route"
	"switchboard/router/internal/pump"
	"switchboard/router/internal/wire"
)

// backendConn is a connection to a backend, from dial to close.
type backendConn struct {
	conn net.Conn     // plain TCP or *tls.Conn over it
	tcp  *net.TCPConn // the TCP connection under conn
	br   *bufio.Reader
	out  io.Writer // writes to conn (raw system calls if it is plain TCP)
	host string    // the host value from the map ("mx1")
	addr string    // the address dialled
	// greeting is the backend's first line, without CRLF.
	greeting []byte
	// ready is when the greeting was read (pre-dialled connections age).
	ready time.Time
}

func (b *backendConn) Close() error {
	if b.br != nil {
		b.br.Reset(nil)
		readerPool.Put(b.br)
		b.br = nil
	}
	return b.conn.Close()
}

// connectBackend dials addr and reads the backend's greeting, which must
// be "* OK" (IMAP) or "+OK" (POP3).
func (s *Server) connectBackend(ctx context.Context, proto, host, addr string) (*backendConn, error) {
	b, err := s.dialBackend(ctx, host, addr)
	if err != nil {
		return nil, err
	}
	if err := b.conn.SetDeadline(time.Now().Add(s.opts.loginTimeout())); err != nil {
		b.Close()
		return nil, err
	}
	line, err := wire.ReadLine(b.br)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("greeting: %w", err)
	}
	want := "* OK"
	if proto == route.POP3 {
		want = "+OK"
	}
	if !bytes.HasPrefix(line, []byte(want)) {
		b.Close()
		return nil, errors.New("unexpected greeting: " + truncate(line))
	}
	b.greeting = append([]byte(nil), line...)
	b.ready = time.Now()
	b.conn.SetDeadline(time.Time{})
	return b, nil
}

// dialBackend connects to addr (TLS when configured) within the dial
// timeout, TLS handshake included.
func (s *Server) dialBackend(ctx context.Context, host, addr string) (*backendConn, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.dialTimeout())
	defer cancel()
	// No TCP keepalive towards backends: parked connections are retired
	// by age and spliced ones by the idle timeout, and the setsockopt
	// calls are measurable per login.
	d := net.Dialer{KeepAlive: -1}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	b := &backendConn{conn: c, host: host, addr: addr}
	b.tcp, _ = c.(*net.TCPConn)
	if s.opts.BackendTLS != nil {
		cfg := s.opts.BackendTLS
		if cfg.ServerName == "" {
			cfg = cfg.Clone()
			cfg.ServerName, _, _ = net.SplitHostPort(addr)
		}
		var under net.Conn = c
		if b.tcp != nil {
			under = pump.RawConn(b.tcp)
		}
		tc := tls.Client(under, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("TLS to backend: %w", err)
		}
		b.conn = tc
	}
	b.br = readerPool.Get().(*bufio.Reader)
	b.out = pump.AttachIO(b.conn, b.br)
	return b, nil
}

// Errors of a backend login, classified for the client's answer.
var (
	// errAuthFailed: the backend refused the credentials.
	errAuthFailed = errors.New("authentication failed")
)

// unavailableError wraps why a login could not be served; the client gets
// [UNAVAILABLE] (IMAP) or [SYS/TEMP] (POP3) at once.
type unavailableError struct{ err error }

func (e *unavailableError) Error() string { return e.err.Error() }
func (e *unavailableError) Unwrap() error { return e.err }

func unavailable(format string, args ...any) error {
	return &unavailableError{fmt.Errorf(format, args...)}
}

// backendNo is a refusal from the backend other than a failed
// authentication (in use, over quota…); its line is passed to the client.
type backendNo struct{ line []byte }

func (e *backendNo) Error() string { return "backend refused: " + string(e.line) }

// transportError marks a failure talking to a backend before it judged the
// credentials: the next standby may be tried.
type transportError struct{ err error }

func (e *transportError) Error() string { return e.err.Error() }
func (e *transportError) Unwrap() error { return e.err }

// capCache remembers what each backend announced (POP3 CAPA), so later
// logins to it can pipeline without asking again.
type capCache struct {
	mu sync.Mutex
	m  map[string]capEntry
}

type capEntry struct {
	caps    []string
	fetched time.Time
}

// capTTL is how long announced capabilities are trusted.
const capTTL = 5 * time.Minute

func newCapCache() *capCache { return &capCache{m: make(map[string]capEntry)} }

func (c *capCache) get(addr string) ([]string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[addr]
	if !ok || time.Since(e.fetched) > capTTL {
		return nil, false
	}
	return e.caps, true
}

func (c *capCache) put(addr string, caps []string) {
	c.mu.Lock()
	c.m[addr] = capEntry{caps: caps, fetched: time.Now()}
	c.mu.Unlock()
}

func hasCap(caps []string, name string) bool {
	for _, c := range caps {
		if strings.EqualFold(c, name) {
			return true
		}
	}
	return false
}
