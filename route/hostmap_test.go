package route

import "testing"

func TestHostMapResolve(t *testing.T) {
	m := &HostMap{
		Hosts: map[string]HostAddrs{
			"mx1": {Addr: "10.8.0.1"},
			"mx2": {IMAP: "10.8.0.2:10143", POP3: "10.8.0.2:10110"},
			"mx3": {Addr: "10.8.0.3", IMAP: "10.8.0.3:1143"},
			"v6":  {Addr: "fd00::3"},
		},
		POP3Port: 1110,
	}
	tests := []struct {
		host, proto, want string
	}{
		{"mx1", IMAP, "10.8.0.1:143"},
		{"mx1", POP3, "10.8.0.1:1110"},
		{"mx2", IMAP, "10.8.0.2:10143"},
		{"mx2", POP3, "10.8.0.2:10110"},
		{"mx3", IMAP, "10.8.0.3:1143"},
		{"mx3", POP3, "10.8.0.3:1110"},
		{"v6", IMAP, "[fd00::3]:143"},
		{"mail4.example.net", IMAP, "mail4.example.net:143"},
		{"mail4.example.net:2143", IMAP, "mail4.example.net:2143"},
		{"[fd00::9]", POP3, "[fd00::9]:1110"},
	}
	for _, tt := range tests {
		if got := m.Resolve(tt.host, tt.proto); got != tt.want {
			t.Errorf("Resolve(%q, %q) = %q, want %q", tt.host, tt.proto, got, tt.want)
		}
	}
}
