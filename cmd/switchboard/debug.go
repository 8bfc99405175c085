package main

import (
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"

	"switchboard/internal/secret"
)

// startDebug serves Go's profiler (net/http/pprof) on addr, a loopback
// address: the profiler has no authentication, so any other address is
// refused. It is switched on by the SWITCHBOARD_DEBUG_ADDR environment
// variable; admin.pprof serves the same on the admin listener, behind
// its checks, and is the better choice.
func startDebug(addr string, logger *slog.Logger) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || !secret.Local(host) {
		logger.Error("debug listener refused: SWITCHBOARD_DEBUG_ADDR must be a loopback host:port (or use admin.pprof)", "addr", addr)
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		logger.Error("debug listener", "addr", addr, "err", err)
		return
	}
	logger.Warn("serving the profiler", "addr", ln.Addr().String())
	go http.Serve(ln, mux)
}
