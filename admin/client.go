package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

const (
	// clientTimeout bounds one request of a Client; a node waits at most
	// about a second for the cluster.
	clientTimeout = 10 * time.Second
	// maxResponseBytes bounds what a Client reads of an answer.
	maxResponseBytes = 1 << 20
)

// Client talks to a node's admin listener, as the switchboard command
// does. Its methods are safe for concurrent use.
type Client struct {
	base  string // "http://host:port"
	token string
	hc    *http.Client
}

// StatusError is a Client's error for an answer other than 200.
type StatusError struct {
	URL    string // base and path
	Code   int    // HTTP status code
	Status string // "401 Unauthorized"
	// Msg is the answer's "error" field, or its body.
	Msg string
}

func (e *StatusError) Error() string { return fmt.Sprintf("%s: %s: %s", e.URL, e.Status, e.Msg) }

// ErrUnreachable wraps a Client's error when the listener cannot be
// reached at all.
var ErrUnreachable = errors.New("cannot reach the node's admin listener")

// NewClient returns a Client for the listener at addr, a "host:port" as in
// Options.Addr: a listener on every address (no host, 0.0.0.0 or ::) is
// reached on loopback. token is the bearer token, empty if none.
func NewClient(addr, token string) (*Client, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("admin address: %w", err)
	}
	if a, err := netip.ParseAddr(host); host == "" || (err == nil && a.IsUnspecified()) {
		host = "127.0.0.1"
		if err == nil && a.Is6() {
			host = "::1"
		}
	}
	return &Client{
		base:  "http://" + net.JoinHostPort(host, port),
		token: token,
		hc:    &http.Client{Timeout: clientTimeout},
	}, nil
}

// URL returns the listener's base URL, "http://host:port".
func (c *Client) URL() string { return c.base }

// Invalidate asks for POST /v1/invalidate. A ControlResponse with a
// Warning means done but not confirmed by every member.
func (c *Client) Invalidate(user string, kick bool) (*ControlResponse, error) {
	return c.control("/v1/invalidate", &ControlRequest{User: user, Kick: kick})
}

// Hold asks for POST /v1/hold; ttl zero means the node's default.
func (c *Client) Hold(user string, ttl time.Duration) (*ControlResponse, error) {
	req := &ControlRequest{User: user}
	if ttl != 0 {
		req.TTL = ttl.String()
	}
	return c.control("/v1/hold", req)
}

// Release asks for POST /v1/release.
func (c *Client) Release(user string) (*ControlResponse, error) {
	return c.control("/v1/release", &ControlRequest{User: user})
}

// Status asks for GET /status.
func (c *Client) Status() (*Status, error) {
	var st Status
	if err := c.do(http.MethodGet, "/status", nil, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

func (c *Client) control(path string, req *ControlRequest) (*ControlResponse, error) {
	var resp ControlResponse
	if err := c.do(http.MethodPost, path, req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// do sends a request and decodes the JSON answer into out. Any answer
// but 200 is a *StatusError.
func (c *Client) do(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is said below
		}
		return fmt.Errorf("%w at %s: %w", ErrUnreachable, c.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return fmt.Errorf("%s%s: %w", c.base, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(data))
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		return &StatusError{URL: c.base + path, Code: resp.StatusCode, Status: resp.Status, Msg: msg}
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s%s: bad answer: %w", c.base, path, err)
	}
	return nil
}
