package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"switchboard/cluster"
	"switchboard/config"
	"switchboard/router"
	sbtls "switchboard/tls"

	"github.com/prometheus/client_golang/prometheus"
)

// runServe runs the proxy until SIGTERM or SIGINT. SIGHUP re-reads the
// TLS certificates and the file map without dropping sessions.
//
// Start: listeners, then the backend checker and the admin listener, then
// /healthz answers 200. SIGTERM: /healthz answers 503, the node leaves the
// cluster, the listeners close and sessions have drain_grace to end by
// themselves before they get a BYE (a second SIGTERM: at once); then the
// checker, the cluster and the admin listener stop. SIGUSR2 hands the
// listening sockets to a new process (handover.go) and then drains.
// Listening sockets passed by systemd are used (activation.go).
func runServe(args []string) int {
	monitorErr := tuneMonitor() // first: it may start the process again
	f := newFlags("serve", "", os.Stderr)
	if err := f.parse(args, 0); err != nil {
		return exitStatus(err)
	}
	cfg, err := config.Load(f.config)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	logger, flush := cfg.Logger(os.Stderr)
	defer flush()
	slog.SetDefault(logger)
	if monitorErr != nil {
		logger.Warn("runtime monitor left at Go's default", "err", monitorErr)
	}
	if addr := os.Getenv("SWITCHBOARD_DEBUG_ADDR"); addr != "" {
		startDebug(addr, logger)
	}
	if err := serve(cfg, logger); err != nil {
		logger.Error("switchboard stopped", "err", err)
		return 1
	}
	return 0
}

func serve(cfg *config.Config, logger *slog.Logger) error {
	in, err := inheritedListeners() // socket activation or a hand-over
	if err != nil {
		return err
	}
	defer in.closeRest(logger)
	serverTLS, err := newServerTLS(cfg, logger)
	if err != nil {
		return err
	}
	backendTLS, err := newBackendTLS(cfg)
	if err != nil {
		return err
	}
	mapper, closer, err := newMapper(cfg)
	if err != nil {
		return err
	}
	defer closer.Close()
	if err := in.prepared(); err != nil { // a hand-over: the old process frees its ports
		return err
	}
	metrics := prometheus.NewRegistry()
	pool, err := newPool(cfg, metrics, logger)
	if err != nil {
		return err
	}
	n, err := newNode(cfg, mapper, pool, metrics, logger)
	if err != nil {
		return err
	}
	closeNode := sync.OnceFunc(n.close)
	defer closeNode()

	hm := cfg.HostMap()
	opts := &router.Options{
		Hostname:         cfg.Hostname,
		Mapper:           mapper,
		Hosts:            hm,
		BackendTLS:       backendTLS,
		TrustedNets:      cfg.TrustedNets(),
		PreauthTimeout:   cfg.PreauthTimeout.Duration,
		IdleTimeout:      cfg.IdleTimeout.Duration,
		DialTimeout:      cfg.Backend.DialTimeout.Duration,
		LoginTimeout:     cfg.Backend.LoginTimeout.Duration,
		AuthFailDelay:    cfg.AuthFailDelay.Duration,
		MaxPreauthErrors: cfg.MaxPreauthErrors,
		Gate:             n.gate,
		BackendDown:      n.backendDown(),
		Logger:           logger,
	}
	if pool != nil {
		opts.Pool = pool
		defer pool.Close()
	}
	if serverTLS != nil {
		opts.TLS = serverTLS.Config()
	}
	srv := router.New(opts)
	n.setServer(srv)
	var ls []namedListener // for a hand-over
	for _, l := range cfg.Listen {
		ln, err := listenOn(srv, in, l, logger)
		if err != nil {
			srv.Close()
			return err
		}
		ls = append(ls, namedListener{l.Name, ln})
	}
	in.closeRest(logger)
	var probe cluster.ProbeFunc // nil: plaintext greeting
	if backendTLS != nil {
		probe = cluster.ProbeGreetingTLS(backendTLS)
	}
	n.startChecker(hm, probe)
	if err := n.startAdmin(srv, hm); err != nil {
		srv.Close()
		return err
	}
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	if err := startWatcher(watchCtx, cfg, mapper, n.ctl, logger); err != nil {
		srv.Close()
		return err
	}
	n.ready()
	in.started(logger)
	logger.Info("switchboard started", "version", versionString(), "config", cfg.File, "node", n.name, "clustered", n.cl != nil)

	sigc := make(chan os.Signal, 4)
	signal.Notify(sigc, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR2)
	defer signal.Stop(sigc)
	grace := cfg.DrainGrace.Duration
	for sig := range sigc {
		switch sig {
		case syscall.SIGHUP:
			reload(serverTLS, mapper, logger)
			continue
		case syscall.SIGUSR2:
			if !upgrade(ls, n, closeNode, sigc, logger) {
				continue
			}
		default:
			sdNotify("STOPPING=1") // not after a hand-over: no longer the main process
			n.draining()
		}
		logger.Info("draining", "signal", sig.String(), "grace", grace)
		if pool != nil {
			pool.Close() // parked connections are no sessions to wait for
		}
		return drain(srv, sigc, grace, logger)
	}
	return nil
}

// reload re-reads what can change without a restart.
func reload(serverTLS *sbtls.Server, mapper any, logger *slog.Logger) {
	if serverTLS != nil {
		if err := serverTLS.Reload(); err != nil {
			logger.Error("TLS reload failed; keeping the old certificates", "err", err)
		} else {
			logger.Info("TLS certificates reloaded")
		}
	}
	if r, ok := mapper.(interface{ Reload() error }); ok {
		if err := r.Reload(); err != nil {
			logger.Error("map reload failed; keeping the old map", "err", err)
		} else {
			logger.Info("map reloaded")
		}
	}
}

// drain stops accepting and lets sessions finish for grace, then closes
// the rest with a BYE; a second signal closes them at once.
func drain(srv *router.Server, sigc <-chan os.Signal, grace time.Duration, logger *slog.Logger) error {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	donec := make(chan struct{})
	defer close(donec)
	go cancelOnSignal(sigc, donec, cancel, logger)
	srv.Shutdown(ctx)
	logger.Info("switchboard stopped", "stats", fmt.Sprintf("%+v", srv.Stats()))
	return nil
}

// cancelOnSignal is the goroutine that cuts the drain short on a second
// SIGTERM or SIGINT; it ends with the drain.
func cancelOnSignal(sigc <-chan os.Signal, donec <-chan struct{}, cancel context.CancelFunc, logger *slog.Logger) {
	for {
		select {
		case <-donec:
			return
		case sig := <-sigc:
			if sig == syscall.SIGHUP {
				continue
			}
			logger.Info("second signal: closing sessions now", "signal", sig.String())
			cancel()
			return
		}
	}
}

func tlsMode(s string) router.TLSMode {
	switch s {
	case config.TLSImplicit:
		return router.TLSImplicit
	case config.TLSNone:
		return router.TLSNone
	}
	return router.TLSStartTLS
}
