package router

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"switchboard/route"
	"switchboard/router/internal/pump"
	"switchboard/router/internal/wire"
)

// backendConn is a connection to a backend, from dial to close: the
// protocol logins see its wire.Backend (Conn, W, R, Addr, Greeting).
type backendConn struct {
	wire.Backend
	host string // the host value from the map ("mx1")
	// ready is when the greeting was read (pre-dialled connections age).
	ready time.Time
}

func (b *backendConn) Close() error {
	if b.R != nil {
		b.R.Reset(nil)
		readerPool.Put(b.R)
		b.R = nil
	}
	return b.Conn.Close()
}

// connectBackend dials addr and reads the backend's greeting, which must
// be "* OK" (IMAP) or "+OK" (POP3).
func (s *Server) connectBackend(ctx context.Context, proto, host, addr string) (*backendConn, error) {
	b, err := s.dialBackend(ctx, host, addr)
	if err != nil {
		return nil, err
	}
	if err := b.Conn.SetDeadline(time.Now().Add(s.opts.loginTimeout())); err != nil {
		b.Close()
		return nil, err
	}
	line, err := wire.ReadLine(b.R)
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
		return nil, errors.New("unexpected greeting: " + wire.Truncate(line))
	}
	b.Greeting = append([]byte(nil), line...)
	b.ready = time.Now()
	b.Conn.SetDeadline(time.Time{})
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
	b := &backendConn{host: host}
	b.Conn, b.Addr = c, addr
	b.TCP, _ = c.(*net.TCPConn)
	if s.opts.BackendTLS != nil {
		cfg := s.opts.BackendTLS
		if cfg.ServerName == "" {
			cfg = cfg.Clone()
			cfg.ServerName, _, _ = net.SplitHostPort(addr)
		}
		var under net.Conn = c
		if b.TCP != nil {
			under = pump.RawConn(b.TCP)
		}
		tc := tls.Client(under, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("TLS to backend: %w", err)
		}
		b.Conn = tc
	}
	b.R = readerPool.Get().(*bufio.Reader)
	b.W = pump.AttachIO(b.Conn, b.R)
	b.Sent = pump.QuickAck
	b.Timeout = s.opts.loginTimeout()
	b.Caps = s.caps
	b.Log = s.log
	return b, nil
}

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

// Get returns what addr announced, if it is recent enough.
func (c *capCache) Get(addr string) ([]string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[addr]
	if !ok || time.Since(e.fetched) > capTTL {
		return nil, false
	}
	return e.caps, true
}

// Put records what addr announced.
func (c *capCache) Put(addr string, caps []string) {
	c.mu.Lock()
	c.m[addr] = capEntry{caps: caps, fetched: time.Now()}
	c.mu.Unlock()
}
