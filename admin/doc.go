// Package admin is a node's HTTP listener for operators and their tools:
//
//	GET  /metrics         Prometheus text format, from a private registry
//	GET  /status          JSON: node, members, backend health as each node sees it, sessions
//	GET  /healthz         200 once the listeners are up; 503 while starting or draining
//	POST /v1/invalidate   {"user": "alice@example.org", "kick": true}
//	POST /v1/hold         {"user": "alice@example.org", "ttl": "10m"}
//	POST /v1/release      {"user": "alice@example.org"}
//	POST /v1/drain        no body: /healthz answers 503 until the restart
//
// The control endpoints act on the whole cluster through Control, which
// *control.Control implements, through the cluster or, on a node of its
// own, on this node alone. With Options.Token set, every request but /healthz must
// carry "Authorization: Bearer <token>" (RFC 6750), compared in constant
// time; the token is never logged.
//
// Metric names are switchboard_<subsystem>_<thing>, counters ending in
// _total. Labels take bounded values only: protocol, outcome, message
// type, member state, and backend names of the host map (sessions to a
// backend outside it count as "other"); never a user.
//
//	a := admin.New(&admin.Options{Addr: "127.0.0.1:8025", Router: srv, Control: c, Cluster: c, …})
//	addr, err := a.Start()
//	a.SetReady()       // listeners are up: /healthz answers 200
//	…
//	a.SetDraining()    // SIGTERM: /healthz answers 503
//	a.Shutdown(ctx)
//
// Client is the other end, as the switchboard command uses it:
//
//	c, err := admin.NewClient("127.0.0.1:8025", token)
//	resp, err := c.Invalidate("alice@example.org", true) // resp.Warning: not confirmed everywhere
//	st, err := c.Status()
//	st.WriteText(os.Stdout)
package admin
