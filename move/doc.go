// Package move moves a user's mailbox from one Dovecot backend to another
// while the user keeps working, and switches the user's LDAP host only
// after verifying the copy. It is the procedure behind `switchboard move`
// (docs/moving-a-mailbox.md), measured clean in issue 15:
//
//  1. pre-copy: doveadm backup -R onto the empty destination, twice, while
//     the user works on the source;
//  2. hold: the user's logins refused on every node (Cluster.Hold, with a
//     TTL) and the entry's hold attribute set to the hold value, which the
//     MTA maps to a temporary failure;
//  3. kick on every node and on the source, wait Options.Settle, kick
//     again, wait until the source has no session;
//  4. one final doveadm backup -R -f (nothing writes on either side);
//  5. verify per folder: messages, UIDVALIDITY, UIDNEXT, mailbox GUID and
//     a digest of every UID's flags, equal on both sides;
//  6. one LDAP modify: host = destination;
//  7. invalidate (and kick) on every node;
//  8. release.
//
// A failure or a cancelled context before step 6 rolls back: the hold
// attribute gets its old values, the hold ends (or expires by itself),
// and the source, which only dsync's reading side ever touched, is the
// user's mailbox as before.
//
// The backends are driven through doveadm's HTTP API ([Doveadm]); dsync
// runs between them over doveadm's TCP protocol, authenticated with
// doveadm_password. What the move consumes is behind small interfaces
// (Directory, Cluster, Backend), so the command wires the concrete
// types:
//
//	dir, _ := move.NewLDAP(&move.LDAPOptions{URIs: …, BindDN: …, BindPassword: pw, BaseDN: …})
//	m, _ := move.New(&move.Options{Directory: dir, Cluster: c, Backends: map[string]move.Backend{
//		"mx1": &move.Doveadm{Name: "mx1", URL: "https://10.0.0.11:8080/doveadm/v1", TCPAddr: "10.0.0.11:2425", Password: dpw},
//		"mx2": …,
//	}, Progress: os.Stdout})
//	res, err := m.Move(ctx, "alice@example.org", "mx2")
package move
