package control

import (
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"switchboard/cluster"
	"switchboard/route"
)

// DefaultKickReason is what kicked IMAP clients read in "* BYE" (POP3
// clients in "-ERR") unless Options.KickReason says otherwise.
const DefaultKickReason = "Your mailbox has moved, please reconnect."

// ErrNoHolds is returned by Hold on a Control with neither a cluster nor
// a hold table.
var ErrNoHolds = errors.New("control: no hold table")

// Sessions is the session core as Control acts on it. cmd adapts
// *router.Server.
type Sessions interface {
	// Kick closes every live session of user on this node, telling the
	// client reason, and returns how many it closed.
	Kick(user, reason string) int
	// Hosts returns, one per live session of user on this node, the host
	// value the session was routed to ("mx1", as in route.Result.Hosts).
	Hosts(user string) []string
}

// Cache holds logged-in backend connections parked for reuse, such as
// the webmail connection cache. DropUser closes those of account and
// returns how many.
type Cache interface {
	DropUser(account string) int
}

// Cluster carries decisions to every node; *cluster.Cluster implements
// it. Its Handler (see Control.Handler) carries them out on each node,
// this one included.
type Cluster interface {
	Invalidate(user string, kick bool) error
	Hold(user string, held bool, ttl time.Duration) error
}

// Holds is the hold table of a node of its own; *gate.Local implements
// it.
type Holds interface {
	Hold(user string, held bool, ttl time.Duration) error
}

// Options configure a Control. New copies them.
type Options struct {
	// Holds is the hold table used when no cluster is set (see
	// SetCluster). Nil: Hold fails with ErrNoHolds without a cluster.
	Holds Holds
	// Routes drops cached routes; nil if the user map does not cache.
	Routes route.Invalidator
	// Cache, if set, loses a user's parked connections whenever the user
	// is invalidated, kicked or put on hold here.
	Cache Cache
	// KickReason is the text kicked clients read; empty means
	// DefaultKickReason.
	KickReason string
	// Logger receives one line per action on this node; nil means
	// slog.Default().
	Logger *slog.Logger
}

func (o *Options) kickReason() string {
	if o.KickReason != "" {
		return o.KickReason
	}
	return DefaultKickReason
}

// Control carries out invalidations, kicks and holds. Its methods are
// safe for concurrent use.
type Control struct {
	opts     Options
	log      *slog.Logger
	cluster  atomic.Pointer[Cluster]
	sessions atomic.Pointer[Sessions]
}

// New returns a Control acting on this node alone until SetCluster is
// called.
func New(opts *Options) *Control {
	c := &Control{opts: *opts, log: opts.Logger}
	if c.log == nil {
		c.log = slog.Default()
	}
	return c
}

// SetCluster makes Invalidate and Hold act on every node through cl.
// Call it before serving requests; cl's Handler should be c.Handler().
func (c *Control) SetCluster(cl Cluster) { c.cluster.Store(&cl) }

// SetSessions gives Control the session core that kicks act on. Until it
// is called, kicks close nothing (there are no sessions yet).
func (c *Control) SetSessions(s Sessions) { c.sessions.Store(&s) }

func (c *Control) clusterOrNil() Cluster {
	if p := c.cluster.Load(); p != nil {
		return *p
	}
	return nil
}

func (c *Control) sessionsOrNil() Sessions {
	if p := c.sessions.Load(); p != nil {
		return *p
	}
	return nil
}

// Invalidate drops user's cached route, and with kick closes user's
// sessions, on every node. user must be folded (route.Fold). With a
// cluster, an error wrapping cluster.ErrNotDelivered means it was done
// but not confirmed by every member directly.
func (c *Control) Invalidate(user string, kick bool) error {
	if cl := c.clusterOrNil(); cl != nil {
		return cl.Invalidate(user, kick) // the cluster calls Handler here too
	}
	c.invalidateHere(user)
	if kick {
		c.kickHere(user)
	}
	return nil
}

// Hold puts user on hold for ttl (a default if zero) or releases them
// (held false), on every node. user must be folded (route.Fold).
func (c *Control) Hold(user string, held bool, ttl time.Duration) error {
	if cl := c.clusterOrNil(); cl != nil {
		return cl.Hold(user, held, ttl) // the cluster calls Handler if it changed
	}
	if c.opts.Holds == nil {
		return ErrNoHolds
	}
	if err := c.opts.Holds.Hold(user, held, ttl); err != nil {
		return err
	}
	c.holdChanged(user, held)
	return nil
}

// EntryChanged tells this node that the directory entry of logins (every
// name it answers to) changed: it now routes to newHosts, or it was
// deleted. It drops their cached routes and parked connections here, and
// kicks a login's sessions if the entry was deleted or one of them runs
// on a host no longer among newHosts (Sessions.Kick closes all of a
// user's sessions, so the others go too; their clients reconnect to the
// same place). It acts on this node only: every node runs its own
// watcher.
func (c *Control) EntryChanged(logins []string, newHosts []string, deleted bool) {
	for _, login := range logins {
		user := route.Fold(login)
		c.invalidateHere(user)
		if deleted || c.onOtherHost(user, newHosts) {
			c.kickHere(user)
		}
	}
}

// onOtherHost reports whether one of user's sessions here runs on a host
// not among hosts.
func (c *Control) onOtherHost(user string, hosts []string) bool {
	s := c.sessionsOrNil()
	if s == nil {
		return false
	}
	for _, h := range s.Hosts(user) {
		if !containsFold(hosts, h) {
			return true
		}
	}
	return false
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// invalidateHere drops user's cached route and parked connections on
// this node.
func (c *Control) invalidateHere(user string) {
	if c.opts.Routes != nil {
		c.opts.Routes.Invalidate(user)
	}
	c.log.Info("route invalidated", "user", user)
	c.dropParked(user)
}

// kickHere closes user's sessions and parked connections on this node.
func (c *Control) kickHere(user string) {
	if s := c.sessionsOrNil(); s != nil {
		n := s.Kick(user, c.opts.kickReason())
		c.log.Info("sessions kicked", "user", user, "sessions", n)
	}
	c.dropParked(user)
}

// holdChanged is told that user went on hold or off it. The gate asks
// the hold table itself; a new hold only costs the user's parked
// connections, which must not outlive the move.
func (c *Control) holdChanged(user string, held bool) {
	c.log.Info("hold changed", "user", user, "held", held)
	if held {
		c.dropParked(user)
	}
}

func (c *Control) dropParked(user string) {
	if c.opts.Cache == nil {
		return
	}
	if n := c.opts.Cache.DropUser(user); n > 0 {
		c.log.Info("parked connections dropped", "user", user, "connections", n)
	}
}

// Handler returns the cluster's Handler: what this node does when a
// decision reaches it.
func (c *Control) Handler() cluster.Handler { return handler{c} }

// handler implements cluster.Handler for a Control; its methods would
// clash with Control's own Invalidate and Hold.
type handler struct{ c *Control }

func (h handler) Invalidate(user string)      { h.c.invalidateHere(user) }
func (h handler) Kick(user string)            { h.c.kickHere(user) }
func (h handler) Hold(user string, held bool) { h.c.holdChanged(user, held) }
