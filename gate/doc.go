// Package gate decides whether a login may go on. Its Gate implements
// router.Gate, which the router asks once a client's user name is known
// and before the user map or a backend is: it refuses users on hold (a
// mailbox being moved), users over their session limit, and clients or
// users with too many recent failed logins, and slows down those with a
// few.
//
// The counts it reads and writes live behind State, which *cluster.Cluster
// implements, so that holds, session counts and failures are the whole
// cluster's: a user's sessions on every node count against one limit, and
// spreading password guesses over the nodes gains nothing. A node of its
// own uses Local, the same State kept in memory, with holds of its own.
//
//	g := gate.New(c, &gate.Options{IMAPSessions: 50, POP3Sessions: 10,
//		FailuresBeforeDelay: 5, FailuresBeforeRefuse: 20, FailureDelay: 2 * time.Second})
//	srv := router.New(&router.Options{Gate: g, …})
//
// User names are folded to lower case before any count or hold is looked
// up, as the router files sessions for Kick; callers that hold or release
// users should fold them the same way (route.Fold).
//
// Answers use RFC 5530 response codes: [UNAVAILABLE] for a hold or too
// many failures, [LIMIT] for too many sessions (POP3 clients get
// [SYS/TEMP] and [IN-USE], RFC 3206).
package gate
