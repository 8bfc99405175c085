package admin

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

const holdBody = `{"user":"a@example.org"}`

// Setters for the cases of TestAccess.
func withHeader(k, v string) func(*http.Request) *http.Request {
	return func(r *http.Request) *http.Request { r.Header.Set(k, v); return r }
}

func withHost(h string) func(*http.Request) *http.Request {
	return func(r *http.Request) *http.Request { r.Host = h; return r }
}

func fromPeer(addr string) func(*http.Request) *http.Request {
	return func(r *http.Request) *http.Request { r.RemoteAddr = addr; return r }
}

func onLocal(addr string) func(*http.Request) *http.Request {
	return func(r *http.Request) *http.Request {
		var la net.Addr
		if addr != "" {
			la = net.TCPAddrFromAddrPort(netip.MustParseAddrPort(addr))
		}
		return r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, la))
	}
}

// TestAccess runs each rule of the listener on requests that differ from
// an admitted one in one thing.
func TestAccess(t *testing.T) {
	servers := map[string]Access{
		"full":       {ControlToken: testToken, ReadToken: readToken, HostNames: []string{"admin.example.org"}},
		"control":    {ControlToken: testToken},
		"none":       {},
		"pprof":      {ControlToken: testToken, Pprof: true},
		"pprof read": {ControlToken: testToken, ReadToken: readToken, Pprof: true},
	}
	tests := []struct {
		name, server, method, path, token string
		change                            func(*http.Request) *http.Request
		code                              int
		calls                             int
	}{
		// Control needs the control token, on loopback too.
		{"hold, no token, loopback", "full", "POST", "/v1/hold", "", nil, 401, 0},
		{"hold, no token, no read token", "control", "POST", "/v1/hold", "", nil, 401, 0},
		{"hold, wrong token", "full", "POST", "/v1/hold", testToken + "x", nil, 401, 0},
		{"hold, token prefix", "full", "POST", "/v1/hold", testToken[:10], nil, 401, 0},
		{"hold, read token", "full", "POST", "/v1/hold", readToken, nil, 403, 0},
		{"kick, read token", "full", "POST", "/v1/invalidate", readToken, nil, 403, 0},
		{"release, read token", "full", "POST", "/v1/release", readToken, nil, 403, 0},
		{"hold, no control token set", "none", "POST", "/v1/hold", "", nil, 403, 0},
		{"hold, no control token set, some token", "none", "POST", "/v1/hold", testToken, nil, 403, 0},
		{"hold", "full", "POST", "/v1/hold", testToken, nil, 200, 1},
		{"kick", "full", "POST", "/v1/invalidate", testToken, nil, 200, 1},
		{"release", "control", "POST", "/v1/release", testToken, nil, 200, 1},
		// State changes only by POST, with a JSON body.
		{"GET hold", "full", "GET", "/v1/hold", testToken, nil, 405, 0},
		{"GET invalidate", "full", "GET", "/v1/invalidate?user=a@example.org&kick=true", testToken, nil, 405, 0},
		{"PUT release", "full", "PUT", "/v1/release", testToken, nil, 405, 0},
		{"form body", "full", "POST", "/v1/hold", testToken, withHeader("Content-Type", "application/x-www-form-urlencoded"), 415, 0},
		{"text body", "full", "POST", "/v1/hold", testToken, withHeader("Content-Type", "text/plain"), 415, 0},
		{"json with charset", "full", "POST", "/v1/hold", testToken, withHeader("Content-Type", "application/json; charset=utf-8"), 200, 1},
		// Host: the listener's own address or a configured name.
		{"rebound name", "full", "POST", "/v1/hold", testToken, withHost("evil.example.com:8025"), 421, 0},
		{"rebound name, read", "full", "GET", "/status", readToken, withHost("evil.example.com:8025"), 421, 0},
		{"rebound name, open read", "control", "GET", "/metrics", "", withHost("evil.example.com:8025"), 421, 0},
		{"other port", "full", "POST", "/v1/hold", testToken, withHost("127.0.0.1:8026"), 421, 0},
		{"no port", "full", "POST", "/v1/hold", testToken, withHost("127.0.0.1"), 421, 0},
		{"empty Host", "full", "POST", "/v1/hold", testToken, withHost(""), 421, 0},
		{"other loopback address", "full", "POST", "/v1/hold", testToken, withHost("127.0.0.2:8025"), 421, 0},
		{"unspecified address", "full", "POST", "/v1/hold", testToken, withHost("0.0.0.0:8025"), 421, 0},
		{"localhost", "full", "POST", "/v1/hold", testToken, withHost("LocalHost:8025"), 200, 1},
		{"configured name", "full", "POST", "/v1/hold", testToken, withHost("Admin.Example.org:8025"), 200, 1},
		{"configured name, other port", "full", "POST", "/v1/hold", testToken, withHost("admin.example.org:80"), 421, 0},
		{"localhost off loopback", "full", "GET", "/status", readToken, func(r *http.Request) *http.Request {
			return onLocal("192.0.2.7:8025")(withHost("localhost:8025")(r))
		}, 421, 0},
		{"wildcard listener, local address", "full", "GET", "/status", readToken, func(r *http.Request) *http.Request {
			return onLocal("192.0.2.7:8025")(withHost("192.0.2.7:8025")(r))
		}, 200, 0},
		{"IPv6 loopback", "full", "POST", "/v1/hold", testToken, func(r *http.Request) *http.Request {
			return onLocal("[::1]:8025")(withHost("[::1]:8025")(r))
		}, 200, 1},
		{"no local address", "full", "POST", "/v1/hold", testToken, onLocal(""), 421, 0},
		// Origin, when present, is the listener itself.
		{"foreign Origin", "full", "POST", "/v1/hold", testToken, withHeader("Origin", "http://evil.example.com"), 403, 0},
		{"foreign Origin, same host other scheme", "full", "POST", "/v1/hold", testToken, withHeader("Origin", "file://127.0.0.1:8025"), 403, 0},
		{"null Origin", "full", "POST", "/v1/hold", testToken, withHeader("Origin", "null"), 403, 0},
		{"foreign Origin, read", "control", "GET", "/status", "", withHeader("Origin", "https://mail.example.org"), 403, 0},
		{"cross-site fetch", "full", "POST", "/v1/hold", testToken, withHeader("Sec-Fetch-Site", "cross-site"), 403, 0},
		{"same-site fetch", "full", "POST", "/v1/hold", testToken, withHeader("Sec-Fetch-Site", "same-site"), 403, 0},
		{"same Origin", "full", "POST", "/v1/hold", testToken, withHeader("Origin", "http://127.0.0.1:8025"), 200, 1},
		{"two Origins", "full", "POST", "/v1/hold", testToken, func(r *http.Request) *http.Request {
			r.Header.Add("Origin", "http://127.0.0.1:8025")
			r.Header.Add("Origin", "http://evil.example.com")
			return r
		}, 403, 0},
		// Reads: the read token or the control token; without a read
		// token, loopback peers need none.
		{"metrics, no token", "full", "GET", "/metrics", "", nil, 401, 0},
		{"status, no token", "full", "GET", "/status", "", nil, 401, 0},
		{"status, read token", "full", "GET", "/status", readToken, nil, 200, 0},
		{"metrics, read token", "full", "GET", "/metrics", readToken, nil, 200, 0},
		{"status, control token", "full", "GET", "/status", testToken, nil, 200, 0},
		{"status, wrong token", "full", "GET", "/status", "nope-nope-nope-nope", nil, 401, 0},
		{"status, open on loopback", "control", "GET", "/status", "", nil, 200, 0},
		{"metrics, open on loopback", "none", "GET", "/metrics", "", nil, 200, 0},
		{"status, open, IPv4-mapped loopback", "control", "GET", "/status", "", fromPeer("[::ffff:127.0.0.1]:4000"), 200, 0},
		{"status, open, wrong token", "control", "GET", "/status", "nope-nope-nope-nope", nil, 401, 0},
		{"status, remote peer", "control", "GET", "/status", "", fromPeer("192.0.2.1:4000"), 401, 0},
		{"status, remote peer, control token", "control", "GET", "/status", testToken, fromPeer("192.0.2.1:4000"), 200, 0},
		{"metrics, remote peer, no token at all", "none", "GET", "/metrics", "", fromPeer("192.0.2.1:4000"), 401, 0},
		// healthz is for load balancers: no token, any Host.
		{"healthz, any Host", "full", "GET", "/healthz", "", withHost("evil.example.com"), 200, 0},
		// The profiler: only when asked for, only on loopback.
		{"pprof off", "full", "GET", "/debug/pprof/", testToken, nil, 404, 0},
		{"pprof off, heap", "control", "GET", "/debug/pprof/heap", "", nil, 404, 0},
		{"pprof", "pprof", "GET", "/debug/pprof/", "", nil, 200, 0},
		{"pprof heap", "pprof", "GET", "/debug/pprof/heap?debug=1", "", nil, 200, 0},
		{"pprof, remote peer", "pprof", "GET", "/debug/pprof/", testToken, fromPeer("192.0.2.1:4000"), 403, 0},
		{"pprof cmdline, remote peer", "pprof", "GET", "/debug/pprof/cmdline", testToken, fromPeer("[2001:db8::1]:4000"), 403, 0},
		{"pprof, read token needed", "pprof read", "GET", "/debug/pprof/", "", nil, 401, 0},
		{"pprof, read token", "pprof read", "GET", "/debug/pprof/cmdline", readToken, nil, 200, 0},
		{"pprof, rebound name", "pprof", "GET", "/debug/pprof/", "", withHost("evil.example.com:8025"), 421, 0},
		{"pprof POST", "pprof", "POST", "/debug/pprof/symbol", "", nil, 405, 0},
	}
	var logs bytes.Buffer
	handlers := map[string]http.Handler{}
	controls := map[string]*fakeControl{}
	for name, acc := range servers {
		s, ctl := newTestServer(t, acc, &logs)
		s.SetReady()
		handlers[name], controls[name] = s.Handler(), ctl
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := ""
			if tt.method != "GET" {
				body = holdBody
			}
			req := newRequest(tt.method, tt.path, tt.token, body)
			if tt.change != nil {
				req = tt.change(req)
			}
			rec := httptest.NewRecorder()
			handlers[tt.server].ServeHTTP(rec, req)
			if rec.Code != tt.code {
				t.Errorf("%s %s = %d, want %d: %s", tt.method, tt.path, rec.Code, tt.code, rec.Body)
			}
			if rec.Code == 401 && rec.Header().Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
			if calls := controls[tt.server].take(); len(calls) != tt.calls {
				t.Errorf("control calls %q, want %d", calls, tt.calls)
			}
		})
	}
	for _, tok := range []string{testToken[:12], readToken[:12]} {
		if strings.Contains(logs.String(), tok) {
			t.Errorf("a token was logged:\n%s", logs.String())
		}
	}
	if !strings.Contains(logs.String(), "admin request refused") {
		t.Errorf("refusals not logged:\n%s", logs.String())
	}
}

// TestAccessOnListener sends what a browser page on the node would, to a
// real listener on loopback: nothing changes state.
func TestAccessOnListener(t *testing.T) {
	s, ctl := newTestServer(t, Access{ControlToken: testToken, Pprof: true}, nil)
	addr, err := s.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	base := "http://" + addr.String()
	send := func(method, url, host, token, ctype, origin string) int {
		t.Helper()
		req, err := http.NewRequest(method, url, strings.NewReader(holdBody))
		if err != nil {
			t.Fatal(err)
		}
		if host != "" {
			req.Host = host
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tt := range []struct {
		name                             string
		method, path, host, token, ctype string
		origin                           string
		want                             int
	}{
		{"form post from a page", "POST", "/v1/hold", "", "", "application/x-www-form-urlencoded", "http://webmail.example.org", 403},
		{"no token on loopback", "POST", "/v1/hold", "", "", "application/json", "", 401},
		{"rebound name with token", "POST", "/v1/hold", "evil.example.com:" + portOf(addr), testToken, "application/json", "", 421},
		{"GET with token", "GET", "/v1/hold", "", testToken, "", "", 405},
		{"status on loopback", "GET", "/status", "", "", "", "", 200},
		{"pprof on loopback", "GET", "/debug/pprof/", "", "", "", "", 200},
		{"hold", "POST", "/v1/hold", "", testToken, "application/json", "", 200},
	} {
		if got := send(tt.method, base+tt.path, tt.host, tt.token, tt.ctype, tt.origin); got != tt.want {
			t.Errorf("%s: %d, want %d", tt.name, got, tt.want)
		}
	}
	if calls := ctl.take(); len(calls) != 1 {
		t.Errorf("control calls %q, want the one with the token", calls)
	}
}

func portOf(a net.Addr) string {
	_, p, _ := net.SplitHostPort(a.String())
	return p
}
