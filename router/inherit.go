package router

import (
	"fmt"
	"net"
	"syscall"

	"switchboard/route"
	"switchboard/router/internal/pump"
)

// Serve serves cfg's protocol on ln, a listening socket opened elsewhere:
// one that systemd passes to the process (socket activation), or one that
// the previous process hands over on an upgrade. cfg.Addr is only used
// for the default name; the socket's own address counts. The server owns
// ln from then on: Shutdown and Close close it (other descriptors of the
// same socket, in other processes, keep it open and its backlog queued).
// TCP keepalive is turned on as Listen does. It returns ln's address.
func (s *Server) Serve(cfg ListenerConfig, ln net.Listener) (net.Addr, error) {
	if err := s.checkListener(cfg); err != nil {
		ln.Close()
		return nil, err
	}
	// pump.ListenConfig's Control sets keepalive on the socket (Linux);
	// elsewhere it is nil and accepted connections keep Go's defaults.
	if sc, ok := ln.(syscall.Conn); ok && pump.ListenConfig().Control != nil {
		rc, err := sc.SyscallConn()
		if err == nil {
			err = pump.SetListenerKeepAlive(rc)
		}
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("listener %s: %w", cfg.Name, err)
		}
	}
	return s.serveListener(cfg, ln)
}

// checkListener checks what Listen and Serve need of cfg.
func (s *Server) checkListener(cfg ListenerConfig) error {
	if cfg.Protocol != route.IMAP && cfg.Protocol != route.POP3 {
		return fmt.Errorf("listener %s: unknown protocol %q", cfg.Name, cfg.Protocol)
	}
	if cfg.TLS != TLSNone && s.opts.TLS == nil {
		return fmt.Errorf("listener %s: TLS mode %s needs a certificate", cfg.Name, cfg.TLS)
	}
	if cfg.ProxyProtocol && len(cfg.ProxyFrom) == 0 {
		return fmt.Errorf("listener %s: proxy protocol needs proxy_from", cfg.Name)
	}
	return nil
}
