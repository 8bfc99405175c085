package conncache

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of the bounds in Options.
const (
	// DefaultPerUser is two: Roundcube's mail page opens two connections
	// at once (the list and the preview), and every parked connection is
	// a Dovecot imap process that counts towards the backend's
	// mail_max_userip_connections (default 10) with the live ones, so a
	// larger default would eat into that limit for little gain.
	DefaultPerUser = 2
	// DefaultTotal bounds the parked connections of the whole node.
	DefaultTotal = 1000
	// DefaultIdleTimeout is up-imapproxy's cache_expiration_time (300 s):
	// a webmail user clicks again within minutes or has gone.
	DefaultIdleTimeout = 300 * time.Second
	// DefaultMaxAge bounds how long one backend login is reused, and so
	// how long an old password keeps working through the cache after a
	// change the cluster did not see.
	DefaultMaxAge = 30 * time.Minute
)

// maxIdleTimeout: RFC 9051 section 5.4 lets a server log out a client
// idle for 30 minutes; a connection parked longer is likely dead.
const maxIdleTimeout = 30 * time.Minute

// Options configure a Cache. The zero value is usable: every bound has a
// default, given with its field.
type Options struct {
	// PerUser bounds the parked connections of one account, across
	// backends and passwords; parking one more evicts the account's
	// oldest. Zero means DefaultPerUser (2); negative is invalid.
	PerUser int
	// Total bounds the parked connections of the cache; parking one more
	// evicts the least recently parked of all. Zero means DefaultTotal
	// (1000); negative is invalid.
	Total int
	// IdleTimeout is how long a connection may stay parked. Zero means
	// DefaultIdleTimeout (300 s); negative or 30 minutes and more is
	// invalid.
	IdleTimeout time.Duration
	// MaxAge is how long after its login a connection may still be
	// handed out; it is counted from the backend login, not from parking.
	// Zero means DefaultMaxAge (30 min); negative is invalid.
	MaxAge time.Duration

	// Alive, if set, is asked before Take hands a connection out (a NOOP
	// round trip, or a non-blocking read that sees no EOF and no BYE). A
	// connection it calls dead is closed and the next one tried. It is
	// called without the cache's lock held and may block for a round
	// trip. Nil means every unexpired connection is taken as alive.
	Alive func(Conn) bool
	// Now is the clock. Nil means time.Now. Tests set it.
	Now func() time.Time
	// Registerer, if set, receives the cache's metrics; New panics if
	// they are registered there already (one Cache per registerer). Nil
	// means they are kept but not registered.
	Registerer prometheus.Registerer
}

func (o *Options) perUser() int {
	if o.PerUser == 0 {
		return DefaultPerUser
	}
	return o.PerUser
}

func (o *Options) total() int {
	if o.Total == 0 {
		return DefaultTotal
	}
	return o.Total
}

func (o *Options) idleTimeout() time.Duration {
	if o.IdleTimeout == 0 {
		return DefaultIdleTimeout
	}
	return o.IdleTimeout
}

func (o *Options) maxAge() time.Duration {
	if o.MaxAge == 0 {
		return DefaultMaxAge
	}
	return o.MaxAge
}

func (o *Options) now() time.Time {
	if o.Now == nil {
		return time.Now()
	}
	return o.Now()
}

// Check reports every invalid bound, one error each, in field order. The
// errors name the field, so config can prefix them with its own key.
func (o *Options) Check() []error {
	var errs []error
	if o.PerUser < 0 {
		errs = append(errs, fmt.Errorf("PerUser %d: must not be negative", o.PerUser))
	}
	if o.Total < 0 {
		errs = append(errs, fmt.Errorf("Total %d: must not be negative", o.Total))
	}
	if o.PerUser >= 0 && o.Total >= 0 && o.perUser() > o.total() {
		errs = append(errs, fmt.Errorf("PerUser %d: more than Total %d", o.perUser(), o.total()))
	}
	if o.IdleTimeout < 0 {
		errs = append(errs, fmt.Errorf("IdleTimeout %v: must not be negative", o.IdleTimeout))
	} else if o.idleTimeout() >= maxIdleTimeout {
		errs = append(errs, fmt.Errorf("IdleTimeout %v: must be below %v, after which a server may log an idle client out (RFC 9051 section 5.4)", o.IdleTimeout, maxIdleTimeout))
	}
	if o.MaxAge < 0 {
		errs = append(errs, fmt.Errorf("MaxAge %v: must not be negative", o.MaxAge))
	}
	return errs
}

// ErrInvalidOptions is wrapped by New's error when Check finds a problem.
var ErrInvalidOptions = errors.New("conncache: invalid options")
