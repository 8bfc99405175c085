package ldapmap

import (
	"context"
	"fmt"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// modifyTimestampAttr is the operational attribute the poll fallback
// follows (RFC 4512 section 3.4).
const modifyTimestampAttr = "modifyTimestamp"

// pollSession is the fallback for a directory without a change feed: a
// full search builds (or reconciles) the view, then every PollInterval
// two searches ask for the entries modified since the latest
// modifyTimestamp seen, one for those that match the watch filter (added
// or changed) and one for those that do not (they left the watched set),
// and every ListInterval a listing of every watched DN finds the
// deletions. It runs until a search fails or ctx ends.
//
// Timestamps are the directory's own: the bound is the greatest
// modifyTimestamp returned so far, compared with >=, so clock skew
// between the watcher and the directory loses nothing, and entries
// modified in that second are fetched again (and found unchanged).
func (w *Watcher) pollSession(ctx context.Context, c *ldap.Conn) error {
	w.mode.Store(ModePoll)
	if err := w.pollAll(ctx, c); err != nil {
		return err
	}
	w.setSynced(ModePoll)
	t := time.NewTicker(w.opts.pollInterval())
	defer t.Stop()
	lastList := time.Now()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		if err := w.pollModified(ctx, c); err != nil {
			return err
		}
		if time.Since(lastList) >= w.opts.listInterval() {
			if err := w.pollList(ctx, c); err != nil {
				return err
			}
			lastList = time.Now()
		}
	}
}

// pollAll fetches every watched entry and reconciles the view with it.
func (w *Watcher) pollAll(ctx context.Context, c *ldap.Conn) error {
	attrs := append(append([]string(nil), w.attrs...), modifyTimestampAttr)
	entries, err := w.search(ctx, c, w.filter, attrs)
	if err != nil {
		return err
	}
	seen := make(seenSet, len(entries))
	for _, e := range entries {
		w.notePollTS(e)
		w.upsert(nil, e, seen)
	}
	w.dropUnseen(seen)
	if len(entries) > 0 && w.pollTS == "" && !w.tsHidden {
		w.tsHidden = true
		w.log.Warn("ldap watch: the service account cannot read modifyTimestamp; polling sees only deletions (grant it read on modifyTimestamp, see docs/ldap.md)",
			"entries", len(entries))
	}
	return nil
}

// pollModified applies the entries modified since the latest timestamp.
func (w *Watcher) pollModified(ctx context.Context, c *ldap.Conn) error {
	since := w.pollTS
	if since == "" {
		since = epochTimestamp
	}
	newer := "(" + modifyTimestampAttr + ">=" + since + ")"
	attrs := append(append([]string(nil), w.attrs...), modifyTimestampAttr)
	changed, err := w.search(ctx, c, "(&"+w.filter+newer+")", attrs)
	if err != nil {
		return err
	}
	left, err := w.search(ctx, c, "(&(!"+w.filter+")"+newer+")", []string{modifyTimestampAttr})
	if err != nil {
		return err
	}
	for _, e := range changed {
		w.notePollTS(e)
		w.upsert(nil, e, nil)
	}
	for _, e := range left {
		w.notePollTS(e)
		w.remove(dnKey(e.DN))
	}
	return nil
}

// pollList lists the DN of every watched entry and drops the others.
func (w *Watcher) pollList(ctx context.Context, c *ldap.Conn) error {
	// "1.1": no attributes, DNs only (RFC 4511 section 4.5.1.8).
	entries, err := w.search(ctx, c, w.filter, []string{"1.1"})
	if err != nil {
		return err
	}
	seen := make(seenSet, len(entries))
	for _, e := range entries {
		seen[dnKey(e.DN)] = struct{}{}
	}
	w.dropUnseen(seen)
	return nil
}

// notePollTS raises the poll bound to e's modifyTimestamp.
func (w *Watcher) notePollTS(e *ldap.Entry) {
	v := e.GetEqualFoldAttributeValue(modifyTimestampAttr)
	if v == "" {
		return
	}
	t, err := time.Parse(generalizedTimeLayout, v)
	if err != nil {
		w.log.Debug("ldap watch: unreadable modifyTimestamp", "dn", e.DN, "value", v)
		return
	}
	ts := t.UTC().Format(generalizedTimeLayout)
	// Same layout and length: the strings order as the times do.
	if ts > w.pollTS {
		w.pollTS = ts
	}
}

// search runs one search of the poll fallback and returns its entries.
func (w *Watcher) search(ctx context.Context, c *ldap.Conn, filter string, attrs []string) ([]*ldap.Entry, error) {
	sctx, cancel := context.WithTimeout(ctx, pollSearchTimeout)
	defer cancel()
	resp := c.SearchAsync(sctx, w.searchRequest(filter, attrs), pollBufferSize)
	var entries []*ldap.Entry
	for resp.Next() {
		if e := resp.Entry(); e != nil {
			entries = append(entries, e)
		}
	}
	err := resp.Err()
	switch {
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case sctx.Err() != nil:
		return nil, fmt.Errorf("poll search %s: timed out after %v", filter, pollSearchTimeout)
	case err != nil:
		return nil, fmt.Errorf("poll search %s: %w", filter, err)
	case c.IsClosing():
		// SearchAsync ends without an error on a closing connection.
		return nil, errConnClosed
	}
	return entries, nil
}
