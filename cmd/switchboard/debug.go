package main

import (
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
)

// startDebug serves Go's profiler (net/http/pprof) on addr, which should
// be a loopback address. It is switched on by the SWITCHBOARD_DEBUG_ADDR
// environment variable, for profiling a running node; it is off unless
// asked for.
func startDebug(addr string, logger *slog.Logger) {
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
