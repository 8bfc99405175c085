package ldapmap

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/go-ldap/ldap/v3"

	"switchboard/route"
)

// entryCSNAttr is the operational attribute holding an entry's change
// sequence number, which slapd's syncprov compares with a cookie.
const entryCSNAttr = "entryCSN"

// entryID is an entry's entryUUID (RFC 4530), which RFC 4533 uses to name
// entries: deletions and present entries of a refresh may come with it
// alone.
type entryID [16]byte

// A watchEntry is what the watcher knows of one watched entry.
type watchEntry struct {
	dn     string   // as the directory wrote it
	hosts  []string // host values, in order, trimmed, no empties
	logins []string // login attribute values, folded, sorted, unique
	id     entryID
	hasID  bool // id is known (sync mode)
}

// same reports whether a and b route alike.
func (a *watchEntry) same(b *watchEntry) bool {
	return a.dn == b.dn && slices.Equal(a.hosts, b.hosts) && slices.Equal(a.logins, b.logins)
}

// view is the watcher's copy of the watched entries.
type view struct {
	entries map[string]*watchEntry // by dnKey
	ids     map[entryID]string     // entryUUID to dnKey, sync mode only
}

func newView() view {
	return view{entries: make(map[string]*watchEntry), ids: make(map[entryID]string)}
}

// A seenSet collects the dnKeys a refresh or a listing mentioned, to find
// the entries it did not.
type seenSet map[string]struct{}

// newWatchEntry extracts what matters from e.
func (w *Watcher) newWatchEntry(e *ldap.Entry) *watchEntry {
	we := &watchEntry{dn: e.DN}
	for _, v := range e.GetEqualFoldAttributeValues(w.hostAttr) {
		if v = strings.TrimSpace(v); v != "" {
			we.hosts = append(we.hosts, v)
		}
	}
	for _, a := range w.loginAttrs {
		for _, v := range e.GetEqualFoldAttributeValues(a) {
			if v = strings.TrimSpace(v); v != "" {
				we.logins = append(we.logins, route.Fold(v))
			}
		}
	}
	slices.Sort(we.logins)
	we.logins = slices.Compact(we.logins)
	return we
}

// upsert records e, added or modified, under its DN and, when id is not
// nil, under its entryUUID, marks it in seen (which may be nil) and, once
// the watcher is primed, reports a difference. An entry whose entryUUID
// was known under another DN was renamed: the old DN is reported gone.
func (w *Watcher) upsert(id *entryID, e *ldap.Entry, seen seenSet) {
	key := dnKey(e.DN)
	nw := w.newWatchEntry(e)
	if id != nil {
		if oldKey, ok := w.view.ids[*id]; ok && oldKey != key {
			w.remove(oldKey)
		}
		nw.id, nw.hasID = *id, true
		w.view.ids[*id] = key
	}
	if seen != nil {
		seen[key] = struct{}{}
	}
	old := w.view.entries[key]
	if old != nil && !nw.hasID && old.hasID {
		// Poll mode keeps what sync mode learnt.
		nw.id, nw.hasID = old.id, true
	}
	w.view.entries[key] = nw
	w.entries.Store(int64(len(w.view.entries)))
	if w.primed && (old == nil || !old.same(nw)) {
		w.emit(old, nw)
	}
}

// remove forgets the entry under key and, once primed, reports it gone.
func (w *Watcher) remove(key string) {
	old := w.view.entries[key]
	if old == nil {
		return
	}
	delete(w.view.entries, key)
	if old.hasID && w.view.ids[old.id] == key {
		delete(w.view.ids, old.id)
	}
	w.entries.Store(int64(len(w.view.entries)))
	if w.primed {
		w.emit(old, nil)
	}
}

// dropUnseen removes every entry that seen does not hold.
func (w *Watcher) dropUnseen(seen seenSet) {
	var gone []string
	for key := range w.view.entries {
		if _, ok := seen[key]; !ok {
			gone = append(gone, key)
		}
	}
	slices.Sort(gone)
	for _, key := range gone {
		w.remove(key)
	}
}

// A refresh is the state of one sync search's refresh stage.
type refresh struct {
	// full is set when the search was sent without a cookie: the server
	// sends the whole content, so whatever it does not send is gone,
	// however it ends the refresh (slapd ends an initial refresh with a
	// refreshDelete message, which would otherwise mean "nothing more is
	// deleted").
	full bool
	// seen holds the entries a present phase mentioned (RFC 4533
	// section 3.3.1): at its end, the others are deleted.
	seen seenSet
	// reconciled is set once a present phase's unseen entries were
	// dropped.
	reconciled bool
	done       bool // refreshDone: the persist stage runs
}

// syncSession runs a refreshAndPersist search on c until it fails or ctx
// ends. If the server refuses the search while the watcher holds a
// cookie, the cookie is dropped and a full refresh is asked for on the
// same connection (RFC 4533 section 3.3.2: e-syncRefreshRequired, or any
// other refusal of an old or foreign cookie).
func (w *Watcher) syncSession(ctx context.Context, c *ldap.Conn) error {
	for {
		hadCookie := w.cookie != nil
		err := w.syncSearch(ctx, c)
		if hadCookie && isRefusal(err) && ctx.Err() == nil && !c.IsClosing() {
			w.log.Warn("ldap watch: the directory refused the sync cookie; asking for a full refresh", "err", err)
			w.cookie = nil
			continue
		}
		return err
	}
}

// isRefusal reports whether err is a result code from the server (as
// opposed to a broken connection or a decoding error).
func isRefusal(err error) bool {
	var le *ldap.Error
	if !errors.As(err, &le) {
		return false
	}
	// go-ldap's own codes (network, filter compile, ...) start at 200.
	return le.ResultCode < ldap.ErrorNetwork || le.ResultCode == ldap.LDAPResultSyncRefreshRequired
}

// errSearchEnded is a persistent search that the server ended with
// success, which RFC 4533 reserves for refreshOnly.
var errSearchEnded = errors.New("the directory ended the sync search")

// syncSearch runs one refreshAndPersist search from the current cookie.
func (w *Watcher) syncSearch(ctx context.Context, c *ldap.Conn) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w.mode.Store(ModeSync)
	rs := &refresh{full: w.cookie == nil, seen: make(seenSet)}
	req := w.searchRequest(w.filter, append(append([]string(nil), w.attrs...), entryCSNAttr))
	resp := c.Syncrepl(sctx, req, syncBufferSize, ldap.SyncRequestModeRefreshAndPersist, w.cookie, false)
	for resp.Next() {
		if e := resp.Entry(); e != nil {
			w.syncEntry(e, resp.Controls(), rs)
			continue
		}
		for _, ctl := range resp.Controls() {
			switch ctl := ctl.(type) {
			case *ldap.ControlSyncInfo:
				w.syncInfo(ctl, rs)
			case *ldap.ControlSyncDone:
				w.setCookie(ctl.Cookie)
			}
		}
	}
	err := resp.Err()
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		return fmt.Errorf("sync search: %w", err)
	case c.IsClosing():
		return errConnClosed
	default:
		return errSearchEnded
	}
}

// setCookie keeps a new cookie; an empty one changes nothing.
func (w *Watcher) setCookie(cookie []byte) {
	if len(cookie) > 0 {
		w.cookie = slices.Clone(cookie)
	}
}

// syncEntry applies one entry of a sync search (RFC 4533 section 3.3.1 in
// the refresh stage, section 3.4 in the persist stage).
func (w *Watcher) syncEntry(e *ldap.Entry, ctls []ldap.Control, rs *refresh) {
	var st *ldap.ControlSyncState
	for _, ctl := range ctls {
		if s, ok := ctl.(*ldap.ControlSyncState); ok {
			st = s
		}
	}
	if st == nil {
		w.log.Debug("ldap watch: entry without a sync state; ignored", "dn", e.DN)
		return
	}
	id := entryID(st.EntryUUID)
	switch st.State {
	case ldap.SyncStatePresent:
		// Unchanged since the cookie: the DN and entryUUID only.
		key, ok := w.view.ids[id]
		if !ok {
			key = dnKey(e.DN)
			if we := w.view.entries[key]; we != nil {
				we.id, we.hasID = id, true
				w.view.ids[id] = key
			}
		}
		rs.seen[key] = struct{}{}
	case ldap.SyncStateAdd, ldap.SyncStateModify:
		w.checkCSN(e)
		w.upsert(&id, e, rs.seen)
	case ldap.SyncStateDelete:
		key, ok := w.view.ids[id]
		if !ok {
			key = dnKey(e.DN)
		}
		if w.view.entries[key] == nil && w.primed && e.DN != "" {
			// Not in the view (it should be): report it anyway, so that
			// whatever the node holds for the DN goes.
			w.emit(&watchEntry{dn: e.DN}, nil)
			return
		}
		w.remove(key)
	}
	w.setCookie(st.Cookie)
}

// checkCSN notes an entry sent without its entryCSN: the service account
// may not read it, and then slapd, resuming from a cookie, evaluates
// (entryCSN>=cookie) as undefined and silently leaves out the entries
// changed meanwhile. The watcher then never resumes: every reconnection
// asks for a full refresh, which is correct, only larger.
func (w *Watcher) checkCSN(e *ldap.Entry) {
	if w.csnHidden || e.GetEqualFoldAttributeValue(entryCSNAttr) != "" {
		return
	}
	w.csnHidden = true
	w.log.Warn("ldap watch: the service account cannot read entryCSN; every reconnection will ask for a full refresh (grant it read on entryCSN, see docs/ldap.md)",
		"dn", e.DN)
}

// syncInfo applies a Sync Info message (RFC 4533 section 2.5).
func (w *Watcher) syncInfo(ctl *ldap.ControlSyncInfo, rs *refresh) {
	switch ctl.Value {
	case ldap.SyncInfoNewcookie:
		w.setCookie(ctl.NewCookie.Cookie)
	case ldap.SyncInfoRefreshPresent:
		// The end of a present phase: what it did not mention is gone.
		w.dropUnseen(rs.seen)
		rs.seen = make(seenSet)
		rs.reconciled = true
		w.setCookie(ctl.RefreshPresent.Cookie)
		if ctl.RefreshPresent.RefreshDone {
			w.refreshDone(rs)
		}
	case ldap.SyncInfoRefreshDelete:
		w.setCookie(ctl.RefreshDelete.Cookie)
		if ctl.RefreshDelete.RefreshDone {
			w.refreshDone(rs)
		}
	case ldap.SyncInfoSyncIdSet:
		set := ctl.SyncIdSet
		for _, u := range set.SyncUUIDs {
			id := entryID(u)
			key, ok := w.view.ids[id]
			switch {
			case !ok:
				// Not known here: nothing to delete or keep.
			case set.RefreshDeletes:
				w.remove(key)
			default:
				rs.seen[key] = struct{}{}
			}
		}
		w.setCookie(set.Cookie)
	}
}

// refreshDone ends the refresh stage: after a full refresh the entries
// it did not send are gone, and the persist stage starts.
func (w *Watcher) refreshDone(rs *refresh) {
	if rs.done {
		return
	}
	if rs.full && !rs.reconciled {
		w.dropUnseen(rs.seen)
	}
	rs.done = true
	rs.seen = make(seenSet) // unused from now on
	w.log.Debug("ldap watch: refresh done; persisting", "full", rs.full, "present_phase", rs.reconciled, "entries", len(w.view.entries))
	w.setSynced(ModeSync)
}
