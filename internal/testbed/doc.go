// Package testbed starts real OpenLDAP slapd and Dovecot instances on
// loopback addresses for integration tests, the benchmark and the demo.
//
// Every instance gets its own random 127.x.y.z address (see [AllocIP]), its
// own ports, configuration and data under a caller-supplied directory, and
// runs as a child process in its own process group. Nothing listens on a
// standard port and no system service is touched. The package does not
// import package testing: failures are returned as errors and every
// instance has a Stop (or Close) method, so binaries can use it too.
//
// Typical use in a test:
//
//	tb, err := testbed.Start(testbed.Options{Dir: t.TempDir()})
//	if err != nil {
//		t.Fatal(err)
//	}
//	defer tb.Close()
//	alice, _ := tb.User("alice@example.org")
//	addr := tb.Backends[alice.Hosts[0]].IMAPAddr // "127.a.b.c:port"
//	_ = tb.LDAP.URI                              // "ldap://127.x.y.z:port"
//
// [Start] brings up a certificate authority ([CA]), one slapd ([Slapd]) and
// two Dovecot backends ([Dovecot]) named "mx1" and "mx2", and seeds the
// default users (see [DefaultUsers]) into LDAP, into both backends'
// passwd-files and, with a few messages each, into the Maildir of the backend
// they live on. The pieces can also be started one by one with [NewCA],
// [StartSlapd] and [StartDovecot].
//
// The harness must run as root (Dovecot drops privileges to the "mail" user
// for mailbox access, and slapd and the Dovecot master keep root). [Check]
// reports missing binaries with the Debian packages that provide them.
//
// # Directory layout
//
// Mail is owned by the "mail" user, so every directory above a Dovecot
// instance's directory must be searchable by it. When the directory lies
// under [os.TempDir] (as t.TempDir does), the harness adds the search bit
// (o+x, never read) to the temporary directories on the way; elsewhere it
// reports an error instead of changing permissions. Dovecot's base_dir holds
// UNIX sockets whose paths must stay under 108 bytes, so it lives in a short
// directory under os.TempDir that exists only while the instance runs.
//
// # LDAP schema
//
// The directory uses the project's schema, docs/ldap/switchboard.schema: the
// auxiliary class switchboardUser with the attributes host (from
// cosine.schema) and status. The package embeds a copy of that file; a test
// keeps the two identical.
package testbed
