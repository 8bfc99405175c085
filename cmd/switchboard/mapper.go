package main

import (
	"fmt"
	"io"
	"log/slog"

	"switchboard/config"
	"switchboard/ldapmap"
	"switchboard/route"
	sbtls "switchboard/tls"
)

// newMapper builds the user map the configuration describes, the one
// serve routes with and lookup shows:
//
//   - map.type = "file": an *ldapmap.File read from map.file (it has a
//     Reload method), not cached;
//   - map.type = "ldap": an *ldapmap.LDAP over [ldap], wrapped in an
//     *ldapmap.Cache with cache_ttl, negative_ttl and serve_stale (it
//     implements route.Invalidator).
//
// The LDAP mapper does not connect until the first lookup. Its logs go to
// slog.Default(), which the caller sets from the configuration first. The
// closer releases the LDAP connections; call it after the last lookup.
func newMapper(cfg *config.Config) (route.Mapper, io.Closer, error) {
	switch cfg.Map.Type {
	case config.MapFile:
		f, err := ldapmap.LoadFile(cfg.Map.File)
		if err != nil {
			return nil, nil, err
		}
		return f, nopCloser{}, nil
	case config.MapLDAP:
		dir, err := ldapOptions(cfg)
		if err != nil {
			return nil, nil, err
		}
		l, err := ldapmap.NewLDAP(dir)
		if err != nil {
			return nil, nil, cfg.ErrorAt("ldap", err)
		}
		c := ldapmap.NewCache(l, &ldapmap.CacheOptions{
			TTL:         cfg.Map.CacheTTL.Duration,
			NegativeTTL: cfg.Map.NegativeTTL.Duration,
			ServeStale:  cfg.Map.ServeStale,
		})
		return c, l, nil
	default:
		return nil, nil, cfg.ErrorAt("map.type", fmt.Errorf("unknown map type %q", cfg.Map.Type))
	}
}

// ldapOptions maps [ldap] onto ldapmap.Options, for the map and the
// watcher.
func ldapOptions(cfg *config.Config) (*ldapmap.Options, error) {
	lc := cfg.LDAP
	if lc == nil {
		return nil, cfg.ErrorAt("map.type", fmt.Errorf("no [ldap] table"))
	}
	tc, err := sbtls.NewClient(&sbtls.ClientOptions{CAFile: lc.CAFile})
	if err != nil {
		return nil, cfg.ErrorAt("ldap.ca_file", err)
	}
	return &ldapmap.Options{
		URIs:         lc.URIs,
		StartTLS:     lc.StartTLS,
		TLSConfig:    tc, // ServerName is set per URI by ldapmap
		BindDN:       lc.BindDN,
		BindPassword: lc.BindPassword,
		BaseDN:       lc.BaseDN,
		Filter:       lc.Filter,
		Attribute:    lc.Attribute,
		PoolSize:     lc.PoolSize,
		DialTimeout:  lc.DialTimeout.Duration,
		Timeout:      lc.Timeout.Duration,
		Logger:       slog.Default(),
	}, nil
}

// nopCloser is the closer of a mapper that holds nothing open.
type nopCloser struct{}

func (nopCloser) Close() error { return nil }
