package loadgen

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"sync"
)

// tlsConfigs hands out one client TLS configuration per dialled address.
// When the target names no ServerName, the address's host (an IP) is
// verified against the certificate's IP SANs.
type tlsConfigs struct {
	base *tls.Config
	mu   sync.Mutex
	m    map[string]*tls.Config
}

func newTLSConfigs(t *Target) (*tlsConfigs, error) {
	base, err := t.TLSConfig()
	if err != nil {
		return nil, err
	}
	return &tlsConfigs{base: base, m: make(map[string]*tls.Config)}, nil
}

func (tc *tlsConfigs) get(addr string) *tls.Config {
	if tc.base.ServerName != "" {
		return tc.base
	}
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if c, ok := tc.m[addr]; ok {
		return c
	}
	c := tc.base.Clone()
	if h, _, err := net.SplitHostPort(addr); err == nil {
		c.ServerName = h
	}
	tc.m[addr] = c
	return c
}

// open dials and runs the pre-authentication part of a session:
// greeting, STARTTLS if asked for, and login. IMAP sessions also SELECT
// INBOX.
func open(ctx context.Context, t *Target, tc *tlsConfigs, u *User, p Proto, m TLSMode) (*Conn, error) {
	addr, err := t.Addr(u, p, m)
	if err != nil {
		return nil, err
	}
	cfg := tc.get(addr)
	c, err := Dial(ctx, addr, m, cfg)
	if err != nil {
		return nil, err
	}
	// Abandon the login if ctx ends; the caller decides what holds
	// the conn afterwards.
	c.CloseOnDone(ctx)
	if err := login(ctx, c, cfg, u, p, m); err != nil {
		c.Close()
		return nil, err
	}
	c.stop()
	c.stop = nil
	return c, nil
}

func login(ctx context.Context, c *Conn, cfg *tls.Config, u *User, p Proto, m TLSMode) error {
	switch p {
	case IMAP:
		if err := c.IMAPGreeting(); err != nil {
			return err
		}
		if m == TLSStartTLS {
			if err := c.IMAPStartTLS(ctx, cfg); err != nil {
				return err
			}
		}
		if err := c.IMAPLogin(u.Mail, u.Password); err != nil {
			return err
		}
		return c.IMAP("SELECT INBOX")
	case POP3:
		if err := c.POP3Greeting(); err != nil {
			return err
		}
		if m == TLSStartTLS {
			if err := c.POP3StartTLS(ctx, cfg); err != nil {
				return err
			}
		}
		if err := c.POP3("USER ", u.Mail); err != nil {
			return err
		}
		return c.POP3("PASS ", u.Password)
	}
	return fmt.Errorf("loadgen: unknown protocol %q", p)
}

// imapSession is workload 1: connect, [TLS], LOGIN, SELECT INBOX,
// FETCH 1:10 (FLAGS ENVELOPE), LOGOUT.
func imapSession(ctx context.Context, t *Target, tc *tlsConfigs, u *User, m TLSMode) error {
	c, err := open(ctx, t, tc, u, IMAP, m)
	if err != nil {
		return err
	}
	c.CloseOnDone(ctx)
	defer c.Close()
	if err := c.IMAP("FETCH 1:10 (FLAGS ENVELOPE)"); err != nil {
		return err
	}
	return c.IMAPLogout()
}

// pop3Session is workload 2: connect, [TLS], USER/PASS, STAT, RETR 1, QUIT.
func pop3Session(ctx context.Context, t *Target, tc *tlsConfigs, u *User, m TLSMode) error {
	c, err := open(ctx, t, tc, u, POP3, m)
	if err != nil {
		return err
	}
	c.CloseOnDone(ctx)
	defer c.Close()
	if err := c.POP3("STAT"); err != nil {
		return err
	}
	if err := c.POP3Multi("RETR 1"); err != nil {
		return err
	}
	return c.POP3("QUIT")
}

// bulkFetch fetches message seq with BODY.PEEK[] and returns the literal
// bytes received.
func bulkFetch(c *Conn, seq int) (int64, error) {
	before := c.Body
	err := c.IMAP("FETCH ", strconv.Itoa(seq), " BODY.PEEK[]")
	return c.Body - before, err
}
