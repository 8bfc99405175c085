package main

import (
	"bufio"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"switchboard/config"
	"switchboard/internal/testbed"
)

// distDir holds the files the Debian package installs (scripts/mkdeb.sh).
const distDir = "../../dist"

// stopMargin is what TimeoutStopSec must leave beyond drain_grace and the
// backend login timeout: the cluster leave (leaveTimeout) and the admin
// listener's last requests.
const stopMargin = 5 * time.Second

// exampleConfig copies dist/switchboard.toml into a directory of its own
// with a certificate and key at the paths its [tls] table names, as an
// administrator would put them, and returns the copy's path.
func exampleConfig(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	src, err := os.ReadFile(filepath.Join(distDir, "switchboard.toml"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "switchboard.toml")
	if err := os.WriteFile(path, src, 0o640); err != nil {
		t.Fatal(err)
	}
	ca, err := testbed.NewCA(filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.Issue("mail.example.org")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "tls"), 0o750); err != nil {
		t.Fatal(err)
	}
	for from, to := range map[string]string{cert: "tls/mail.pem", key: "tls/mail.key"} {
		if err := os.Rename(from, filepath.Join(dir, to)); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

// TestDistExampleChecks runs `switchboard check` on the example
// configuration the package installs, once its certificate exists.
func TestDistExampleChecks(t *testing.T) {
	path := exampleConfig(t)
	if err := check(path, io.Discard); err != nil {
		t.Fatalf("check %s: %v", path, err)
	}
	// Without the certificate it must fail, naming tls.cert: the check
	// really looks at the files.
	if err := os.Remove(filepath.Join(filepath.Dir(path), "tls", "mail.pem")); err != nil {
		t.Fatal(err)
	}
	if err := check(path, io.Discard); err == nil || !strings.Contains(err.Error(), "tls.cert") {
		t.Fatalf("check without the certificate: %v, want a tls.cert problem", err)
	}
}

// unitValues returns the values of key in a systemd unit file, in order.
func unitValues(t *testing.T, name, key string) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(distDir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var vals []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if ok && k == key {
			vals = append(vals, v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return vals
}

// TestDistStopTimeout checks that a node of the example configuration
// drains within the unit's stop timeout: drain_grace, a login still
// running when the grace ends (backend.login_timeout) and stopMargin.
func TestDistStopTimeout(t *testing.T) {
	cfg, err := config.Load(exampleConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	vals := unitValues(t, "switchboard.service", "TimeoutStopSec")
	if len(vals) != 1 {
		t.Fatalf("switchboard.service: TimeoutStopSec set %d times, want once", len(vals))
	}
	stop, err := time.ParseDuration(vals[0])
	if err != nil {
		t.Fatalf("TimeoutStopSec=%s: %v (write it with a unit, as 45s)", vals[0], err)
	}
	need := cfg.DrainGrace.Duration + cfg.Backend.LoginTimeout.Duration + stopMargin
	if stop < need {
		t.Errorf("TimeoutStopSec=%v < drain_grace %v + login_timeout %v + %v", stop,
			cfg.DrainGrace.Duration, cfg.Backend.LoginTimeout.Duration, stopMargin)
	}
}

// TestDistSocketMatchesExample checks that switchboard.socket and the
// example configuration name the same addresses, so that with socket
// activation every listener takes a socket and no socket is left over.
func TestDistSocketMatchesExample(t *testing.T) {
	cfg, err := config.Load(exampleConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	streams := unitValues(t, "switchboard.socket", "ListenStream")
	if len(streams) != len(cfg.Listen) {
		t.Errorf("switchboard.socket has %d ListenStream, the example %d [[listen]]", len(streams), len(cfg.Listen))
	}
	for _, s := range streams {
		ta, err := net.ResolveTCPAddr("tcp", s)
		if err != nil {
			t.Fatalf("ListenStream=%s: %v", s, err)
		}
		found := false
		for _, l := range cfg.Listen {
			found = found || sameAddr(ta, l.Address)
		}
		if !found {
			t.Errorf("ListenStream=%s matches no [[listen]] of the example", s)
		}
	}
}
