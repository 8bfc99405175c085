package webmail

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"switchboard/internal/testbed"
)

// Timeouts of the Switchboard harness.
const (
	adminRequestTimeout = 5 * time.Second
	buildTimeout        = 5 * time.Minute
)

// BuildSwitchboard builds cmd/switchboard of this module into dir and
// returns the binary's path.
func BuildSwitchboard(ctx context.Context, dir string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, buildTimeout)
	defer cancel()
	bin := filepath.Join(dir, "switchboard")
	goTool, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("webmail: build switchboard: %w", err)
	}
	out, err := exec.CommandContext(ctx, goTool, "build", "-o", bin, "switchboard/cmd/switchboard").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("webmail: build switchboard: %w: %s", err, out)
	}
	return bin, nil
}

// SwitchboardOptions configures StartSwitchboard.
type SwitchboardOptions struct {
	// Binary is the switchboard binary (see BuildSwitchboard). Required.
	Binary string
	// Dir holds the configuration, secrets and log. Required.
	Dir string
	// Testbed provides the LDAP map and the backends mx1 and mx2.
	// Required.
	Testbed *testbed.Testbed
	// IP is the loopback address of the listeners. Default: a new
	// testbed.AllocIP().
	IP string
	// NoCache leaves cache = true off the webmail listener (a plain
	// routed listener, for comparison).
	NoCache bool
	// CacheTable is the body of a [cache] table ("per_user = 2" …);
	// empty leaves the defaults.
	CacheTable string
	// BackendTLS dials the backends' IMAPS ports with TLS, verified
	// against the testbed's CA.
	BackendTLS bool
}

// Switchboard is a running "switchboard serve".
type Switchboard struct {
	// WebmailAddr is the cached IMAP listener ("ip:port").
	WebmailAddr string
	// AdminAddr is the admin API ("ip:port").
	AdminAddr string
	// Config and LogPath are the configuration file and the log.
	Config  string
	LogPath string

	binary string
	token  string
	cmd    *exec.Cmd
	donec  chan struct{}
}

// StartSwitchboard writes a configuration with one IMAP listener (cached
// unless NoCache), the testbed's backends and LDAP map and an admin
// listener, checks it with "switchboard check", starts "switchboard
// serve" and waits until /healthz answers.
func StartSwitchboard(opts SwitchboardOptions) (*Switchboard, error) {
	if opts.Binary == "" || opts.Dir == "" || opts.Testbed == nil {
		return nil, errors.New("webmail: SwitchboardOptions.Binary, Dir and Testbed are required")
	}
	if opts.IP == "" {
		opts.IP = testbed.AllocIP()
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("webmail: switchboard dir: %w", err)
	}
	ports := make([]int, 2)
	for i := range ports {
		p, err := testbed.FreePort(opts.IP)
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	tokenBytes := make([]byte, 16)
	rand.Read(tokenBytes)
	s := &Switchboard{
		WebmailAddr: net.JoinHostPort(opts.IP, strconv.Itoa(ports[0])),
		AdminAddr:   net.JoinHostPort(opts.IP, strconv.Itoa(ports[1])),
		Config:      filepath.Join(opts.Dir, "switchboard.toml"),
		LogPath:     filepath.Join(opts.Dir, "switchboard.log"),
		binary:      opts.Binary,
		token:       hex.EncodeToString(tokenBytes),
		donec:       make(chan struct{}),
	}
	if err := s.writeConfig(opts); err != nil {
		return nil, err
	}
	if out, err := exec.Command(s.binary, "check", "-config", s.Config).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("webmail: switchboard check: %w: %s", err, out)
	}
	logf, err := os.OpenFile(s.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("webmail: switchboard log: %w", err)
	}
	defer logf.Close()
	s.cmd = exec.Command(s.binary, "serve", "-config", s.Config)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.SysProcAttr = testbed.ChildAttr()
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("webmail: start switchboard: %w", err)
	}
	go waitProcess(s.cmd, s.donec)
	if err := waitGreeting(s.WebmailAddr, s.donec); err != nil {
		s.Stop()
		return nil, fmt.Errorf("webmail: switchboard: %w; log: %s", err, readTail(s.LogPath))
	}
	return s, nil
}

// writeConfig writes the configuration and its secret files.
func (s *Switchboard) writeConfig(opts SwitchboardOptions) error {
	tb := opts.Testbed
	mx1, mx2 := tb.Backends["mx1"], tb.Backends["mx2"]
	secrets := map[string]string{"admin.token": s.token, "ldap.secret": tb.LDAP.BindPassword}
	for name, v := range secrets {
		if err := os.WriteFile(filepath.Join(opts.Dir, name), []byte(v+"\n"), 0o600); err != nil {
			return fmt.Errorf("webmail: write %s: %w", name, err)
		}
	}
	imap1, imap2, backend := mx1.IMAPAddr, mx2.IMAPAddr, ""
	if opts.BackendTLS {
		imap1, imap2 = mx1.IMAPSAddr, mx2.IMAPSAddr
		backend = fmt.Sprintf("\n[backend]\ntls = true\nca_file = %q\n", tb.CA.File)
	}
	cache := ""
	if opts.CacheTable != "" {
		cache = "\n[cache]\n" + opts.CacheTable + "\n"
	}
	conf := fmt.Sprintf(`hostname = "sb-webmail"

[[listen]]
name = "webmail"
protocol = "imap"
address = %q
tls = "none"
cache = %t

[hosts]
mx1 = { imap = %q, pop3 = %q }
mx2 = { imap = %q, pop3 = %q }

[map]
type = "ldap"

[ldap]
uris = [%q]
bind_dn = %q
bind_password_file = "ldap.secret"
base_dn = %q

[admin]
address = %q
token_file = "admin.token"
%s%s`, s.WebmailAddr, !opts.NoCache, imap1, mx1.POP3Addr, imap2, mx2.POP3Addr,
		tb.LDAP.URI, tb.LDAP.BindDN, tb.LDAP.PeopleDN, s.AdminAddr, backend, cache)
	if err := os.WriteFile(s.Config, []byte(conf), 0o600); err != nil {
		return fmt.Errorf("webmail: write switchboard config: %w", err)
	}
	return nil
}

// Stop ends the process (SIGTERM, then SIGKILL after a grace period).
func (s *Switchboard) Stop() error {
	return stopGroup(s.cmd, s.donec)
}

// Command runs "switchboard args… -config <this config>" (a control
// command through the admin API) and returns its output.
func (s *Switchboard) Command(ctx context.Context, args ...string) (string, error) {
	full := append([]string{args[0], "-config", s.Config}, args[1:]...)
	out, err := exec.CommandContext(ctx, s.binary, full...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("webmail: switchboard %s: %w: %s", args[0], err, out)
	}
	return string(out), nil
}

// Metrics fetches the admin listener's /metrics.
func (s *Switchboard) Metrics(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, adminRequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.AdminAddr+"/metrics", nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("webmail: switchboard metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("webmail: switchboard metrics: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("webmail: switchboard metrics: %s", resp.Status)
	}
	return string(body), nil
}

// Log returns the process's log so far.
func (s *Switchboard) Log() (string, error) {
	b, err := os.ReadFile(s.LogPath)
	if err != nil {
		return "", fmt.Errorf("webmail: switchboard log: %w", err)
	}
	return string(b), nil
}

// MetricValue returns the value of the sample named exactly series
// (name and labels, as in the exposition format) in a /metrics text, and
// whether it was there.
func MetricValue(metrics, series string) (float64, bool) {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` ([0-9.eE+-]+)$`)
	m := re.FindStringSubmatch(metrics)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	return v, err == nil
}

// CacheStates counts the cache= field of the session log lines in log:
// "hit", "miss", "off".
func CacheStates(log string) map[string]int {
	n := make(map[string]int)
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, "msg=session") {
			continue
		}
		if i := strings.Index(line, " cache="); i >= 0 {
			v := line[i+len(" cache="):]
			if j := strings.IndexByte(v, ' '); j >= 0 {
				v = v[:j]
			}
			n[v]++
		}
	}
	return n
}
