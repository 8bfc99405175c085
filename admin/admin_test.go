package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"switchboard/cluster"
	"switchboard/gate"
	"switchboard/ldapmap"
	"switchboard/router"
)

const testToken = "test-token-0123456789"

type fakeRouter struct{ sessions []router.SessionInfo }

func (f *fakeRouter) Sessions() []router.SessionInfo { return f.sessions }
func (f *fakeRouter) Stats() router.StatsSnapshot {
	return router.StatsSnapshot{Accepted: 10, LoginOK: 7, LoginFailed: 2, LoginRefused: 1, ActiveIMAP: 3, Kicked: 4}
}

type fakeCluster struct{}

func (fakeCluster) Name() string { return "n1" }
func (fakeCluster) Members() []cluster.Member {
	return []cluster.Member{
		{Name: "n1", Addr: netip.MustParseAddrPort("10.8.0.1:7946"), State: cluster.StateAlive, Local: true},
		{Name: "n2", Addr: netip.MustParseAddrPort("10.8.0.2:7946"), State: cluster.StateAlive},
		{Name: "n3", Addr: netip.MustParseAddrPort("10.8.0.3:7946"), State: cluster.StateDead},
	}
}
func (fakeCluster) Health() map[string]map[string]bool {
	return map[string]map[string]bool{"n1": {"mx1": true, "mx2": false}, "n2": {"mx1": true, "mx2": false}}
}
func (fakeCluster) BackendDown(b string) bool { return b == "mx2" }
func (fakeCluster) Stats() cluster.Stats {
	return cluster.Stats{Messages: map[string]cluster.MessageStats{"invalidate": {SentDirect: 2, Received: 1}}, AliveMembers: 2}
}

// fakeControl records calls and fails with err.
type fakeControl struct {
	mu    sync.Mutex
	calls []string
	err   error
}

func (f *fakeControl) Invalidate(user string, kick bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf("Invalidate(%s,%v)", user, kick))
	return f.err
}

func (f *fakeControl) Hold(user string, held bool, ttl time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf("Hold(%s,%v,%v)", user, held, ttl))
	return f.err
}

func (f *fakeControl) take() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

// testAddr is the listener address requests in unit tests arrive on.
const testAddr = "127.0.0.1:8025"

// Tokens of the tests: control, read-only.
const readToken = "read-token-abcdefghij"

func newTestServer(t *testing.T, acc Access, logs io.Writer) (*Server, *fakeControl) {
	t.Helper()
	if logs == nil {
		logs = io.Discard
	}
	ctl := &fakeControl{}
	s := New(&Options{
		Addr:    "127.0.0.1:0",
		Access:  acc,
		Version: "v9.9.9",
		Router: &fakeRouter{sessions: []router.SessionInfo{
			{Protocol: "imap", Backend: "10.8.1.1:143"},
			{Protocol: "imap", Backend: "10.8.1.1:143"},
			{Protocol: "pop3", Backend: "10.8.1.2:110"},
			{Protocol: "imap", Backend: "10.9.9.9:143"},
		}},
		Control:     ctl,
		Cluster:     fakeCluster{},
		Backends:    []string{"mx1", "mx2"},
		BackendName: BackendNamer(map[string][]string{"mx1": {"10.8.1.1:143", "10.8.1.1:110"}, "mx2": {"10.8.1.2:143", "10.8.1.2:110"}}),
		MapCache:    func() ldapmap.CacheStats { return ldapmap.CacheStats{Hits: 5, Misses: 3, StaleServed: 1} },
		Gate:        func() gate.Stats { return gate.Stats{Held: 1} },
		Logger:      slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	return s, ctl
}

// newRequest returns a request as the listener on testAddr sees it from
// a loopback peer, JSON for a POST, with token if not empty.
func newRequest(method, path, token, body string) *http.Request {
	req := httptest.NewRequest(method, "http://"+testAddr+path, strings.NewReader(body))
	req.RemoteAddr = "127.0.0.1:40000"
	local := net.TCPAddrFromAddrPort(netip.MustParseAddrPort(testAddr))
	req = req.WithContext(context.WithValue(req.Context(), http.LocalAddrContextKey, local))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/json")
	}
	return req
}

func do(t *testing.T, h http.Handler, method, path, token, body string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, newRequest(method, path, token, body))
	return rec
}

func TestHealthz(t *testing.T) {
	s, _ := newTestServer(t, Access{ControlToken: testToken}, nil)
	h := s.Handler()
	for _, step := range []struct {
		do   func()
		code int
		body string
	}{
		{func() {}, 503, "starting\n"},
		{s.SetReady, 200, "ok\n"},
		{s.SetDraining, 503, "draining\n"},
	} {
		step.do()
		rec := do(t, h, "GET", "/healthz", "", "") // no token needed
		if rec.Code != step.code || rec.Body.String() != step.body {
			t.Errorf("healthz = %d %q, want %d %q", rec.Code, rec.Body.String(), step.code, step.body)
		}
	}
}

func TestControl(t *testing.T) {
	s, ctl := newTestServer(t, Access{ControlToken: testToken}, nil)
	h := s.Handler()
	tests := []struct {
		name, method, path, body string
		err                      error
		code                     int
		calls                    []string
		inBody                   string
	}{
		{"invalidate with kick", "POST", "/v1/invalidate", `{"user":"Alice@Example.org","kick":true}`, nil, 200,
			[]string{"Invalidate(alice@example.org,true)"}, `"ok": true`},
		{"invalidate", "POST", "/v1/invalidate", `{"user":"bob@example.org"}`, nil, 200,
			[]string{"Invalidate(bob@example.org,false)"}, `"user": "bob@example.org"`},
		{"hold with ttl", "POST", "/v1/hold", `{"user":"bob@example.org","ttl":"5m"}`, nil, 200,
			[]string{"Hold(bob@example.org,true,5m0s)"}, `"ok": true`},
		{"hold default ttl", "POST", "/v1/hold", `{"user":"bob@example.org"}`, nil, 200,
			[]string{"Hold(bob@example.org,true,0s)"}, `"ok": true`},
		{"release", "POST", "/v1/release", `{"user":"bob@example.org"}`, nil, 200,
			[]string{"Hold(bob@example.org,false,0s)"}, `"ok": true`},
		{"not delivered everywhere", "POST", "/v1/invalidate", `{"user":"bob@example.org","kick":true}`,
			fmt.Errorf("%w: n3: timeout", cluster.ErrNotDelivered), 200,
			[]string{"Invalidate(bob@example.org,true)"}, `"warning": "cluster: not delivered`},
		{"cluster shut down", "POST", "/v1/release", `{"user":"bob@example.org"}`, cluster.ErrClosed, 500,
			[]string{"Hold(bob@example.org,false,0s)"}, `"error": "cluster: shut down"`},
		{"bad ttl", "POST", "/v1/hold", `{"user":"bob@example.org","ttl":"10"}`, nil, 400, nil, `not a duration`},
		{"ttl too long", "POST", "/v1/hold", `{"user":"bob@example.org","ttl":"25h"}`, nil, 400, nil, `at most 24h`},
		{"no user", "POST", "/v1/invalidate", `{"kick":true}`, nil, 400, nil, `user is required`},
		{"user with space", "POST", "/v1/invalidate", `{"user":"a b"}`, nil, 400, nil, `spaces`},
		{"user too long", "POST", "/v1/invalidate", `{"user":"` + strings.Repeat("a", 256) + `"}`, nil, 400, nil, `longer than 255`},
		{"unknown field", "POST", "/v1/invalidate", `{"user":"a@example.org","kik":true}`, nil, 400, nil, `unknown field`},
		{"not JSON", "POST", "/v1/invalidate", `user=a`, nil, 400, nil, `JSON object`},
		{"too big", "POST", "/v1/invalidate", `{"user":"a@example.org","ttl":"` + strings.Repeat("1", 5000) + `"}`, nil, 400, nil, `too large`},
		{"GET", "GET", "/v1/invalidate", ``, nil, 405, nil, ``},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctl.err = tt.err
			rec := do(t, h, tt.method, tt.path, testToken, tt.body)
			if rec.Code != tt.code {
				t.Errorf("code = %d, want %d: %s", rec.Code, tt.code, rec.Body)
			}
			if got := ctl.take(); fmt.Sprint(got) != fmt.Sprint(tt.calls) {
				t.Errorf("calls = %q, want %q", got, tt.calls)
			}
			if !strings.Contains(rec.Body.String(), tt.inBody) {
				t.Errorf("body %s lacks %q", rec.Body, tt.inBody)
			}
		})
	}
}

func TestStatus(t *testing.T) {
	s, _ := newTestServer(t, Access{ControlToken: testToken}, nil)
	rec := do(t, s.Handler(), "GET", "/status", "", "")
	var st Status
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
		t.Fatalf("%v: %s", err, rec.Body)
	}
	if st.Node != "n1" || !st.Clustered || st.Version != "v9.9.9" || len(st.Members) != 3 ||
		st.Members[2].State != "dead" || !st.Members[0].Local || st.Members[1].Addr != "10.8.0.2:7946" {
		t.Errorf("status = %+v", st)
	}
	if st.Backends["n2"]["mx2"] != "down" || st.Backends["n1"]["mx1"] != "up" || st.Cluster["mx2"] != "down" || st.Cluster["mx1"] != "up" {
		t.Errorf("backends = %v, cluster = %v", st.Backends, st.Cluster)
	}
	if st.Sessions["imap"] != 3 || st.Sessions["pop3"] != 1 {
		t.Errorf("sessions = %v", st.Sessions)
	}

	// A node of its own.
	alone := New(&Options{Addr: "127.0.0.1:0", Router: &fakeRouter{}, Control: &fakeControl{}, Logger: slog.New(slog.DiscardHandler)})
	st2 := alone.Status()
	if st2.Clustered || st2.Node != "local" || len(st2.Members) != 1 || st2.Members[0].State != "alive" || len(st2.Backends) != 0 {
		t.Errorf("standalone status = %+v", st2)
	}
}

func TestMetrics(t *testing.T) {
	s, _ := newTestServer(t, Access{ControlToken: testToken}, nil)
	s.SetDraining()
	// The pedantic registry checks that Collect matches Describe.
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(&collector{s: s})
	if _, err := reg.Gather(); err != nil {
		t.Fatalf("pedantic gather: %v", err)
	}

	rec := do(t, s.Handler(), "GET", "/metrics", "", "")
	if rec.Code != 200 {
		t.Fatalf("metrics = %d", rec.Code)
	}
	body := rec.Body.String()
	for _, want := range []string{
		`switchboard_build_info{version="v9.9.9"} 1`,
		`switchboard_draining 1`,
		`switchboard_sessions{backend="mx1",protocol="imap"} 2`,
		`switchboard_sessions{backend="mx2",protocol="pop3"} 1`,
		`switchboard_sessions{backend="other",protocol="imap"} 1`,
		`switchboard_sessions{backend="mx2",protocol="imap"} 0`,
		`switchboard_router_connections{protocol="imap"} 3`,
		`switchboard_router_logins_total{outcome="ok"} 7`,
		`switchboard_router_logins_total{outcome="auth_failed"} 2`,
		`switchboard_router_logins_total{outcome="refused"} 1`,
		`switchboard_router_kicked_total 4`,
		`switchboard_ldap_cache_hits_total{kind="positive"} 5`,
		`switchboard_ldap_cache_misses_total 3`,
		`switchboard_ldap_cache_stale_total 1`,
		`switchboard_backend_up{backend="mx1",view="node"} 1`,
		`switchboard_backend_up{backend="mx2",view="node"} 0`,
		`switchboard_backend_up{backend="mx2",view="cluster"} 0`,
		`switchboard_cluster_members{state="alive"} 2`,
		`switchboard_cluster_members{state="dead"} 1`,
		`switchboard_cluster_members{state="left"} 0`,
		`switchboard_cluster_messages_total{event="sent_direct",type="invalidate"} 2`,
		`switchboard_gate_refusals_total{reason="held"} 1`,
		`go_goroutines `,
	} {
		if !strings.Contains(body, want+"\n") && !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", body)
	}
}

// TestStartShutdown serves on a real loopback port and shuts down.
func TestStartShutdown(t *testing.T) {
	s, _ := newTestServer(t, Access{ControlToken: testToken}, nil)
	addr, err := s.Start()
	if err != nil {
		t.Fatal(err)
	}
	s.SetReady()
	resp, err := http.Get("http://" + addr.String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("healthz = %d", resp.StatusCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get("http://" + addr.String() + "/healthz"); err == nil {
		t.Error("still serving after Shutdown")
	}
	if err := New(&Options{Addr: addr.String() + "x", Router: &fakeRouter{}, Control: &fakeControl{}}).Shutdown(ctx); err != nil {
		t.Errorf("Shutdown of a server never started: %v", err)
	}
	if _, err := New(&Options{Addr: "127.0.0.1:99999", Router: &fakeRouter{}, Control: &fakeControl{}}).Start(); err == nil {
		t.Error("bad address accepted")
	}
}

func TestBackendNamer(t *testing.T) {
	n := BackendNamer(map[string][]string{"mx1": {"10.0.0.1:143", "[::ffff:10.0.0.2]:110"}, "a": {"10.0.0.1:143"}, "mx3": {"MX3.example.org:143"}})
	for addr, want := range map[string]string{
		"10.0.0.1:143":        "a", // shared: first name in order
		"10.0.0.2:110":        "mx1",
		"mx3.example.org:143": "mx3",
		"10.0.0.9:143":        "",
	} {
		if got := n(addr); got != want {
			t.Errorf("name(%s) = %q, want %q", addr, got, want)
		}
	}
}

// TestDrain: POST /v1/drain, with the control token, turns /healthz to
// 503 and /status's draining to true, and is idempotent; without the
// token, or by GET, it does nothing.
func TestDrain(t *testing.T) {
	s, _ := newTestServer(t, Access{ControlToken: testToken}, nil)
	s.SetReady()
	h := s.Handler()
	if rec := do(t, h, "POST", "/v1/drain", "", ""); rec.Code != http.StatusUnauthorized {
		t.Errorf("drain without the token = %d, want 401", rec.Code)
	}
	if rec := do(t, h, "GET", "/healthz", "", ""); rec.Code != http.StatusOK {
		t.Errorf("healthz after a refused drain = %d", rec.Code)
	}
	for i := range 2 {
		if rec := do(t, h, "POST", "/v1/drain", testToken, ""); rec.Code != http.StatusOK {
			t.Errorf("drain #%d = %d %s", i+1, rec.Code, rec.Body)
		}
		if rec := do(t, h, "GET", "/healthz", "", ""); rec.Code != http.StatusServiceUnavailable {
			t.Errorf("healthz after drain #%d = %d", i+1, rec.Code)
		}
		if !s.Status().Draining {
			t.Errorf("status.draining after drain #%d = false", i+1)
		}
	}
	if rec := do(t, h, "GET", "/v1/drain", testToken, ""); rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET /v1/drain = %d, want 405", rec.Code)
	}
}
