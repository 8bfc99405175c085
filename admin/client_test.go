package admin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"switchboard/cluster"
)

// startTestServer serves newTestServer on loopback and returns a Client
// for it with token.
func startTestServer(t *testing.T, serverToken, clientToken string) (*Client, *fakeControl) {
	t.Helper()
	s, ctl := newTestServer(t, serverToken, nil)
	addr, err := s.Start()
	if err != nil {
		t.Fatal(err)
	}
	s.SetReady()
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	c, err := NewClient(addr.String(), clientToken)
	if err != nil {
		t.Fatal(err)
	}
	return c, ctl
}

func TestClientControl(t *testing.T) {
	c, ctl := startTestServer(t, testToken, testToken)
	tests := []struct {
		name string
		send func() (*ControlResponse, error)
		call string
	}{
		{"invalidate", func() (*ControlResponse, error) { return c.Invalidate("Alice@Example.org", false) }, "Invalidate(alice@example.org,false)"},
		{"invalidate and kick", func() (*ControlResponse, error) { return c.Invalidate("alice@example.org", true) }, "Invalidate(alice@example.org,true)"},
		{"hold", func() (*ControlResponse, error) { return c.Hold("bob@example.org", 30*time.Minute) }, "Hold(bob@example.org,true,30m0s)"},
		{"hold, default ttl", func() (*ControlResponse, error) { return c.Hold("bob@example.org", 0) }, "Hold(bob@example.org,true,0s)"},
		{"release", func() (*ControlResponse, error) { return c.Release("bob@example.org") }, "Hold(bob@example.org,false,0s)"},
	}
	for _, tt := range tests {
		resp, err := tt.send()
		if err != nil || !resp.OK || resp.Warning != "" {
			t.Errorf("%s: %+v, %v", tt.name, resp, err)
		}
		if calls := ctl.take(); len(calls) != 1 || calls[0] != tt.call {
			t.Errorf("%s: calls %q, want %q", tt.name, calls, tt.call)
		}
	}

	ctl.err = fmt.Errorf("%w: n3: i/o timeout", cluster.ErrNotDelivered)
	resp, err := c.Invalidate("alice@example.org", true)
	if err != nil || !resp.OK || !strings.Contains(resp.Warning, "not delivered directly") {
		t.Errorf("not delivered: %+v, %v", resp, err)
	}
	ctl.err = cluster.ErrClosed
	_, err = c.Release("alice@example.org")
	var se *StatusError
	if !errors.As(err, &se) || se.Code != 500 || !strings.Contains(err.Error(), "500 Internal Server Error: cluster: shut down") {
		t.Errorf("failure: %v", err)
	}
	_, err = c.Hold("a b@example.org", 0)
	if !errors.As(err, &se) || se.Code != 400 || se.Msg != "user contains spaces or control characters" {
		t.Errorf("bad user: %v", err)
	}
	if calls := ctl.take(); !slices.Equal(calls, []string{"Invalidate(alice@example.org,true)", "Hold(alice@example.org,false,0s)"}) {
		t.Errorf("calls: %q", calls)
	}
}

func TestClientErrors(t *testing.T) {
	c, ctl := startTestServer(t, testToken, "another-token-0123456789")
	_, err := c.Hold("alice@example.org", 0)
	var se *StatusError
	if !errors.As(err, &se) || se.Code != 401 || !strings.Contains(err.Error(), "401 Unauthorized") || strings.Contains(err.Error(), "another-token") {
		t.Errorf("wrong token: %v", err)
	}
	if calls := ctl.take(); len(calls) != 0 {
		t.Errorf("calls with a wrong token: %q", calls)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c, err = NewClient(addr, "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Status()
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "at http://"+addr+": ") || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("not listening: %v", err)
	}

	if _, err := NewClient("no port", ""); err == nil {
		t.Error("NewClient accepted an address without a port")
	}
}

func TestClientAddress(t *testing.T) {
	tests := []struct{ addr, want string }{
		{"127.0.0.2:8025", "http://127.0.0.2:8025"},
		{":8025", "http://127.0.0.1:8025"},
		{"0.0.0.0:8025", "http://127.0.0.1:8025"},
		{"[::]:8025", "http://[::1]:8025"},
		{"[fd00::1]:8025", "http://[fd00::1]:8025"},
		{"admin.example.org:8025", "http://admin.example.org:8025"},
	}
	for _, tt := range tests {
		c, err := NewClient(tt.addr, "")
		if err != nil || c.URL() != tt.want {
			t.Errorf("NewClient(%q): %v, %v; want %s", tt.addr, c, err, tt.want)
		}
	}
}

func TestClientStatus(t *testing.T) {
	c, _ := startTestServer(t, "", "")
	st, err := c.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Node != "n1" || !st.Clustered || len(st.Members) != 3 {
		t.Errorf("status: %+v", st)
	}
	var b strings.Builder
	st.WriteText(&b)
	for _, want := range []string{
		"node n1: serving, in a cluster, 2 of 3 members alive; version v9.9.9",
		"sessions here: imap 3, pop3 1",
		"n1  10.8.0.1:7946  alive  this node",
		"backend  cluster  n1    n2",
		"mx2      down     down  down",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, b.String())
		}
	}
}
