package route

import (
	"net"
	"strconv"
)

// Protocol names, as used in host maps, logs and metrics labels.
const (
	IMAP = "imap"
	POP3 = "pop3"
)

// The protocols' well-known ports: a HostMap dials the plaintext ones
// when an address has none and its IMAPPort or POP3Port is zero.
const (
	PortIMAP  = 143 // RFC 9051
	PortPOP3  = 110 // RFC 1939
	PortIMAPS = 993 // RFC 8314, implicit TLS
	PortPOP3S = 995 // RFC 8314, implicit TLS
)

// HostMap rewrites the values of the host attribute to addresses to dial.
//
// A value with an entry is dialled at that entry's address for the
// protocol; a value without one is dialled as a name (or address) on the
// protocol's default port. An explicit port in the value itself wins.
type HostMap struct {
	// Hosts maps an attribute value ("mx2") to its addresses.
	Hosts map[string]HostAddrs
	// IMAPPort and POP3Port are the default backend ports used when an
	// address has none. Zero means 143 and 110.
	IMAPPort, POP3Port int
}

// HostAddrs are one backend's addresses. IMAP and POP3 are "host:port" or
// "host"; an empty POP3 falls back to Addr on the default POP3 port, and so
// on.
type HostAddrs struct {
	// Addr is the host (name or IP, no port) used when the protocol has no
	// address of its own.
	Addr string
	IMAP string
	POP3 string
}

// Resolve returns the address to dial for host over protocol proto.
func (m *HostMap) Resolve(host, proto string) string {
	a, ok := m.Hosts[host]
	if !ok {
		return withPort(host, m.port(proto))
	}
	switch proto {
	case IMAP:
		if a.IMAP != "" {
			return withPort(a.IMAP, m.port(proto))
		}
	case POP3:
		if a.POP3 != "" {
			return withPort(a.POP3, m.port(proto))
		}
	}
	if a.Addr != "" {
		return withPort(a.Addr, m.port(proto))
	}
	return withPort(host, m.port(proto))
}

func (m *HostMap) port(proto string) int {
	switch proto {
	case POP3:
		if m.POP3Port != 0 {
			return m.POP3Port
		}
		return PortPOP3
	default:
		if m.IMAPPort != 0 {
			return m.IMAPPort
		}
		return PortIMAP
	}
}

// withPort adds port to addr unless it already carries one. Bare IPv6
// addresses are bracketed.
func withPort(addr string, port int) string {
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr
	}
	if len(addr) > 1 && addr[0] == '[' && addr[len(addr)-1] == ']' {
		addr = addr[1 : len(addr)-1]
	}
	return net.JoinHostPort(addr, strconv.Itoa(port))
}
