// Package gate decides whether a login may go on. Its Gate implements
// router.Gate and router.AccountGate, which the router asks in two steps:
// Admit once the typed name is known, before the user map is asked (a
// cheap check: holds by name, the source's limits), and AdmitAccount
// once the map has named the account (route.AccountKey: the folded
// directory entry, so case, surrounding spaces and aliases count as one
// account; names the map does not know are keyed and counted alike, so
// the limits reveal nothing about which names exist). Done settles each
// attempt, Ended each session.
//
// Failures count per (account, source): a client guessing one account is
// slowed and then refused without locking out the account's owner
// elsewhere, or others behind the same address; a successful login
// clears its pair. Per source, the distinct accounts that failed are
// counted too (password spraying). The source is the client's address
// (IPv6 per /64), or for a peer in Options.ExemptNetworks (a webmail) the
// address it forwards in IMAP ID; exempt peers are spared the per-source
// limits. Logins under way hold an in-flight slot of their source and
// account and count as failures until Done, so parallel attempts cannot
// pass FailuresBeforeRefuse. All a login's waiting is capped by
// MaxFailureDelay, and a refusal carries the delay a failure would have
// waited, so that it is not answered sooner than a wrong password.
//
// The counts it reads and writes live behind State, which *cluster.Cluster
// implements, so that holds, session counts and failures are the whole
// cluster's: an account's sessions on every node count against one
// limit, and spreading password guesses over the nodes gains nothing.
// In-flight slots are this node's. A node of its own uses Local, the same
// State kept in memory, with holds of its own.
//
//	g := gate.New(c, &gate.Options{IMAPSessions: 50, POP3Sessions: 10,
//		FailuresBeforeDelay: 5, FailuresBeforeRefuse: 20,
//		ExemptNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
//	srv := router.New(&router.Options{Gate: g, …})
//
// Holds are looked up by the typed name (route.Fold of it, trimmed) and
// by the account key: a hold set by name holds that name, one set on the
// account key holds every name of the account.
//
// Answers use RFC 5530 response codes: [UNAVAILABLE] for a hold or too
// many failures, [LIMIT] for too many sessions (POP3 clients get
// [SYS/TEMP] and [IN-USE], RFC 3206).
package gate
