package imap

import (
	"net/netip"
	"testing"
)

func TestNoteID(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want netip.AddrPort
	}{
		{"none", nil, netip.AddrPort{}},
		{"webmail", []string{"name", "Roundcube", "X-Originating-IP", "203.0.113.9", "x-originating-port", "51000"},
			netip.MustParseAddrPort("203.0.113.9:51000")},
		{"ipv6 in brackets", []string{"x-originating-ip", "[2001:db8::1]"}, netip.MustParseAddrPort("[2001:db8::1]:0")},
		{"mapped", []string{"x-originating-ip", "::ffff:192.0.2.1"}, netip.MustParseAddrPort("192.0.2.1:0")},
		{"garbage", []string{"x-originating-ip", "mallory", "x-originating-port", "99999"}, netip.AddrPort{}},
		{"zone", []string{"x-originating-ip", "fe80::1%eth0"}, netip.AddrPort{}},
		{"odd count", []string{"x-originating-ip"}, netip.AddrPort{}},
	}
	for _, tt := range tests {
		d := &Dialog{}
		d.noteID(tt.args)
		if got := d.Forwarded(); got.Addr() != tt.want.Addr() || (got.Addr().IsValid() && got.Port() != tt.want.Port()) {
			t.Errorf("%s: Forwarded = %v, want %v", tt.name, got, tt.want)
		}
	}
}
