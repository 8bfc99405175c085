package router

import (
	"errors"
	"net/netip"
	"sync"
	"time"

	"switchboard/route"
)

// Defaults of the login phase's bounds.
const (
	// DefaultLoginDeadline: a client must have logged in this long after
	// connecting, however busy it keeps the session with NOOP or
	// CAPABILITY (Dovecot drops clients that have not logged in after
	// three minutes too).
	DefaultLoginDeadline = 3 * time.Minute
	// DefaultMaxPreauth bounds the sessions in the login phase on a node.
	DefaultMaxPreauth = 5000
	// DefaultMaxPreauthPerSource bounds them per client address (per /64
	// for IPv6), trusted networks excepted (the webmail).
	DefaultMaxPreauthPerSource = 100
)

func (o *Options) loginDeadline() time.Duration {
	return orDefault(o.LoginDeadline, DefaultLoginDeadline)
}

func (o *Options) maxPreauth() int {
	if o.MaxPreauth <= 0 {
		return DefaultMaxPreauth
	}
	return o.MaxPreauth
}

func (o *Options) maxPreauthPerSource() int {
	if o.MaxPreauthPerSource <= 0 {
		return DefaultMaxPreauthPerSource
	}
	return o.MaxPreauthPerSource
}

// errTooManyPreauth: the login phase is full, for the node or the source.
var errTooManyPreauth = errors.New("too many sessions in the login phase")

// preauthCount counts the sessions in the login phase, in total and per
// source.
type preauthCount struct {
	mu       sync.Mutex
	total    int
	bySource map[netip.Addr]int
}

// sourceKey is what a client address counts under: itself for IPv4, its
// /64 for IPv6 (one subscriber's prefix).
func sourceKey(a netip.Addr) netip.Addr {
	if a.Is6() && !a.Is4In6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a.Unmap()
}

// enterPreauth counts sess into the login phase, or refuses it when the
// node or its source is at the bound.
func (s *Server) enterPreauth(sess *session) error {
	c := &s.preauth
	key := sourceKey(sess.client.Addr())
	perSource := !sess.trusted()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.total >= s.opts.maxPreauth() {
		return errTooManyPreauth
	}
	if perSource {
		if c.bySource[key] >= s.opts.maxPreauthPerSource() {
			return errTooManyPreauth
		}
		if c.bySource == nil {
			c.bySource = make(map[netip.Addr]int)
		}
		c.bySource[key]++
		sess.preauthPerSource = true
	}
	c.total++
	sess.inPreauth = true
	return nil
}

// leavePreauth counts sess out of the login phase (logged in, or over).
func (s *Server) leavePreauth(sess *session) {
	if !sess.inPreauth {
		return
	}
	sess.inPreauth = false
	c := &s.preauth
	c.mu.Lock()
	c.total--
	if sess.preauthPerSource {
		key := sourceKey(sess.client.Addr())
		if n := c.bySource[key] - 1; n > 0 {
			c.bySource[key] = n
		} else {
			delete(c.bySource, key)
		}
	}
	c.mu.Unlock()
}

// refusePreauth tells a client refused by enterPreauth to come back.
func (sess *session) refusePreauth(err error) {
	line := "* BYE [UNAVAILABLE] Too many connections, please try again later.\r\n"
	if sess.l.cfg.Protocol == route.POP3 {
		line = "-ERR [SYS/TEMP] Too many connections, please try again later.\r\n"
	}
	if sess.l.cfg.TLS != TLSImplicit {
		sess.Write([]byte(line)) // over TLS the handshake would come first: just close
	}
	sess.srv.stats.PreauthLimited.Add(1)
	sess.fail(route.OutcomeRefused, err)
}
