package main

import (
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"switchboard/bench/loadgen"
	"switchboard/internal/testbed"
)

// The relay target is the floor under every proxy: the cheapest extra TCP
// hop there can be. It knows each session's backend without reading a
// byte (one listener per backend address), so it has no login phase, no
// lookup and no protocol code; it accepts, dials the backend and moves
// bytes both ways with io.Copy, which splices between TCP sockets on
// Linux. What a figure loses from direct to relay is the price of the
// hop itself on this machine, which no proxy can avoid.
//
// It runs as a child process of the benchmark (sbbench with relayEnv set),
// so that its CPU is charged to it as for the other targets.

// relayEnv holds the relay child's routes: "listen=backend" pairs joined
// by commas.
const relayEnv = "SBBENCH_RELAY"

// maybeRelayChild runs the relay and never returns if the process was
// started as one. Call it first in main.
func maybeRelayChild() {
	spec := os.Getenv(relayEnv)
	if spec == "" {
		return
	}
	log.SetFlags(0)
	log.SetPrefix("relay: ")
	for _, pair := range strings.Split(spec, ",") {
		listen, backend, ok := strings.Cut(pair, "=")
		if !ok {
			log.Fatalf("bad route %q", pair)
		}
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			log.Fatal(err)
		}
		go relayAccept(ln, backend)
	}
	select {}
}

func relayAccept(ln net.Listener, backend string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go relayConn(c.(*net.TCPConn), backend)
	}
}

// relayConn moves bytes until both directions have ended, passing each
// end-of-stream on as a half-close, as a transparent hop would.
func relayConn(c *net.TCPConn, backend string) {
	defer c.Close()
	bc, err := net.Dial("tcp", backend)
	if err != nil {
		return
	}
	b := bc.(*net.TCPConn)
	defer b.Close()
	done := make(chan struct{})
	go func() {
		io.Copy(b, c)
		b.CloseWrite()
		close(done)
	}()
	io.Copy(c, b)
	c.CloseWrite()
	<-done
}

// startRelay starts the relay child with a listener on its own loopback
// IP for every address the direct target dials.
func startRelay(tb *bed, dir string) (*target, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	ip := allocFreshIP(tb)
	direct := directTarget(tb).lg
	per := make(map[string]map[string]string)
	var routes []string
	for host, addrs := range direct.PerHost {
		per[host] = make(map[string]string)
		for key, backend := range addrs {
			if !strings.HasSuffix(key, "/none") {
				continue // see target.floor
			}
			port, err := testbed.FreePort(ip)
			if err != nil {
				return nil, err
			}
			listen := net.JoinHostPort(ip, strconv.Itoa(port))
			per[host][key] = listen
			routes = append(routes, listen+"="+backend)
		}
	}
	// The relay is a Go program too: it gets the runtime monitor setting
	// switchboard serve gives itself (cmd/switchboard/monitor.go), or the
	// floor would carry a cost Switchboard no longer pays.
	d, err := startDaemon("relay", filepath.Join(dir, "relay.log"), []string{self},
		relayEnv+"="+strings.Join(routes, ","), "GODEBUG=schedtrace=2147483647")
	if err != nil {
		return nil, err
	}
	t := &target{daemons: []*daemon{d}, floor: true,
		lg: &loadgen.Target{Name: "relay", PerHost: per, CAPEM: tb.caPEM}}
	for _, addrs := range per {
		for key, a := range addrs {
			greeting := "* OK"
			if strings.HasPrefix(key, "pop3") {
				greeting = "+OK"
			}
			if err := d.waitGreeting(a, greeting, false); err != nil {
				t.stop()
				return nil, fmt.Errorf("%w: %s", errSkip, oneLine(err.Error(), 300))
			}
		}
	}
	return t, nil
}
