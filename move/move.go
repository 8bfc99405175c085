package move

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"
)

// Defaults of Options.
const (
	// DefaultHoldValue is what the hold attribute is set to while the
	// final pass runs; the MTA's transport lookup maps it to a
	// temporary failure.
	DefaultHoldValue = "hold"
	// DefaultHoldTTL is how long the cluster-wide login hold lasts if
	// the move never releases it (the command was killed).
	DefaultHoldTTL = 10 * time.Minute
	// DefaultSettle is the wait between the two kicks, for a delivery or
	// a login that read the old route just before the hold to finish:
	// at least the MTA's route-cache lag.
	DefaultSettle = 2 * time.Second
	// DefaultSessionWait is how long the move waits, after the second
	// kick, for the user's last session on the source to end.
	DefaultSessionWait = 10 * time.Second
	// DefaultAttribute is the host attribute, as ldapmap's.
	DefaultAttribute = "host"
	// DefaultDoveadmTimeout bounds one doveadm request, a pre-copy pass
	// of a large mailbox included.
	DefaultDoveadmTimeout = 30 * time.Minute
)

const (
	// rollbackTimeout bounds undoing a failed move, which runs after the
	// move's own context may have been cancelled (Ctrl-C).
	rollbackTimeout = 30 * time.Second
	// sessionPoll is how often the source is asked for sessions left.
	sessionPoll = 100 * time.Millisecond
	// commitRetries is how often the steps after the LDAP change are
	// tried before the move gives up on them (the move is done then).
	commitRetries = 3
	// commitRetryDelay is the wait between those tries.
	commitRetryDelay = time.Second
)

// Cluster is the cluster-wide control the admin API offers.
type Cluster interface {
	// Hold refuses the user's logins on every node for ttl.
	Hold(user string, ttl time.Duration) error
	// Release ends a hold.
	Release(user string) error
	// Invalidate drops the user's cached route on every node and, with
	// kick, closes the user's sessions.
	Invalidate(user string, kick bool) error
}

// Backend is one Dovecot backend as a move drives it; *Doveadm is the
// implementation.
type Backend interface {
	// Status returns the user's folders without flag digests.
	Status(ctx context.Context, user string) ([]Folder, error)
	// Snapshot returns the user's folders with flag digests.
	Snapshot(ctx context.Context, user string) ([]Folder, error)
	// PullFrom makes the user's mailbox here identical to the one on the
	// backend whose doveadm TCP address is source, writing only here;
	// full compares every message, not only recent changes.
	PullFrom(ctx context.Context, user, source string, full bool) error
	// Kick closes the user's sessions on the backend.
	Kick(ctx context.Context, user string) error
	// Sessions counts the user's sessions on the backend.
	Sessions(ctx context.Context, user string) (int, error)
	// DsyncAddr is the backend's doveadm TCP address as the other
	// backends reach it.
	DsyncAddr() string
}

// Options configures a Mover.
type Options struct {
	// Directory reads the user's entry and changes its hosts. Required.
	Directory Directory
	// Cluster holds, kicks and releases the user on every node. Required.
	Cluster Cluster
	// Backends are the backends' doveadm APIs by host value. The source
	// and the destination of a move must be here.
	Backends map[string]Backend
	// Attribute is the host attribute. Empty means "host".
	Attribute string
	// HoldAttribute is set to HoldValue during the final pass. Empty
	// means Attribute: the host itself says "hold". Another attribute is
	// deleted at the end (and on rollback), so it must be otherwise
	// unused.
	HoldAttribute string
	// HoldValue is the hold attribute's value during the final pass.
	// Empty means DefaultHoldValue.
	HoldValue string
	// HoldTTL is the login hold's lifetime. Zero means DefaultHoldTTL.
	HoldTTL time.Duration
	// Settle is the wait between the two kicks. Zero means DefaultSettle.
	Settle time.Duration
	// SessionWait bounds the wait for the source's last session. Zero
	// means DefaultSessionWait.
	SessionWait time.Duration
	// Overwrite lets the pre-copy replace mail the destination already
	// holds for the user (a copy of an earlier, interrupted move).
	// Default false: such a move is refused.
	Overwrite bool
	// Logger receives one line per step. Nil means slog.Default().
	Logger *slog.Logger
	// Progress receives the human-readable progress lines. Nil means
	// none.
	Progress io.Writer
}

func (o *Options) attribute() string {
	if o.Attribute != "" {
		return o.Attribute
	}
	return DefaultAttribute
}

func (o *Options) holdAttribute() string {
	if o.HoldAttribute != "" {
		return o.HoldAttribute
	}
	return o.attribute()
}

func (o *Options) holdValue() string {
	if o.HoldValue != "" {
		return o.HoldValue
	}
	return DefaultHoldValue
}

func (o *Options) holdTTL() time.Duration {
	if o.HoldTTL > 0 {
		return o.HoldTTL
	}
	return DefaultHoldTTL
}

func (o *Options) settle() time.Duration {
	if o.Settle > 0 {
		return o.Settle
	}
	return DefaultSettle
}

func (o *Options) sessionWait() time.Duration {
	if o.SessionWait > 0 {
		return o.SessionWait
	}
	return DefaultSessionWait
}

func (o *Options) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.Default()
}

// Mover moves mailboxes.
type Mover struct {
	opts Options
	log  *slog.Logger
}

// New returns a Mover; it copies opts.
func New(opts *Options) (*Mover, error) {
	if opts.Directory == nil || opts.Cluster == nil {
		return nil, errors.New("move: Options.Directory and Options.Cluster are required")
	}
	m := &Mover{opts: *opts}
	m.log = m.opts.logger().With("component", "move")
	return m, nil
}

// Plan is what a move will do, found out without changing anything.
type Plan struct {
	User   string
	DN     string
	Hosts  []string // the entry's host values before the move
	Source string   // Hosts[0]
	Dest   string
	// SourceFolders and DestFolders are the mailboxes on each side now.
	SourceFolders []Folder
	DestFolders   []Folder
}

// Steps describes the plan step by step, for -dry-run.
func (p *Plan) Steps(o *Options) []string {
	msgs, bytes := totals(p.SourceFolders)
	hold := fmt.Sprintf("%s: %s", o.holdAttribute(), o.holdValue())
	commit := fmt.Sprintf("%s: %s", o.attribute(), p.Dest)
	if o.holdAttribute() != o.attribute() {
		commit += ", delete " + o.holdAttribute()
	}
	return []string{
		fmt.Sprintf("pre-copy: doveadm backup -R on %s from %s (%d messages, %s in %d folders) while the user works", p.Dest, p.Source, msgs, size(bytes), len(p.SourceFolders)),
		fmt.Sprintf("hold: refuse the user's logins on every node for at most %v; set %s on %s (mail deferred)", o.holdTTL(), hold, p.DN),
		fmt.Sprintf("kick: close the user's sessions on every node and on %s, wait %v, kick again, wait for none left", p.Source, o.settle()),
		fmt.Sprintf("final sync: doveadm backup -R -f on %s from %s (nothing writes on either side; every message compared)", p.Dest, p.Source),
		"verify: every folder's messages, UIDVALIDITY, UIDNEXT, mailbox GUID and flags equal on both sides",
		fmt.Sprintf("switch: set %s on %s", commit, p.DN),
		"invalidate: drop the cached route and kick on every node",
		"release: end the hold",
	}
}

// Result is what a move did.
type Result struct {
	Plan
	PreCopy   time.Duration // both pre-copy passes
	FinalSync time.Duration
	Blocked   time.Duration // from the hold to the release
	Messages  int           // on the destination, verified
	Bytes     int64
	Folders   int
}

// Plan looks the user up and checks that the move can start: the
// destination is a configured backend other than the source, both know
// the user, and the destination holds no mail for the user unless
// Options.Overwrite.
func (m *Mover) Plan(ctx context.Context, user, dest string) (*Plan, error) {
	dn, hosts, err := m.opts.Directory.Lookup(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("look up %s: %w", user, err)
	}
	p := &Plan{User: user, DN: dn, Hosts: hosts, Dest: dest}
	if len(hosts) == 0 {
		return nil, fmt.Errorf("%s has no %s", dn, m.opts.attribute())
	}
	p.Source = hosts[0]
	switch {
	case strings.EqualFold(p.Source, m.opts.holdValue()):
		return nil, fmt.Errorf("%s: %s is %q: another move holds it, or one was interrupted (see docs/moving-a-mailbox.md)", dn, m.opts.attribute(), p.Source)
	case strings.EqualFold(p.Source, dest):
		return nil, fmt.Errorf("%s already lives on %s", user, dest)
	}
	src, dst := m.opts.Backends[p.Source], m.opts.Backends[dest]
	if src == nil {
		return nil, fmt.Errorf("source %q: no doveadm API configured for it ([move.backends] or [hosts])", p.Source)
	}
	if dst == nil {
		return nil, fmt.Errorf("destination %q: no doveadm API configured for it ([move.backends] or [hosts])", dest)
	}
	if p.SourceFolders, err = src.Status(ctx, user); err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	if p.DestFolders, err = dst.Status(ctx, user); err != nil {
		return nil, fmt.Errorf("destination: %w", err)
	}
	if msgs, _ := totals(p.DestFolders); msgs > 0 && !m.opts.Overwrite {
		return nil, fmt.Errorf("%s already holds %d messages for %s: a copy of an earlier move? -overwrite replaces them with the source's", dest, msgs, user)
	}
	return p, nil
}

// Move moves user's mailbox to dest (a host value) while the user keeps
// working, and verifies it before switching. On any failure, or when
// ctx is cancelled, before the switch, it rolls back: the user stays on
// the source, whose mail it has never written, and the hold is released
// (or expires after Options.HoldTTL if even that fails). The error then
// says what failed and what was undone.
func (m *Mover) Move(ctx context.Context, user, dest string) (*Result, error) {
	p, err := m.Plan(ctx, user, dest)
	if err != nil {
		return nil, err
	}
	r := &Result{Plan: *p}
	mv := &run{m: m, r: r, src: m.opts.Backends[p.Source], dst: m.opts.Backends[dest], log: m.log.With("user", user, "source", p.Source, "dest", dest)}
	mv.progressf("moving %s from %s to %s (%s)", user, p.Source, dest, p.DN)
	if err := mv.preCopy(ctx); err != nil {
		return r, fmt.Errorf("pre-copy: %w (nothing was changed; the user stays on %s)", err, p.Source)
	}
	if err := mv.switchOver(ctx); err != nil {
		return r, mv.rollback(err)
	}
	mv.finish()
	return r, nil
}

// run is one move in progress.
type run struct {
	m        *Mover
	r        *Result
	src, dst Backend
	log      *slog.Logger

	held      bool // the login hold was asked for
	ldapHeld  bool // the hold attribute may have been set
	holdStart time.Time
}

func (mv *run) progressf(format string, args ...any) {
	if w := mv.m.opts.Progress; w != nil {
		fmt.Fprintf(w, format+"\n", args...)
	}
}

// step logs a finished step.
func (mv *run) step(name string, took time.Duration, attrs ...any) {
	mv.log.Info("move step", append([]any{"step", name, "took", took.Round(time.Millisecond)}, attrs...)...)
}

// preCopy runs two passes of doveadm backup -R onto the destination while
// the user works on the source: the first copies everything, the second
// what changed meanwhile, so that the final pass has little to do.
func (mv *run) preCopy(ctx context.Context) error {
	t0 := time.Now()
	for pass := 1; pass <= 2; pass++ {
		tp := time.Now()
		if err := mv.dst.PullFrom(ctx, mv.r.User, mv.src.DsyncAddr(), false); err != nil {
			return err
		}
		folders, err := mv.dst.Status(ctx, mv.r.User)
		if err != nil {
			return err
		}
		msgs, bytes := totals(folders)
		took := time.Since(tp)
		mv.progressf("pre-copy pass %d: %d messages, %s in %d folders on %s (%v)", pass, msgs, size(bytes), len(folders), mv.r.Dest, took.Round(time.Millisecond))
		mv.step("precopy", took, "pass", pass, "messages", msgs, "bytes", bytes, "folders", len(folders))
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	mv.r.PreCopy = time.Since(t0)
	return nil
}

// switchOver runs the hold, the kicks, the final sync, the verification
// and the LDAP switch. An error before the switch is rolled back by the
// caller.
func (mv *run) switchOver(ctx context.Context) error {
	o := &mv.m.opts
	user := mv.r.User

	t := time.Now()
	mv.held = true
	if err := o.Cluster.Hold(user, o.holdTTL()); err != nil {
		return fmt.Errorf("hold: %w", err)
	}
	mv.holdStart = t
	mv.ldapHeld = true
	if err := o.Directory.Modify(ctx, mv.r.DN, Change{o.holdAttribute(), []string{o.holdValue()}}); err != nil {
		return fmt.Errorf("hold: set %s: %w", o.holdAttribute(), err)
	}
	mv.progressf("hold: logins refused on every node, mail deferred (%s: %s)", o.holdAttribute(), o.holdValue())
	mv.step("hold", time.Since(t), "ttl", o.holdTTL())

	t = time.Now()
	if err := mv.kick(ctx); err != nil {
		return err
	}
	mv.step("kick", time.Since(t))

	t = time.Now()
	if err := mv.dst.PullFrom(ctx, user, mv.src.DsyncAddr(), true); err != nil {
		return fmt.Errorf("final sync: %w", err)
	}
	mv.r.FinalSync = time.Since(t)
	mv.progressf("final sync: %v", mv.r.FinalSync.Round(time.Millisecond))
	mv.step("finalsync", mv.r.FinalSync)

	t = time.Now()
	if err := mv.verify(ctx); err != nil {
		return err
	}
	mv.step("verify", time.Since(t), "folders", mv.r.Folders, "messages", mv.r.Messages)
	if err := ctx.Err(); err != nil {
		return err // the last moment to stop: the switch follows
	}

	t = time.Now()
	changes := []Change{{o.attribute(), []string{mv.r.Dest}}}
	if o.holdAttribute() != o.attribute() {
		changes = append(changes, Change{o.holdAttribute(), nil})
	}
	// Not ctx: once verified, an interrupt no longer stops the switch
	// halfway between asking and knowing.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
	defer cancel()
	if err := o.Directory.Modify(sctx, mv.r.DN, changes...); err != nil {
		return fmt.Errorf("switch %s to %s: %w", o.attribute(), mv.r.Dest, err)
	}
	mv.ldapHeld = false
	mv.progressf("switch: %s: %s", o.attribute(), mv.r.Dest)
	mv.step("switch", time.Since(t))
	return nil
}

// kick closes the user's sessions everywhere, waits for what was in
// flight, kicks again and waits until the source has no session left.
func (mv *run) kick(ctx context.Context) error {
	o := &mv.m.opts
	user := mv.r.User
	for round := 1; round <= 2; round++ {
		if err := o.Cluster.Invalidate(user, true); err != nil {
			return fmt.Errorf("kick: %w", err)
		}
		if err := mv.src.Kick(ctx, user); err != nil {
			return fmt.Errorf("kick: %w", err)
		}
		if round == 1 {
			if err := sleep(ctx, o.settle()); err != nil {
				return err
			}
		}
	}
	deadline := time.Now().Add(o.sessionWait())
	for {
		n, err := mv.src.Sessions(ctx, user)
		if err != nil {
			return fmt.Errorf("kick: %w", err)
		}
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kick: %d sessions of %s still on %s after %v", n, user, mv.r.Source, o.sessionWait())
		}
		if err := mv.src.Kick(ctx, user); err != nil {
			return fmt.Errorf("kick: %w", err)
		}
		if err := sleep(ctx, sessionPoll); err != nil {
			return err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// finish invalidates and releases after the switch. The move is done
// whatever happens here: failures are reported, and the hold expires by
// itself.
func (mv *run) finish() {
	o := &mv.m.opts
	user := mv.r.User
	t := time.Now()
	if err := retry(func() error { return o.Cluster.Invalidate(user, true) }); err != nil {
		// Releasing now could let a node with the old route cached send
		// a login to the source: keep the hold until it expires.
		mv.log.Error("move step", "step", "invalidate", "err", err)
		mv.progressf("WARNING: invalidate failed (%v): the hold stays until it expires; run `switchboard invalidate -kick %s` then `switchboard release %s`", err, user, user)
		return
	}
	mv.step("invalidate", time.Since(t))
	t = time.Now()
	if err := retry(func() error { return o.Cluster.Release(user) }); err != nil {
		mv.log.Error("move step", "step", "release", "err", err)
		mv.progressf("WARNING: release failed (%v): the hold expires by itself within %v", err, o.holdTTL())
		return
	}
	mv.r.Blocked = time.Since(mv.holdStart)
	mv.step("release", time.Since(t), "blocked", mv.r.Blocked.Round(time.Millisecond))
	mv.progressf("released: the user was blocked for %v", mv.r.Blocked.Round(time.Millisecond))
}

func retry(f func() error) error {
	var err error
	for i := range commitRetries {
		if err = f(); err == nil {
			return nil
		}
		if i < commitRetries-1 {
			time.Sleep(commitRetryDelay)
		}
	}
	return err
}

// rollback undoes a move that failed before the switch: the hold
// attribute gets its old values back, every node drops what it cached
// during the hold, and the hold ends. The destination keeps its partial
// copy (a later move needs -overwrite); the source was never written.
func (mv *run) rollback(cause error) error {
	o := &mv.m.opts
	ctx, cancel := context.WithTimeout(context.Background(), rollbackTimeout)
	defer cancel()
	var errs []error
	if mv.ldapHeld {
		var vals []string // a hold attribute of its own is deleted
		if o.holdAttribute() == o.attribute() {
			vals = mv.r.Hosts
		}
		if err := o.Directory.Modify(ctx, mv.r.DN, Change{o.holdAttribute(), vals}); err != nil {
			errs = append(errs, fmt.Errorf("restore %s: %w", o.holdAttribute(), err))
		}
	}
	if mv.held {
		if err := o.Cluster.Invalidate(mv.r.User, false); err != nil {
			errs = append(errs, fmt.Errorf("invalidate: %w", err))
		}
		if err := o.Cluster.Release(mv.r.User); err != nil {
			errs = append(errs, fmt.Errorf("release (the hold expires by itself within %v): %w", o.holdTTL(), err))
		}
	}
	mv.log.Warn("move rolled back", "cause", cause, "rollback_errors", errors.Join(errs...))
	if len(errs) > 0 {
		return fmt.Errorf("%w; rollback incomplete: %w", cause, errors.Join(errs...))
	}
	mv.progressf("rolled back: %s stays on %s, logins and mail resume there", mv.r.User, mv.r.Source)
	return fmt.Errorf("%w (rolled back: the user stays on %s)", cause, mv.r.Source)
}

// totals sums the folders' messages and bytes.
func totals(folders []Folder) (msgs int, bytes int64) {
	for _, f := range folders {
		msgs += f.Messages
		bytes += f.VSize
	}
	return msgs, bytes
}

// size formats a byte count.
func size(b int64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}
