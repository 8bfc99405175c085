// Package usertable keeps per-account state: holds (a mailbox being
// moved), live session counts per (account, protocol), and decaying login
// failure scores per (account, source address) and, per source address,
// of the distinct accounts that failed from it. It is the one implementation
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
//	k := usertable.PairKey{Account: "uid=alice,ou=people,dc=example,dc=org", Source: ip}
//	t.PairFailed(k, now)
//	t.SourceFailed(ip, now) // the first failure of this account from ip
//	pair, spray := t.PairScore(k, now), t.SourceScore(ip, now)
//
//	h := usertable.NewHolds(0)
//	rec, applied, changed, held := h.Set("alice@example.org", true, 10*time.Minute, "node1", now)
//
// Keys are used as given: callers pass account keys (route.AccountKey)
// or folded names (route.Fold). Source addresses are keyed by SourceKey:
// IPv6 per /64.
package usertable
