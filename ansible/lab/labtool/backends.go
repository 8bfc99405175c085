package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"switchboard/internal/testbed"
)

// usersPerBackend is how many generated users each backend holds:
// user0001…user0010 on mx1, user0011…user0020 on mx2, each with the
// password "secret-" plus its local part (testbed.Options.UsersPerBackend).
const usersPerBackend = 10

// backendsFlags are the flags of labtool backends.
type backendsFlags struct {
	dir, ldapIP, mx1IP, mx2IP, trusted, nodes string
}

// runBackends starts the testbed on the lab bridge's addresses, writes
// what Ansible needs to reach it, and runs until SIGTERM or SIGINT.
func runBackends(args []string, logger *slog.Logger) error {
	var f backendsFlags
	fs := flag.NewFlagSet("backends", flag.ContinueOnError)
	fs.StringVar(&f.dir, "dir", "", "directory for the testbed, certificates and vars.yml (under /tmp: Dovecot's mail user must reach it)")
	fs.StringVar(&f.ldapIP, "ldap-ip", "", "address for slapd")
	fs.StringVar(&f.mx1IP, "mx1-ip", "", "address for backend mx1")
	fs.StringVar(&f.mx2IP, "mx2-ip", "", "address for backend mx2")
	fs.StringVar(&f.trusted, "trusted", "", "Dovecot's login_trusted_networks (the nodes' /24)")
	fs.StringVar(&f.nodes, "nodes", "", "comma-separated node addresses to issue certificates for")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if f.dir == "" || f.ldapIP == "" || f.mx1IP == "" || f.mx2IP == "" || f.trusted == "" || f.nodes == "" {
		return fmt.Errorf("backends: -dir, -ldap-ip, -mx1-ip, -mx2-ip, -trusted and -nodes are required")
	}
	ips := map[string]string{"mx1": f.mx1IP, "mx2": f.mx2IP}
	tb, err := testbed.Start(testbed.Options{
		Dir:             filepath.Join(f.dir, "testbed"),
		UsersPerBackend: usersPerBackend,
		MessagesPerUser: 1,
		ConfigureLDAP:   func(o *testbed.SlapdOptions) { o.IP = f.ldapIP },
		ConfigureBackend: func(name string, o *testbed.DovecotOptions) {
			o.IP = ips[name]
			o.TrustedNetworks = []string{f.trusted}
		},
	})
	if err != nil {
		return fmt.Errorf("backends: %w", err)
	}
	defer tb.Close()
	if err := writeLabFiles(f, tb); err != nil {
		return err
	}
	logger.Info("backends up", "ldap", tb.LDAP.LDAPSURI, "mx1", tb.Backends["mx1"].IMAPAddr, "mx2", tb.Backends["mx2"].IMAPAddr)
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGINT)
	<-sigc
	logger.Info("backends stopping")
	return nil
}

// writeLabFiles writes DIR/certs (the CA, a certificate and key per node),
// DIR/secrets/ldap.secret and DIR/vars.yml, then DIR/ready.
func writeLabFiles(f backendsFlags, tb *testbed.Testbed) error {
	certs := filepath.Join(f.dir, "certs")
	secrets := filepath.Join(f.dir, "secrets")
	for _, d := range []string{certs, secrets} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("backends: %w", err)
		}
	}
	if err := copyFile(tb.CA.File, filepath.Join(certs, "ca.pem"), 0o644); err != nil {
		return err
	}
	for _, ip := range strings.Split(f.nodes, ",") {
		cert, key, err := tb.CA.Issue(ip)
		if err != nil {
			return fmt.Errorf("backends: %w", err)
		}
		if err := copyFile(cert, filepath.Join(certs, ip+".pem"), 0o644); err != nil {
			return err
		}
		if err := copyFile(key, filepath.Join(certs, ip+".key"), 0o600); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(secrets, "ldap.secret"), []byte(tb.LDAP.BindPassword+"\n"), 0o600); err != nil {
		return fmt.Errorf("backends: %w", err)
	}
	mx1, mx2 := tb.Backends["mx1"], tb.Backends["mx2"]
	vars := fmt.Sprintf(`# Written by labtool backends: where the lab's slapd and Dovecots listen.
switchboard_ldap_uris: ["%s"]
switchboard_ldap_base_dn: "%s"
switchboard_ldap_bind_dn: "%s"
switchboard_ldap_bind_password: "{{ lookup('ansible.builtin.file', '%s') }}"
switchboard_ldap_ca_src: "%s"
switchboard_hosts:
  mx1: {imap: "%s", pop3: "%s"}
  mx2: {imap: "%s", pop3: "%s"}
`, tb.LDAP.LDAPSURI, tb.LDAP.PeopleDN, tb.LDAP.BindDN, filepath.Join(secrets, "ldap.secret"),
		filepath.Join(certs, "ca.pem"), mx1.IMAPAddr, mx1.POP3Addr, mx2.IMAPAddr, mx2.POP3Addr)
	if err := os.WriteFile(filepath.Join(f.dir, "vars.yml"), []byte(vars), 0o644); err != nil {
		return fmt.Errorf("backends: %w", err)
	}
	return os.WriteFile(filepath.Join(f.dir, "ready"), nil, 0o644)
}

// copyFile copies src to dst with mode perm.
func copyFile(src, dst string, perm os.FileMode) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("backends: %w", err)
	}
	if err := os.WriteFile(dst, b, perm); err != nil {
		return fmt.Errorf("backends: %w", err)
	}
	return nil
}
