package router

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
)

// DefaultBackendNets are the networks backends may be dialled in when
// Options.BackendNets is nil: loopback and the private ranges (RFC 1918,
// RFC 4193), where a provider's backends live behind its VPN.
var DefaultBackendNets = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("fc00::/7"),
}

// errOutsideNets: a host value that the host map does not name resolved
// to an address outside the backend networks, or carried its own port.
// A write to the directory must not turn the proxy into a way into other
// services.
var errOutsideNets = errors.New("outside backend networks")

func (o *Options) backendNets() []netip.Prefix {
	if o.BackendNets == nil {
		return DefaultBackendNets
	}
	return o.BackendNets
}

// newBackendDialers returns the dialer for host values the host map names
// (an operator's own choice: dialled as written) and the one for values
// it does not (from the directory: only into the backend networks).
func (s *Server) newBackendDialers() {
	// No TCP keepalive towards backends: parked connections are retired
	// by age and spliced ones by the idle timeout, and the setsockopt
	// calls are measurable per login.
	s.mapDialer = net.Dialer{KeepAlive: -1}
	nets := s.opts.backendNets()
	s.netDialer = net.Dialer{KeepAlive: -1, Control: func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("%w: %s", errOutsideNets, address)
		}
		a := ap.Addr().Unmap()
		for _, p := range nets {
			if p.Contains(a) {
				return nil
			}
		}
		return fmt.Errorf("%w: %s", errOutsideNets, address)
	}}
}

// backendDialer returns the dialer for host.
func (s *Server) backendDialer(host string) *net.Dialer {
	if s.hosts.Known(host) {
		return &s.mapDialer
	}
	return &s.netDialer
}

// checkHostValue refuses a host value the host map does not name that
// carries its own port.
func (s *Server) checkHostValue(host string) error {
	if s.hosts.Known(host) {
		return nil
	}
	if _, _, err := net.SplitHostPort(host); err == nil {
		return fmt.Errorf("%w: %q has a port of its own", errOutsideNets, host)
	}
	return nil
}
