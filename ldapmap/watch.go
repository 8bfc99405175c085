package ldapmap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-ldap/ldap/v3"

	"switchboard/route"
)

// Defaults for the zero values of WatchOptions, and the watcher's fixed
// limits.
const (
	DefaultPollInterval = 10 * time.Second
	DefaultListInterval = time.Minute
	defaultRetryMin     = 250 * time.Millisecond
	defaultRetryMax     = 30 * time.Second
	// retryJitter spreads reconnections of many nodes to one restarted
	// directory: each wait is the backoff ±20%.
	retryJitter = 0.2
	// pollSearchTimeout bounds one search of the poll fallback, a full
	// listing of the directory included.
	pollSearchTimeout = time.Minute
	// syncBufferSize is the Syncrepl result channel's capacity.
	syncBufferSize = 64
	// pollBufferSize is the SearchAsync result channel's capacity.
	pollBufferSize = 64
	// epochTimestamp is the modifyTimestamp lower bound before any entry
	// has been seen (RFC 4517 section 3.3.13, GeneralizedTime).
	epochTimestamp = "19700101000000Z"
	// generalizedTimeLayout parses and writes GeneralizedTime in UTC;
	// parsing also accepts fractional seconds.
	generalizedTimeLayout = "20060102150405Z0700"
)

// Change is one entry of the directory that changed in a way that matters
// for routing: its host values, its login names, or whether it matches
// the search filter at all.
type Change struct {
	// DN is the entry's DN as the directory wrote it. After a rename
	// (modrdn) the old DN comes as a deleted entry and the new one as an
	// added entry.
	DN string
	// Logins are every login name that mapped to the entry, folded with
	// route.Fold, sorted, without duplicates: those the LoginIndex knew
	// for DN, and the values of the login attributes before and after the
	// change.
	Logins []string
	// OldHosts are the host values before the change, primary first; nil
	// for an entry that is new (added, or now matching the filter).
	OldHosts []string
	// NewHosts are the host values after the change, primary first; nil
	// when Deleted.
	NewHosts []string
	// Deleted is set when the entry is gone: deleted, renamed away, or no
	// longer matching the filter (a status that is not "active", say).
	Deleted bool
}

// LoginIndex tells a Watcher which login names are known to map to an
// entry, so that a Change lists them even when they are not values of the
// entry's login attributes (an alias resolved by a filter such as
// "(|(mail=%s)(uid=%u))"). *Cache implements it.
type LoginIndex interface {
	LoginsFor(dn string) []string
}

// WatchOptions configures a Watcher. NewWatcher copies it. The directory
// itself (servers, bind, base DN, filter template, host attribute, scope,
// timeouts) comes from the LDAP mapper's Options.
type WatchOptions struct {
	// Filter is the filter of the watched entries (RFC 4515, no verbs).
	// Empty means the directory's filter template with every verb
	// replaced by "*": "(&(mail=%s)(status=active))" watches
	// "(&(mail=*)(status=active))", so an entry whose status changes to
	// something else leaves the watched set and is reported deleted.
	Filter string

	// LoginAttributes are the attributes whose values are login names.
	// Empty means the attributes the filter template compares with a verb
	// ("mail" in the default filter).
	LoginAttributes []string

	// PollInterval is how often the fallback for directories without a
	// change feed (no RFC 4533 provider, such as slapd without syncprov)
	// asks for the entries modified since the last poll
	// ("(modifyTimestamp>=T)"). Zero means 10s.
	PollInterval time.Duration

	// ListInterval is how often the poll fallback lists the DNs of every
	// watched entry, to notice deletions, which leave no modifyTimestamp
	// behind. Each listing transfers every watched DN. Zero means 1m.
	ListInterval time.Duration

	// RetryMin and RetryMax bound the wait before reconnecting after the
	// directory was lost: it starts at RetryMin, doubles after each failed
	// attempt up to RetryMax, and goes back to RetryMin once a connection
	// is in sync again. Each wait varies by ±20%. Zero means 250ms and
	// 30s.
	RetryMin, RetryMax time.Duration

	// Index supplies the login names known for a DN, see LoginIndex. Nil
	// means a Change lists only the entry's login attribute values.
	Index LoginIndex

	// Logger receives one Info line per change and Warn lines for
	// reconnections and fallbacks. It never sees the bind password. Nil
	// means the directory Options' Logger.
	Logger *slog.Logger
}

func (o *WatchOptions) pollInterval() time.Duration {
	if o.PollInterval == 0 {
		return DefaultPollInterval
	}
	return o.PollInterval
}

func (o *WatchOptions) listInterval() time.Duration {
	if o.ListInterval == 0 {
		return DefaultListInterval
	}
	return o.ListInterval
}

func (o *WatchOptions) retryMin() time.Duration {
	if o.RetryMin == 0 {
		return defaultRetryMin
	}
	return o.RetryMin
}

func (o *WatchOptions) retryMax() time.Duration {
	if o.RetryMax == 0 {
		return defaultRetryMax
	}
	return o.RetryMax
}

// Check reports every problem with o that does not depend on the
// directory's Options, joined.
func (o *WatchOptions) Check() error {
	var errs []error
	if o.Filter != "" {
		if _, err := ldap.CompileFilter(o.Filter); err != nil {
			errs = append(errs, fmt.Errorf("watch filter %q: %w", o.Filter, err))
		}
	}
	for _, a := range o.LoginAttributes {
		if !ValidAttribute(a) {
			errs = append(errs, fmt.Errorf("login attribute %q is not an attribute description", a))
		}
	}
	if o.PollInterval < 0 || o.ListInterval < 0 || o.RetryMin < 0 || o.RetryMax < 0 {
		errs = append(errs, errors.New("negative PollInterval, ListInterval, RetryMin or RetryMax"))
	}
	if o.retryMin() > o.retryMax() {
		errs = append(errs, fmt.Errorf("RetryMin %v is above RetryMax %v", o.retryMin(), o.retryMax()))
	}
	if len(errs) > 0 {
		return fmt.Errorf("ldapmap: watch options: %w", errors.Join(errs...))
	}
	return nil
}

// Watch modes, as WatchStats.Mode reports them.
const (
	ModeSync = "sync" // RFC 4533 refreshAndPersist
	ModePoll = "poll" // modifyTimestamp poll and DN listings
)

// WatchStats describe a Watcher's state.
type WatchStats struct {
	// Mode is ModeSync or ModePoll while connected, "" while not.
	Mode string
	// Entries is the number of watched entries in the watcher's view.
	Entries int
	// Changes counts the changes reported since NewWatcher.
	Changes uint64
	// Reconnects counts the connections made after the first.
	Reconnects uint64
}

// Watcher follows the directory and reports the entries whose routing
// changed, see the package documentation. Create it with NewWatcher and
// run it with Run.
type Watcher struct {
	l          *LDAP // validated directory options and dial
	opts       WatchOptions
	filter     string   // watch filter
	hostAttr   string   // Options.Attribute
	loginAttrs []string // WatchOptions.LoginAttributes or derived
	attrs      []string // hostAttr and loginAttrs: what the searches ask for
	onChange   func(Change)
	log        *slog.Logger

	running    atomic.Bool
	syncedc    chan struct{} // closed once the first view is complete
	syncedOnce sync.Once
	mode       atomic.Value // string
	entries    atomic.Int64
	changes    atomic.Uint64
	reconnects atomic.Uint64

	// The rest belongs to the goroutine running Run.
	view    view
	cookie  []byte // RFC 4533 sync cookie, in memory only
	primed  bool   // the first complete view was built: report differences
	inSync  bool   // the current connection completed a refresh or listing
	pollTS  string // poll: the latest modifyTimestamp seen
	started bool   // a connection was made once
	// csnHidden is set when entries come without entryCSN: resuming
	// from a cookie would miss changes, see checkCSN.
	csnHidden bool
	// tsHidden is set when entries come without modifyTimestamp: the
	// poll fallback cannot see changes, see pollAll.
	tsHidden bool
}

// NewWatcher returns a Watcher of the directory that dir describes (the
// same Options as the LDAP mapper's), reporting each change to onChange.
// opts may be nil. It does not connect; Run does.
func NewWatcher(dir *Options, opts *WatchOptions, onChange func(Change)) (*Watcher, error) {
	var o WatchOptions
	if opts != nil {
		o = *opts
		o.LoginAttributes = slices.Clone(opts.LoginAttributes)
	}
	var errs []error
	if err := o.Check(); err != nil {
		errs = append(errs, err)
	}
	if onChange == nil {
		errs = append(errs, errors.New("ldapmap: watcher: nil onChange"))
	}
	l, err := NewLDAP(dir)
	if err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	w := &Watcher{
		l:          l,
		opts:       o,
		filter:     o.Filter,
		hostAttr:   l.opts.attribute(),
		loginAttrs: o.LoginAttributes,
		onChange:   onChange,
		log:        o.Logger,
		syncedc:    make(chan struct{}),
		view:       newView(),
	}
	if w.log == nil {
		w.log = l.opts.logger()
	}
	w.log = w.log.With("component", "ldapwatch")
	if w.filter == "" {
		w.filter = l.filter.watchFilter()
		if _, err := ldap.CompileFilter(w.filter); err != nil {
			return nil, fmt.Errorf("ldapmap: watcher: filter template %q gives the watch filter %q, which does not compile (set WatchOptions.Filter): %w",
				l.filter.text, w.filter, err)
		}
	}
	if len(w.loginAttrs) == 0 {
		w.loginAttrs = l.filter.loginAttributes()
		if len(w.loginAttrs) == 0 {
			return nil, fmt.Errorf("ldapmap: watcher: no login attribute found in filter template %q (set WatchOptions.LoginAttributes)", l.filter.text)
		}
	}
	w.attrs = []string{w.hostAttr}
	for _, a := range w.loginAttrs {
		if !slices.ContainsFunc(w.attrs, func(b string) bool { return strings.EqualFold(a, b) }) {
			w.attrs = append(w.attrs, a)
		}
	}
	w.mode.Store("")
	return w, nil
}

// Synced returns a channel that is closed once the watcher has built its
// first complete view of the directory: changes made after that are
// reported.
func (w *Watcher) Synced() <-chan struct{} { return w.syncedc }

// Stats returns the watcher's state and counters.
func (w *Watcher) Stats() WatchStats {
	return WatchStats{
		Mode:       w.mode.Load().(string),
		Entries:    int(w.entries.Load()),
		Changes:    w.changes.Load(),
		Reconnects: w.reconnects.Load(),
	}
}

// Filter returns the watch filter in use.
func (w *Watcher) Filter() string { return w.filter }

// errRunning is returned by a second concurrent Run.
var errRunning = errors.New("ldapmap: watcher already running")

// Run watches until ctx ends, then returns nil. It connects to the first
// server that answers, follows the directory's change feed (or polls),
// and reconnects with backoff whenever the connection is lost, resuming
// from the last sync cookie. onChange is called from Run's goroutine, one
// change at a time, in the directory's order: while it runs, the watcher
// reads nothing, so it should not block for long. A panic in onChange is
// logged and the change counted as reported.
func (w *Watcher) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return errRunning
	}
	defer w.running.Store(false)
	backoff := w.opts.retryMin()
	for {
		uri, err := w.connectAndWatch(ctx)
		w.mode.Store("")
		if ctx.Err() != nil {
			return nil
		}
		if w.inSync {
			backoff = w.opts.retryMin()
		}
		wait := jitter(backoff).Round(time.Millisecond)
		if uri == "" {
			w.log.Warn("ldap watch: cannot connect; retrying", "retry_in", wait, "err", err)
		} else {
			w.log.Warn("ldap watch: connection lost; reconnecting", "uri", uri, "retry_in", wait, "err", err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, w.opts.retryMax())
	}
}

// jitter returns d varied by up to ±retryJitter.
func jitter(d time.Duration) time.Duration {
	f := 1 + retryJitter*(2*rand.Float64()-1)
	return time.Duration(float64(d) * f)
}

// connectAndWatch makes one connection and watches on it until it fails
// or ctx ends. It returns the server's URI (or "" when none answered) and
// why the watch ended.
func (w *Watcher) connectAndWatch(ctx context.Context) (string, error) {
	w.inSync = false
	c, srv, err := w.connect(ctx)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if !w.primed || w.csnHidden {
		// A refresh cut short leaves a view with holes that a resumed
		// refresh (unchanged entries come as DNs only) would not fill.
		w.cookie = nil
	}
	if w.started {
		w.reconnects.Add(1)
		w.log.Warn("ldap watch: reconnected", "uri", srv.uri, "resume_cookie", w.cookie != nil)
	} else {
		w.log.Info("ldap watch: connected", "uri", srv.uri)
	}
	w.started = true
	err = w.syncSession(ctx, c)
	if isNoChangeFeed(err) {
		w.log.Warn("ldap watch: the directory offers no change feed (RFC 4533 content synchronization, slapd's syncprov overlay); polling modifyTimestamp instead",
			"uri", srv.uri, "poll_interval", w.opts.pollInterval(), "list_interval", w.opts.listInterval(), "err", err)
		err = w.pollSession(ctx, c)
	}
	return srv.uri, err
}

// connect dials the servers in order and returns the first that binds.
// The connection has no per-request timeout: a persistent search runs
// for as long as the connection does.
func (w *Watcher) connect(ctx context.Context) (*ldap.Conn, *server, error) {
	var errs []error
	for _, srv := range w.l.servers {
		c, err := w.l.dial(ctx, srv)
		if err != nil {
			if ctx.Err() != nil {
				return nil, nil, ctx.Err()
			}
			errs = append(errs, fmt.Errorf("%s: %w", srv.uri, err))
			continue
		}
		c.SetTimeout(0)
		return c, srv, nil
	}
	return nil, nil, fmt.Errorf("no server answered: %w", errors.Join(errs...))
}

// isNoChangeFeed reports whether err is a directory refusing the sync
// request control as unknown (RFC 4511 section 4.1.11: a critical control
// the server does not support).
func isNoChangeFeed(err error) bool {
	return ldap.IsErrorWithCode(err, ldap.LDAPResultUnavailableCriticalExtension)
}

// setSynced records that the connection's view is complete, and the
// first time, that the watcher is primed.
func (w *Watcher) setSynced(mode string) {
	w.inSync = true
	if w.primed {
		return
	}
	w.primed = true
	w.syncedOnce.Do(func() { close(w.syncedc) })
	w.log.Info("ldap watch: in sync", "mode", mode, "entries", len(w.view.entries), "filter", w.filter)
}

// emit reports a change: old is nil for a new entry, nw nil for a gone
// one.
func (w *Watcher) emit(old, nw *watchEntry) {
	ch := Change{Deleted: nw == nil}
	var logins []string
	if old != nil {
		ch.DN, ch.OldHosts = old.dn, old.hosts
		logins = append(logins, old.logins...)
	}
	if nw != nil {
		ch.DN, ch.NewHosts = nw.dn, nw.hosts
		logins = append(logins, nw.logins...)
	}
	if w.opts.Index != nil {
		for _, l := range w.opts.Index.LoginsFor(ch.DN) {
			logins = append(logins, route.Fold(l))
		}
	}
	slices.Sort(logins)
	ch.Logins = slices.Compact(logins)
	w.changes.Add(1)
	w.log.Info("ldap entry changed", "dn", ch.DN,
		"hosts_before", strings.Join(ch.OldHosts, ","), "hosts_after", strings.Join(ch.NewHosts, ","),
		"deleted", ch.Deleted, "logins", ch.Logins)
	w.call(ch)
}

// call runs onChange, logging a panic instead of dying of it.
func (w *Watcher) call(ch Change) {
	defer func() {
		if p := recover(); p != nil {
			w.log.Error("ldap watch: change callback panicked", "dn", ch.DN, "panic", p)
		}
	}()
	w.onChange(ch)
}

// searchRequest returns a request for the watched entries with filter and
// attrs, with no size or time limit: the watcher needs every entry.
func (w *Watcher) searchRequest(filter string, attrs []string) *ldap.SearchRequest {
	return &ldap.SearchRequest{
		BaseDN:       w.l.opts.BaseDN,
		Scope:        w.l.opts.Scope.ldapScope(),
		DerefAliases: ldap.NeverDerefAliases,
		Filter:       filter,
		Attributes:   attrs,
	}
}

// watchFilter returns the template with every verb replaced by "*": the
// filter that matches every entry some login could find.
func (t *filterTemplate) watchFilter() string {
	var b strings.Builder
	for _, p := range t.parts {
		if p.verb == 0 {
			b.WriteString(p.lit)
		} else {
			b.WriteByte('*')
		}
	}
	return b.String()
}

// loginAttributes returns the attributes the template compares with a
// verb, in order, without duplicates: in "(|(mail=%s)(uid=%u))" they are
// mail and uid.
func (t *filterTemplate) loginAttributes() []string {
	var attrs []string
	var sofar strings.Builder
	for _, p := range t.parts {
		if p.verb == 0 {
			sofar.WriteString(p.lit)
			continue
		}
		s := sofar.String()
		open := strings.LastIndexByte(s, '(')
		sofar.WriteByte('*')
		if open < 0 {
			continue
		}
		item := s[open+1:]
		end := strings.IndexAny(item, "=~<>:")
		if end <= 0 {
			continue
		}
		a := item[:end]
		if ValidAttribute(a) && !slices.ContainsFunc(attrs, func(b string) bool { return strings.EqualFold(a, b) }) {
			attrs = append(attrs, a)
		}
	}
	return attrs
}
