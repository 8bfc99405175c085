package main

import (
	"context"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"time"

	"switchboard/admin"
	"switchboard/cluster"
	"switchboard/config"
	"switchboard/conncache"
	"switchboard/control"
	"switchboard/gate"
	"switchboard/ldapmap"
	"switchboard/route"
	"switchboard/router"

	"github.com/prometheus/client_golang/prometheus"
)

const (
	// leaveTimeout bounds the cluster leave announcement on SIGTERM.
	leaveTimeout = 3 * time.Second
	// adminShutdownTimeout bounds the admin listener's last requests.
	adminShutdownTimeout = 5 * time.Second
)

// node is what serve builds around the router: the cluster membership (or
// the local state of a node of its own), the gate, control, the backend
// checker and the admin listener. It only wires them together.
type node struct {
	cfg    *config.Config
	log    *slog.Logger
	name   string
	cl     *cluster.Cluster // nil without [cluster]
	gate   *gate.Gate
	ctl    *control.Control
	mapper route.Mapper
	admin  *admin.Server // nil without [admin]
	// metrics are the node's own, beside the admin listener's.
	metrics prometheus.Gatherer

	checkCancel context.CancelFunc
	checkDone   chan struct{}
}

// newNode joins the cluster (if configured) and builds the gate. The
// cluster calls back into the node, which reaches the router once
// setServer has been called.
func newNode(cfg *config.Config, mapper route.Mapper, pool *conncache.Cache, metrics prometheus.Gatherer, logger *slog.Logger) (*node, error) {
	n := &node{cfg: cfg, log: logger, mapper: mapper, metrics: metrics}
	ctlOpts := &control.Options{Logger: logger}
	if pool != nil {
		ctlOpts.Cache = pool
	}
	ctlOpts.Routes, _ = mapper.(route.Invalidator)
	var state gate.State
	if cfg.Cluster == nil {
		local := gate.NewLocal(cfg.Limits.FailureWindow.Duration)
		ctlOpts.Holds, state = local, local
		n.name, _ = os.Hostname()
	}
	n.ctl = control.New(ctlOpts)
	if cfg.Cluster != nil {
		cl, err := cluster.New(n.clusterOptions())
		if err != nil {
			return nil, cfg.ErrorAt("cluster.bind_addr", err)
		}
		n.ctl.SetCluster(cl)
		n.cl, n.name, state = cl, cl.Name(), cl
	}
	lim := cfg.Limits
	n.gate = gate.New(state, &gate.Options{
		IMAPSessions:         lim.IMAPSessionsPerUser,
		POP3Sessions:         lim.POP3SessionsPerUser,
		FailuresBeforeDelay:  lim.FailuresBeforeDelay,
		FailuresBeforeRefuse: lim.FailuresBeforeRefuse,
		FailureDelay:         lim.FailureDelay.Duration,
		Logger:               logger,
	})
	return n, nil
}

// clusterOptions maps [cluster] onto cluster.Options.
func (n *node) clusterOptions() *cluster.Options {
	cc := n.cfg.Cluster
	keys := make([]cluster.Key, len(cc.Keys))
	for i, k := range cc.Keys {
		keys[i] = cluster.Key(k)
	}
	peers := make([]string, len(cc.Peers))
	for i, p := range cc.Peers {
		if _, _, err := net.SplitHostPort(p); err != nil {
			p = net.JoinHostPort(p, strconv.Itoa(config.DefaultClusterPort))
		}
		peers[i] = p
	}
	meta := map[string]string{"version": versionString()}
	if a := n.cfg.Admin; a != nil {
		meta["admin"] = a.Address
	}
	return &cluster.Options{
		NodeName:          cc.NodeName,
		BindAddr:          cc.BindAddr,
		BindPort:          cc.BindPort,
		AdvertiseAddr:     cc.AdvertiseAddr,
		AdvertisePort:     cc.AdvertisePort,
		Peers:             peers,
		Keys:              keys,
		AllowInsecure:     cc.AllowInsecure,
		Label:             cc.Label,
		Meta:              meta,
		Handler:           n.ctl.Handler(),
		Logger:            n.log,
		GossipInterval:    cc.GossipInterval.Duration,
		ProbeInterval:     cc.ProbeInterval.Duration,
		ProbeTimeout:      cc.ProbeTimeout.Duration,
		SuspicionMult:     cc.SuspicionMult,
		PushPullInterval:  cc.PushPullInterval.Duration,
		TCPTimeout:        cc.TCPTimeout.Duration,
		UDPBufferSize:     cc.UDPBufferSize,
		StateInterval:     cc.StateInterval.Duration,
		ReconnectInterval: cc.ReconnectInterval.Duration,
		MaxEntries:        cc.MaxEntries,
		HealthTTL:         cc.HealthTTL.Duration,
		FailureWindow:     n.cfg.Limits.FailureWindow.Duration,
	}
}

// backendDown is router.Options.BackendDown: the cluster's verdict, or
// nil on a node of its own (no health checks: a dead backend fails its
// dial at once).
func (n *node) backendDown() func(host string) bool {
	if n.cl == nil {
		return nil
	}
	return n.cl.BackendDown
}

// setServer gives control the router that kicks act on.
func (n *node) setServer(srv *router.Server) { n.ctl.SetSessions(routerSessions{srv}) }

// routerSessions adapts *router.Server to control.Sessions.
type routerSessions struct{ srv *router.Server }

func (s routerSessions) Kick(user, reason string) int { return s.srv.Kick(user, reason) }

// Hosts lists the host values of user's sessions. It walks every session,
// which is fine for what calls it: directory changes, one user at a time.
func (s routerSessions) Hosts(user string) []string {
	user = route.Fold(user)
	var hosts []string
	for _, si := range s.srv.Sessions() {
		if route.Fold(si.User) == user {
			hosts = append(hosts, si.Host)
		}
	}
	return hosts
}

// backendNames returns the names of the host map, sorted.
func (n *node) backendNames() []string {
	names := make([]string, 0, len(n.cfg.Hosts))
	for name := range n.cfg.Hosts {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// startChecker probes the backends of the host map and reports to the
// cluster. Nothing happens without a cluster.
func (n *node) startChecker(hm *route.HostMap, probe cluster.ProbeFunc) {
	if n.cl == nil {
		return
	}
	names := n.backendNames()
	backends := func() map[string]string {
		m := make(map[string]string, len(names))
		for _, name := range names {
			m[name] = hm.Resolve(name, route.IMAP)
		}
		return m
	}
	cc := n.cfg.Cluster
	ch := cluster.NewChecker(n.cl, backends, cc.CheckInterval.Duration, cc.CheckTimeout.Duration, probe)
	ctx, cancel := context.WithCancel(context.Background())
	n.checkCancel, n.checkDone = cancel, make(chan struct{})
	go runChecker(ctx, ch, n.checkDone)
}

// runChecker is the goroutine of the backend checker.
func runChecker(ctx context.Context, ch *cluster.Checker, donec chan<- struct{}) {
	defer close(donec)
	ch.Run(ctx)
}

// startAdmin starts the admin listener, if configured.
func (n *node) startAdmin(srv *router.Server, hm *route.HostMap) error {
	ac := n.cfg.Admin
	if ac == nil {
		return nil
	}
	names := n.backendNames()
	addrs := make(map[string][]string, len(names))
	for _, name := range names {
		addrs[name] = []string{hm.Resolve(name, route.IMAP), hm.Resolve(name, route.POP3)}
	}
	opts := &admin.Options{
		Addr:        ac.Address,
		Token:       string(ac.Token),
		Node:        n.name,
		Version:     versionString(),
		Router:      srv,
		Control:     n.ctl,
		Backends:    names,
		BackendName: admin.BackendNamer(addrs),
		Gate:        n.gate.Stats,
		Metrics:     n.metrics,
		Logger:      n.log,
	}
	if n.cl != nil {
		opts.Cluster = n.cl
	}
	if c, ok := n.mapper.(interface{ Stats() ldapmap.CacheStats }); ok {
		opts.MapCache = c.Stats
	}
	n.admin = admin.New(opts)
	addr, err := n.admin.Start()
	if err != nil {
		n.admin = nil
		return n.cfg.ErrorAt("admin.address", err)
	}
	n.log.Info("admin listening", "addr", addr.String(), "token", ac.Token != "")
	return nil
}

// ready marks the node ready: /healthz answers 200.
func (n *node) ready() {
	if n.admin != nil {
		n.admin.SetReady()
	}
}

// draining makes /healthz answer 503 and leaves the cluster, so that
// load balancers and the other nodes stop counting on this one before
// sessions are drained.
func (n *node) draining() {
	if n.admin != nil {
		n.admin.SetDraining()
	}
	if n.cl != nil {
		if err := n.cl.Leave(leaveTimeout); err != nil {
			n.log.Warn("cluster leave", "err", err)
		}
	}
}

// close stops the checker, the cluster and the admin listener, in that
// order; call it once the router is shut down.
func (n *node) close() {
	if n.checkCancel != nil {
		n.checkCancel()
		<-n.checkDone
	}
	if n.cl != nil {
		if err := n.cl.Shutdown(); err != nil {
			n.log.Warn("cluster shutdown", "err", err)
		}
	}
	if n.admin != nil {
		ctx, cancel := context.WithTimeout(context.Background(), adminShutdownTimeout)
		defer cancel()
		if err := n.admin.Shutdown(ctx); err != nil {
			n.log.Warn("admin shutdown", "err", err)
		}
	}
}

var (
	_ admin.Control    = (*control.Control)(nil)
	_ control.Sessions = routerSessions{}
)
