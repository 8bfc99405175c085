// Package cluster joins the switchboard nodes into one cluster so that what
// one node learns, all know within a second. It wraps hashicorp/memberlist
// (SWIM membership and failure detection over UDP and TCP) and adds:
//
//   - Invalidations and kicks (Invalidate): sent straight to every live
//     member over TCP in parallel and gossiped as a safety net; receivers
//     drop duplicates by (origin, restart, sequence number) and relay what
//     is new. Recent invalidations also travel in the periodic full state
//     exchange (push/pull), so a node cut off for a while catches up.
//   - Holds (Hold, Held): replicated last-writer-wins state with a TTL,
//     delivered like invalidations and included in every state exchange,
//     so nodes that join later learn the holds in force.
//   - Backend health (SetBackendHealth, BackendDown, Health): each node
//     gossips what its Checker sees; a backend is down cluster-wide when a
//     strict majority of fresh reports from live nodes say so.
//   - Approximate shared login limits (SessionDelta, Sessions, LoginFailed,
//     LoginSucceeded, FailureScore): session counts per account, failure
//     scores per (account, source) and per source. Each node gossips its
//     own counts as absolute values; readers sum over live nodes. Counts
//     lag by about a second and are best-effort during partitions.
//
// The package is a leaf: it does not import the router. The router reaches
// it through small interfaces of its own, and the cluster calls back into
// the router through Handler.
//
// Gossip requires a key (Options.Keys, AES-GCM via memberlist's keyring)
// and a Label unless Options.AllowInsecure is set, and node meta stays
// within memberlist's 512 bytes. Typical use:
//
//	keys, err := cluster.ReadKeyringFile("/etc/switchboard/cluster.keys")
//	...
//	c, err := cluster.New(&cluster.Options{
//		BindAddr: "10.8.0.11",
//		Peers:    []string{"10.8.0.11:7946", "10.8.0.12:7946", "10.8.0.13:7946"},
//		Keys:     keys,
//		Handler:  router, // Invalidate, Kick, Hold
//		Logger:   logger,
//	})
//	...
//	go cluster.NewChecker(c, backends, 5*time.Second, 3*time.Second, nil).Run(ctx)
//	...
//	c.Leave(5 * time.Second) // before draining sessions
//	c.Shutdown()
//
// docs/cluster.md covers deployment, keys, and behaviour under failure.
package cluster
