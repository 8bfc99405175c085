package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"switchboard/bench/loadgen"
	"switchboard/internal/testbed"
)

// perditionLDAPLib is where Debian's perdition-ldap package puts the LDAP
// popmap library.
var perditionLDAPLibs = []string{
	"/usr/lib/x86_64-linux-gnu/libperditiondb_ldap.so.0",
	"/usr/lib/libperditiondb_ldap.so.0",
}

// dhParams are Diffie-Hellman parameters shipped by Dovecot; without them
// perdition logs a warning for every TLS listener.
const dhParams = "/usr/share/dovecot/dh.pem"

// proxyConfig is what every proxy target needs to know about the testbed.
type proxyConfig struct {
	Dir string
	IP  string // loopback address the proxy listens on
	// LDAP: plain ldap:// URI (host:port), base, service account.
	LDAPAddr, BaseDN, BindDN, BindPW string
	// Filter is the user search filter with %s for the login name.
	Filter string
	// Backend ports, the same on every backend IP.
	IMAPPort, POP3Port int
	CertFile, KeyFile  string
	CAFile             string
	CAPEM              []byte
}

// startPerdition runs Debian's perdition in four instances, as its init
// script would: perdition.imap4 (plaintext and STARTTLS), perdition.imap4s,
// perdition.pop3 (plaintext and STLS) and perdition.pop3s. Each uses the
// LDAP popmap against the testbed's slapd: the host attribute of the
// user's entry holds the backend's IP; the backend port is the same on
// every backend, so --outgoing_port carries it.
func startPerdition(c proxyConfig) (*target, error) {
	lib := ""
	for _, l := range perditionLDAPLibs {
		if _, err := os.Stat(l); err == nil {
			lib = l
			break
		}
	}
	if lib == "" {
		return nil, fmt.Errorf("%w: perdition's LDAP map is missing (apt-get install perdition perdition-ldap)", errSkip)
	}
	if _, err := exec.LookPath("/usr/sbin/perdition.imap4"); err != nil {
		return nil, fmt.Errorf("%w: perdition is missing (apt-get install perdition perdition-ldap)", errSkip)
	}
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return nil, err
	}
	// An empty configuration file keeps /etc/perdition/perdition.conf out.
	conf := filepath.Join(c.Dir, "empty.conf")
	if err := os.WriteFile(conf, nil, 0o644); err != nil {
		return nil, err
	}
	// RFC 4516 URL (the filter holds no space or '?'); perdition
	// substitutes %s with the login name, and the bindname and x-bindpw
	// extensions (commas inside escaped as %2c) give the service account.
	bind := strings.ReplaceAll(c.BindDN, ",", "%2c")
	mapOpt := fmt.Sprintf("3:ldap://%s/%s?mail,host?one?%s?!bindname=%s,x-bindpw=%s",
		c.LDAPAddr, c.BaseDN, c.Filter, bind, c.BindPW)

	t := &target{multiProcess: true, lg: &loadgen.Target{Name: "perdition", CAPEM: c.CAPEM, Addrs: map[string]string{}}}
	modes := []struct {
		bin, key, sslMode string
		outPort           int
		tlsFirst          bool
	}{
		{"perdition.imap4", "imap/none", "tls_listen", c.IMAPPort, false},
		{"perdition.imap4s", "imap/implicit", "ssl_listen", c.IMAPPort, true},
		{"perdition.pop3", "pop3/none", "tls_listen", c.POP3Port, false},
		{"perdition.pop3s", "pop3/implicit", "ssl_listen", c.POP3Port, true},
	}
	for _, m := range modes {
		port, err := testbed.FreePort(c.IP)
		if err != nil {
			t.stop()
			return nil, err
		}
		addr := c.IP + ":" + strconv.Itoa(port)
		argv := []string{
			"/usr/sbin/" + m.bin,
			"--config_file", conf,
			"--no_daemon",
			"--log_facility", "+", // stderr, into the log file
			"--bind_address", addr,
			"--no_lookup",
			"--username", "root", "--group", "root",
			"--pid_file", filepath.Join(c.Dir, m.bin+".pid"),
			"--map_library", lib,
			"--map_library_opt", mapOpt,
			"--outgoing_port", strconv.Itoa(m.outPort),
			"--ssl_mode", m.sslMode,
			"--ssl_cert_file", c.CertFile,
			"--ssl_key_file", c.KeyFile,
			"--ssl_listen_min_proto_version", "tlsv1.2",
			"--timeout", "3600",
		}
		if _, err := os.Stat(dhParams); err == nil {
			argv = append(argv, "--ssl_dh_params_file", dhParams)
		}
		d, err := startDaemon(m.bin, filepath.Join(c.Dir, m.bin+".log"), argv)
		if err != nil {
			t.stop()
			return nil, err
		}
		t.daemons = append(t.daemons, d)
		prefix := "* OK"
		if strings.HasPrefix(m.bin, "perdition.pop3") {
			prefix = "+OK"
		}
		if err := d.waitGreeting(addr, prefix, m.tlsFirst); err != nil {
			t.stop()
			return nil, err
		}
		t.lg.Addrs[m.key] = addr
	}
	return t, nil
}
