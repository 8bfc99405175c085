package main

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"switchboard/config"
	"switchboard/conncache"
	"switchboard/control"
	"switchboard/ldapmap"
	"switchboard/router"
)

// newPool builds the webmail connection cache when a listener asks for
// it, with its metrics in reg; nil otherwise.
func newPool(cfg *config.Config, reg prometheus.Registerer, logger *slog.Logger) (*conncache.Cache, error) {
	cached := false
	for _, l := range cfg.Listen {
		if !l.Cache {
			continue
		}
		cached = true
		if l.CacheAnyAddress {
			logger.Warn("webmail cache on a listener that is not loopback: parked logins are offered to every client that reaches it", "listener", l.Name, "addr", l.Address)
		}
	}
	if !cached {
		return nil, nil
	}
	opts := cfg.Cache.Options()
	opts.Alive = router.ParkedAlive
	opts.Registerer = reg
	c, err := conncache.New(&opts)
	if err != nil {
		return nil, cfg.ErrorAt("cache", err)
	}
	return c, nil
}

// startWatcher follows the directory's changes when the map is LDAP and
// [ldap] watch is on: each change drops the entry's cached routes here,
// and control drops its parked connections and kicks sessions on a
// backend no longer named. It runs until ctx ends.
func startWatcher(ctx context.Context, cfg *config.Config, mapper any, ctl *control.Control, logger *slog.Logger) error {
	cache, ok := mapper.(*ldapmap.Cache)
	if cfg.Map.Type != config.MapLDAP || cfg.LDAP == nil || !cfg.LDAP.Watch || !ok {
		return nil
	}
	dir, err := ldapOptions(cfg)
	if err != nil {
		return err
	}
	w, err := ldapmap.NewWatcher(dir, &ldapmap.WatchOptions{
		PollInterval: cfg.LDAP.WatchPollInterval.Duration,
		ListInterval: cfg.LDAP.WatchListInterval.Duration,
		Index:        cache,
		Logger:       logger,
	}, func(ch ldapmap.Change) {
		logins := cache.InvalidateChange(ch)
		ctl.EntryChanged(logins, ch.NewHosts, ch.Deleted)
	})
	if err != nil {
		return cfg.ErrorAt("ldap.watch", err)
	}
	go runWatcher(ctx, w, logger)
	return nil
}

// runWatcher is the watcher's goroutine.
func runWatcher(ctx context.Context, w *ldapmap.Watcher, logger *slog.Logger) {
	if err := w.Run(ctx); err != nil {
		logger.Error("directory watcher stopped", "err", err)
	}
}
