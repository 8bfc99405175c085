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
// own, on this node alone.
//
// Access sets who may do what; every request but /healthz passes guard:
//
//   - Host must name the listener: the address the request came in on,
//     "localhost" on loopback, or one of Access.HostNames (421 otherwise),
//     so a browser cannot reach it through a name rebound to the node.
//   - An Origin other than the listener itself, or a Sec-Fetch-Site other
//     than same-origin or none, is refused (403): no cross-site requests.
//   - Control (POST only, JSON body) needs Access.ControlToken, on
//     loopback too; without one the control endpoints answer 403.
//   - Reads take Access.ReadToken or the control token; without a
//     ReadToken, loopback peers need none.
//   - /debug/pprof/ exists only with Access.Pprof, for loopback peers
//     with read access.
//
// Tokens travel as "Authorization: Bearer <token>" (RFC 6750), are
// compared in constant time and are never logged.
//
// Metric names are switchboard_<subsystem>_<thing>, counters ending in
// _total. Labels take bounded values only: protocol, outcome, message
// type, member state, and backend names of the host map (sessions to a
// backend outside it count as "other"); never a user.
//
//	a := admin.New(&admin.Options{Addr: "127.0.0.1:8025", Access: admin.Access{ControlToken: tok}, Router: srv, Control: c, Cluster: c, …})
//	addr, err := a.Start()
//	a.SetReady()       // listeners are up: /healthz answers 200
//	…
//	a.SetDraining()    // SIGTERM: /healthz answers 503
//	a.Shutdown(ctx)
//
// Client is the other end, as the switchboard command uses it:
//
//	c, err := admin.NewClient("127.0.0.1:8025", cfg.Admin.Token) // a secret.String
//	resp, err := c.Invalidate("alice@example.org", true) // resp.Warning: not confirmed everywhere
//	st, err := c.Status()
//	st.WriteText(os.Stdout)
package admin
