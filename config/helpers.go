package config

import (
	"io"
	"log/slog"
	"net/netip"

	"switchboard/internal/logbuf"
	"switchboard/route"
)

// HostMap returns the [hosts] table and the backend ports as a
// route.HostMap.
func (cfg *Config) HostMap() *route.HostMap {
	m := &route.HostMap{
		Hosts:    make(map[string]route.HostAddrs, len(cfg.Hosts)),
		IMAPPort: cfg.Backend.IMAPPort,
		POP3Port: cfg.Backend.POP3Port,
	}
	for name, e := range cfg.Hosts {
		m.Hosts[name] = route.HostAddrs{Addr: e.Addr, IMAP: e.IMAP, POP3: e.POP3}
	}
	return m
}

// TrustedNets returns trusted_networks parsed. Entries that do not parse
// (Load refuses them) are left out.
func (cfg *Config) TrustedNets() []netip.Prefix { return prefixes(cfg.TrustedNetworks) }

// BackendNets returns backend.networks parsed.
func (b *Backend) BackendNets() []netip.Prefix { return prefixes(b.Networks) }

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

// ProxyNets returns proxy_from parsed. Entries that do not parse (Load
// refuses them) are left out.
func (l *Listener) ProxyNets() []netip.Prefix { return prefixes(l.ProxyFrom) }

func prefixes(ss []string) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ss))
	for _, s := range ss {
		if p, err := parseCIDR(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// Level returns log_level as a slog.Level; unknown values mean info.
func (cfg *Config) Level() slog.Level {
	switch cfg.LogLevel {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

// Logger returns a logger writing to w at log_level in log_format,
// batching lines for log_flush_interval, and the function that writes
// what is waiting (call it before exiting).
func (cfg *Config) Logger(w io.Writer) (*slog.Logger, func()) {
	opts := &slog.HandlerOptions{Level: cfg.Level()}
	bw := logbuf.NewWriter(w, cfg.LogFlushInterval.Duration, logBufferSize)
	var h slog.Handler
	if cfg.LogFormat == "json" {
		h = slog.NewJSONHandler(bw, opts)
	} else {
		h = slog.NewTextHandler(bw, opts)
	}
	return slog.New(logbuf.NewHandler(h, bw)), bw.Flush
}

// logBufferSize is how much batched log text is written at once at the
// latest, whatever the interval.
const logBufferSize = 32 << 10
