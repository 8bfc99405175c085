// Package usertable keeps per-user state: holds (a mailbox being moved),
// live session counts per (user, protocol), and decaying login failure
// scores per client address and per user. It is the one implementation
// behind both of the gate's states: gate.Local keeps one Table and one
// Holds for a node of its own, and package cluster keeps the same pair
// for this node and gossips them, so a node behaves alike with or without
// a cluster.
//
// Neither type is safe for concurrent use, and neither runs a goroutine:
// the owner guards them with its own mutex (the cluster guards several
// tables with one) and calls Sweep from time to time. Every method that
// depends on the time takes it as an argument, which keeps the owner's
// clock the only clock and makes the tables easy to test.
//
//	t := usertable.New(&usertable.Options{FailureWindow: 15 * time.Minute})
//	t.LoginFailed(ip, "alice@example.org", now)
//	ipScore, userScore := t.IPScore(ip, now), t.UserScore("alice@example.org", now)
//
//	h := usertable.NewHolds(0)
//	rec, applied, changed, held := h.Set("alice@example.org", true, 10*time.Minute, "node1", now)
//
// User names are used as given; callers fold them first (route.Fold).
package usertable
