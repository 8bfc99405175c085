package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"switchboard/admin"
	"switchboard/cluster"
	"switchboard/internal/secret"
	"switchboard/router"
)

const cliToken = "cli-test-token-0123456789"

// recControl records control calls and answers with err.
type recControl struct {
	mu    sync.Mutex
	calls []string
	err   error
}

func (r *recControl) Invalidate(user string, kick bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, fmt.Sprintf("invalidate %s %v", user, kick))
	return r.err
}

func (r *recControl) Hold(user string, held bool, ttl time.Duration) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, fmt.Sprintf("hold %s %v %v", user, held, ttl))
	return r.err
}

func (r *recControl) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.calls
	r.calls = nil
	return c
}

type noSessions struct{}

func (noSessions) Sessions() []router.SessionInfo {
	return []router.SessionInfo{{Protocol: "imap"}, {Protocol: "imap"}}
}
func (noSessions) Stats() router.StatsSnapshot { return router.StatsSnapshot{} }

type threeNodes struct{}

func (threeNodes) Name() string { return "n1" }
func (threeNodes) Members() []cluster.Member {
	return []cluster.Member{
		{Name: "n1", Addr: netip.MustParseAddrPort("127.0.0.1:7946"), State: cluster.StateAlive, Local: true},
		{Name: "n2", Addr: netip.MustParseAddrPort("127.0.0.2:7946"), State: cluster.StateAlive},
		{Name: "n3", Addr: netip.MustParseAddrPort("127.0.0.3:7946"), State: cluster.StateDead, Since: time.Now()},
	}
}
func (threeNodes) Health() map[string]map[string]bool {
	return map[string]map[string]bool{"n1": {"mx1": true, "mx2": false}, "n2": {"mx1": true}}
}
func (threeNodes) BackendDown(b string) bool { return b == "mx2" }
func (threeNodes) Stats() cluster.Stats      { return cluster.Stats{} }

// startAdmin serves an admin listener with rc on loopback and writes a
// configuration pointing at it; it returns the configuration's path.
func startAdmin(t *testing.T, rc *recControl, token string, cl admin.Cluster) string {
	t.Helper()
	opts := &admin.Options{Addr: "127.0.0.1:0", Access: admin.Access{ControlToken: secret.String(token)}, Router: noSessions{}, Control: rc, Version: "test",
		Backends: []string{"mx1", "mx2"}, Logger: slog.New(slog.DiscardHandler)}
	if cl != nil {
		opts.Cluster = cl
	}
	a := admin.New(opts)
	addr, err := a.Start()
	if err != nil {
		t.Fatal(err)
	}
	a.SetReady()
	t.Cleanup(func() { a.Shutdown(context.Background()) })
	conf := fileConf + fmt.Sprintf("\n[admin]\naddress = %q\n", addr.String())
	path := setup(t, conf)
	if token != "" {
		mustWrite(t, filepath.Join(filepath.Dir(path), "admin.token"), token+"\n")
		conf += "token_file = \"admin.token\"\n"
		mustWrite(t, path, conf)
	}
	return path
}

func TestControlCommands(t *testing.T) {
	rc := &recControl{}
	path := startAdmin(t, rc, cliToken, nil)
	tests := []struct {
		args     []string
		code     int
		call     string
		out, err string
	}{
		{[]string{"invalidate", "-config", path, "Alice@Example.org"}, 0, "invalidate alice@example.org false", "alice@example.org: cached route dropped on every node\n", ""},
		{[]string{"invalidate", "alice@example.org", "-kick", "-config", path}, 0, "invalidate alice@example.org true", "sessions closed", ""},
		{[]string{"hold", "-config", path, "-ttl", "30m", "bob@example.org"}, 0, "hold bob@example.org true 30m0s", "on hold for 30m0s", ""},
		{[]string{"hold", "-config", path, "bob@example.org"}, 0, "hold bob@example.org true 10m0s", "on hold for 10m0s", ""},
		{[]string{"release", "-config", path, "bob@example.org"}, 0, "hold bob@example.org false 0s", "bob@example.org: released\n", ""},
		{[]string{"hold", "-config", path, "-ttl", "48h", "bob@example.org"}, 1, "", "", "-ttl must be positive and at most 24h"},
		{[]string{"invalidate", "-config", path}, 1, "", "", "missing argument"},
		{[]string{"invalidate", "-config", path, "a b@example.org"}, 1, "", "", "user contains spaces"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args[:1], " "), func(t *testing.T) {
			code, out, errOut := runCmd(tt.args...)
			if code != tt.code || !strings.Contains(out, tt.out) || !strings.Contains(errOut, tt.err) {
				t.Errorf("%q = %d, stdout %q, stderr %q; want %d, %q, %q", tt.args, code, out, errOut, tt.code, tt.out, tt.err)
			}
			calls := rc.take()
			if (tt.call == "" && len(calls) != 0) || (tt.call != "" && (len(calls) != 1 || calls[0] != tt.call)) {
				t.Errorf("calls = %q, want %q", calls, tt.call)
			}
		})
	}

	// Carried out, not confirmed everywhere: exit 3 with a warning.
	rc.err = fmt.Errorf("%w: n3: i/o timeout", cluster.ErrNotDelivered)
	code, out, errOut := runCmd("invalidate", "-kick", "-config", path, "alice@example.org")
	if code != exitNotConfirmed || !strings.Contains(out, "alice@example.org") || !strings.Contains(errOut, "warning: cluster: not delivered directly to every member") {
		t.Errorf("not delivered = %d, %q, %q", code, out, errOut)
	}
	rc.err = cluster.ErrClosed
	code, _, errOut = runCmd("release", "-config", path, "alice@example.org")
	if code != 1 || !strings.Contains(errOut, "500 Internal Server Error: cluster: shut down") {
		t.Errorf("failure = %d, %q", code, errOut)
	}
	rc.take()
}

func TestControlErrors(t *testing.T) {
	// No [admin] table.
	path := setup(t, fileConf)
	code, _, errOut := runCmd("status", "-config", path)
	if code != 1 || !strings.Contains(errOut, "no [admin] table") {
		t.Errorf("no admin table = %d, %q", code, errOut)
	}

	// Nothing listening.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	path = setup(t, fileConf+fmt.Sprintf("\n[admin]\naddress = %q\n", addr))
	code, _, errOut = runCmd("status", "-config", path)
	if code != 1 || !strings.Contains(errOut, "cannot reach the node's admin listener at http://"+addr) || !strings.Contains(errOut, "connection refused") {
		t.Errorf("not listening = %d, %q", code, errOut)
	}

	// Wrong token.
	rc := &recControl{}
	path = startAdmin(t, rc, cliToken, nil)
	mustWrite(t, filepath.Join(filepath.Dir(path), "admin.token"), "another-token-0123456789\n")
	code, _, errOut = runCmd("hold", "-config", path, "alice@example.org")
	if code != 1 || !strings.Contains(errOut, "401 Unauthorized") || !strings.Contains(errOut, "admin.token_file") || strings.Contains(errOut, "another-token") {
		t.Errorf("wrong token = %d, %q", code, errOut)
	}
	if calls := rc.take(); len(calls) != 0 {
		t.Errorf("calls with a wrong token: %q", calls)
	}

	// No control token in the configuration: refused before sending.
	path = startAdmin(t, rc, "", nil)
	code, _, errOut = runCmd("release", "-config", path, "alice@example.org")
	if code != 1 || !strings.Contains(errOut, "admin.token_file is not set") {
		t.Errorf("no control token = %d, %q", code, errOut)
	}
	if calls := rc.take(); len(calls) != 0 {
		t.Errorf("calls without a control token: %q", calls)
	}
}

func TestStatusCommand(t *testing.T) {
	path := startAdmin(t, &recControl{}, "", threeNodes{})
	code, out, errOut := runCmd("status", "-config", path)
	if code != 0 {
		t.Fatalf("status = %d, %q", code, errOut)
	}
	for _, want := range []string{
		"node n1: serving, in a cluster, 2 of 3 members alive; version test",
		"sessions here: imap 2, pop3 0",
		"n1  127.0.0.1:7946  alive  this node",
		"n3  127.0.0.3:7946  dead   since ",
		"backend  cluster  n1    n2",
		"mx1      up       up    up",
		"mx2      down     down  -",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = runCmd("status", "-json", "-config", path)
	if code != 0 || !strings.Contains(out, `"clustered": true`) || !strings.Contains(out, `"mx2": "down"`) {
		t.Errorf("status -json = %d:\n%s", code, out)
	}

	path = startAdmin(t, &recControl{}, "", nil)
	code, out, _ = runCmd("status", "-config", path)
	if code != 0 || !strings.Contains(out, "on its own (no [cluster])") || strings.Contains(out, "members:") {
		t.Errorf("standalone status = %d:\n%s", code, out)
	}
}
