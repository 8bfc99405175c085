// Package control carries out what operators and watchers decide about a
// user: drop the cached route (invalidate), close the live sessions
// (kick), and refuse new logins for a while (hold). A Control does it on
// every node through the cluster, or on this node alone when there is no
// cluster, and it is the cluster's Handler: the side that acts on this
// node when a decision arrives, wherever it was taken.
//
// What it acts on it sees through small interfaces of its own, so that it
// imports neither the session core nor the user map: Sessions (the
// router), route.Invalidator (a caching user map) and Cache (parked
// backend connections, such as the webmail connection cache). cmd wires
// the concrete types:
//
//	ctl := control.New(&control.Options{Routes: cache, Logger: logger})
//	cl, err := cluster.New(&cluster.Options{Handler: ctl.Handler(), …})
//	ctl.SetCluster(cl)     // or Options.Holds = gate.NewLocal(…) without a cluster
//	srv := router.New(…)
//	ctl.SetSessions(sessions{srv})
//	a := admin.New(&admin.Options{Control: ctl, …})
//
// Decisions taken on every node at once go through Invalidate and Hold;
// EntryChanged is for an LDAP change watcher, which runs on every node and
// so acts on this node only.
package control
