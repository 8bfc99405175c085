// Package ldapmap turns a login name into the names of the backend hosts
// where that user's mailbox lives. It provides three route.Mapper
// implementations that the router uses through the route vocabulary:
//
//   - LDAP searches a directory (RFC 4511) over a small pool of multiplexed
//     connections, with failover across several servers given as LDAP URLs
//     (RFC 4516, scheme, host and port only), ldaps:// or StartTLS
//     (RFC 4513 section 3) and a simple bind with a service account.
//   - Cache wraps any Mapper with a positive TTL, a negative TTL for unknown
//     users, collapsing of concurrent misses, and optional serving of
//     expired answers while the directory is unreachable.
//   - File reads a plain text map, for deployments without a directory and
//     for the demo.
//
// Watcher follows the directory and reports each entry whose routing
// changed (host values, login names, matching the filter at all), so that
// a node can drop its cached routes and kick sessions at once. It uses
// Content Synchronization (RFC 4533, refreshAndPersist; slapd's syncprov
// overlay), resumes from its cookie after reconnecting, asks for a full
// refresh when the cookie is refused, and polls modifyTimestamp where the
// directory offers no change feed. Changes arrive by DN while the Cache is
// keyed by login, so the Cache keeps an index from DNs to the login names
// it holds answers for: Cache.InvalidateDN.
//
// # Filters
//
// The search filter is a template in the string representation of RFC 4515.
// The login name is never pasted into it raw: each substitution is escaped
// with ldap.EscapeFilter (RFC 4515 section 3, "valueencoding"), so a login
// such as "*" or ")(uid=*" matches only an entry whose attribute holds that
// literal value. Login names are also checked before any search (valid
// UTF-8, no control characters, at most 320 bytes: 64 for the local part,
// 1 for "@" and 255 for the domain, RFC 5321 section 4.5.3.1); a name that
// fails the check is an unknown user and the directory is not asked.
//
// # Exactly one entry
//
// A search asks for at most two entries. One entry is an answer, none is
// route.ErrUnknownUser and two are route.ErrAmbiguous: a directory that
// has two entries for one login is misconfigured, and picking either one
// could deliver a login into someone else's mailbox.
//
// # Value order
//
// LDAP does not define an order for the values of a multi-valued attribute
// (RFC 4511 section 4.1.7: an attribute's values form a set). OpenLDAP's
// slapd returns them in insertion order, and that is what the convention
// "primary host first, then standbys" relies on. Directories that reorder
// values need one host per entry attribute instead, which this package does
// not support.
//
// # Use
//
//	m, err := ldapmap.NewLDAP(&ldapmap.Options{
//		URIs:         []string{"ldaps://ldap1.example.org", "ldaps://ldap2.example.org"},
//		BindDN:       "cn=switchboard,ou=services,dc=example,dc=org",
//		BindPassword: secret.String(password),
//		BaseDN:       "ou=people,dc=example,dc=org",
//	})
//	if err != nil {
//		return err
//	}
//	defer m.Close()
//	mapper := ldapmap.NewCache(m, &ldapmap.CacheOptions{ServeStale: true})
//	res, err := mapper.Lookup(ctx, "alice@example.org")
//
// And, on every node, with the same Options as NewLDAP's:
//
//	w, err := ldapmap.NewWatcher(dirOpts, &ldapmap.WatchOptions{Index: mapper},
//		func(ch ldapmap.Change) {
//			logins := mapper.InvalidateChange(ch)
//			_ = logins // kick their sessions on backends not in ch.NewHosts
//		})
//	go w.Run(ctx)
//
// The Hosts slice of a Result returned by any mapper in this package may be
// shared with a cache or with other callers: treat it as read-only.
package ldapmap
