package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"switchboard/admin"
	"switchboard/config"
)

const (
	// adminRequestTimeout bounds one request to the admin listener; the
	// node waits at most about a second for the cluster.
	adminRequestTimeout = 10 * time.Second
	// maxAdminResponse bounds what is read of an answer.
	maxAdminResponse = 1 << 20
	// exitNotConfirmed is the exit status of a control request carried
	// out but not confirmed by every member.
	exitNotConfirmed = 3
)

// adminClient talks to the local node's admin listener.
type adminClient struct {
	base  string // "http://host:port"
	token string
	hc    *http.Client
}

// newAdminClient reads the configuration for the [admin] address and
// token.
func newAdminClient(path string) (*adminClient, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	if cfg.Admin == nil {
		return nil, fmt.Errorf("%s: no [admin] table, so the node has no admin listener to talk to", cfg.File)
	}
	host, port, err := net.SplitHostPort(cfg.Admin.Address)
	if err != nil {
		return nil, cfg.ErrorAt("admin.address", err)
	}
	// A listener on every address is reached on loopback.
	if a, err := netip.ParseAddr(host); host == "" || (err == nil && a.IsUnspecified()) {
		host = "127.0.0.1"
		if err == nil && a.Is6() {
			host = "::1"
		}
	}
	return &adminClient{
		base:  "http://" + net.JoinHostPort(host, port),
		token: string(cfg.Admin.Token),
		hc:    &http.Client{Timeout: adminRequestTimeout},
	}, nil
}

// do sends a request and decodes the JSON answer into out. Any answer
// but 200 is an error, worded from the answer's "error" field.
func (c *adminClient) do(method, path string, body, out any) error {
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
		var ue interface{ Unwrap() error }
		if errors.As(err, &ue) {
			err = ue.Unwrap()
		}
		return fmt.Errorf("cannot reach the node's admin listener at %s: %v (is switchboard serve running with this configuration?)", c.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAdminResponse))
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
		if resp.StatusCode == http.StatusUnauthorized {
			msg += " (check admin.token_file)"
		}
		return fmt.Errorf("%s%s: %s: %s", c.base, path, resp.Status, msg)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s%s: bad answer: %w", c.base, path, err)
	}
	return nil
}

// control sends a control request and reports its outcome; it returns
// the exit status.
func control(f *flags, path string, req *admin.ControlRequest, done string, stdout io.Writer) int {
	c, err := newAdminClient(f.config)
	if err != nil {
		fmt.Fprintf(f.stderr, "switchboard %s: %v\n", f.name, err)
		return 1
	}
	var resp admin.ControlResponse
	if err := c.do(http.MethodPost, path, req, &resp); err != nil {
		fmt.Fprintf(f.stderr, "switchboard %s: %v\n", f.name, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: %s\n", resp.User, done)
	if resp.Warning != "" {
		fmt.Fprintf(f.stderr, "switchboard %s: warning: %s\n", f.name, resp.Warning)
		return exitNotConfirmed
	}
	return 0
}

// runInvalidate is "switchboard invalidate [-kick] user".
func runInvalidate(args []string, stdout, stderr io.Writer) int {
	f := newFlags("invalidate", "[-kick] user@domain", stderr)
	kick := f.fs.Bool("kick", false, "also close the user's sessions on every node (IMAP clients get * BYE)")
	if err := f.parse(args, 1); err != nil {
		return exitStatus(err)
	}
	done := "cached route dropped on every node"
	if *kick {
		done += ", sessions closed"
	}
	return control(f, "/v1/invalidate", &admin.ControlRequest{User: f.args[0], Kick: *kick}, done, stdout)
}

// runHold is "switchboard hold [-ttl 10m] user".
func runHold(args []string, stdout, stderr io.Writer) int {
	f := newFlags("hold", "[-ttl 10m] user@domain", stderr)
	ttl := f.fs.Duration("ttl", 10*time.Minute, "how long the hold lasts unless renewed or released, at most 24h")
	if err := f.parse(args, 1); err != nil {
		return exitStatus(err)
	}
	if *ttl <= 0 || *ttl > 24*time.Hour {
		fmt.Fprintf(stderr, "switchboard hold: -ttl must be positive and at most 24h, not %v\n", *ttl)
		return 1
	}
	done := fmt.Sprintf("on hold for %v: logins are refused on every node", *ttl)
	return control(f, "/v1/hold", &admin.ControlRequest{User: f.args[0], TTL: ttl.String()}, done, stdout)
}

// runRelease is "switchboard release user".
func runRelease(args []string, stdout, stderr io.Writer) int {
	f := newFlags("release", "user@domain", stderr)
	if err := f.parse(args, 1); err != nil {
		return exitStatus(err)
	}
	return control(f, "/v1/release", &admin.ControlRequest{User: f.args[0]}, "released", stdout)
}

// runStatus is "switchboard status [-json]".
func runStatus(args []string, stdout, stderr io.Writer) int {
	f := newFlags("status", "[-json]", stderr)
	asJSON := f.fs.Bool("json", false, "print the node's /status answer as JSON")
	if err := f.parse(args, 0); err != nil {
		return exitStatus(err)
	}
	c, err := newAdminClient(f.config)
	if err != nil {
		fmt.Fprintf(stderr, "switchboard status: %v\n", err)
		return 1
	}
	var st admin.Status
	if err := c.do(http.MethodGet, "/status", nil, &st); err != nil {
		fmt.Fprintf(stderr, "switchboard status: %v\n", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(&st)
		return 0
	}
	printStatus(stdout, &st)
	return 0
}

// printStatus writes a status for people.
func printStatus(w io.Writer, st *admin.Status) {
	state := "serving"
	if st.Draining {
		state = "draining"
	}
	mode := "on its own (no [cluster])"
	if st.Clustered {
		alive := 0
		for _, m := range st.Members {
			if m.State == "alive" {
				alive++
			}
		}
		mode = fmt.Sprintf("in a cluster, %d of %d members alive", alive, len(st.Members))
	}
	fmt.Fprintf(w, "node %s: %s, %s; version %s\n", st.Node, state, mode, st.Version)
	fmt.Fprintf(w, "sessions here: imap %d, pop3 %d\n", st.Sessions["imap"], st.Sessions["pop3"])
	if !st.Clustered {
		return
	}

	fmt.Fprintln(w, "\nmembers:")
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	for _, m := range st.Members {
		note := ""
		if m.Local {
			note = "this node"
		} else if m.State != "alive" && !m.Since.IsZero() {
			note = "since " + m.Since.Local().Format(time.DateTime)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", m.Name, m.Addr, m.State, note)
	}
	tw.Flush()

	var backends []string
	for b := range st.Cluster {
		backends = append(backends, b)
	}
	for _, view := range st.Backends {
		for b := range view {
			if !slices.Contains(backends, b) {
				backends = append(backends, b)
			}
		}
	}
	if len(backends) == 0 {
		return
	}
	slices.Sort(backends)
	var nodes []string
	for n := range st.Backends {
		nodes = append(nodes, n)
	}
	slices.Sort(nodes)
	fmt.Fprintln(w, "\nbackends (cluster verdict, then each live node's probes):")
	tw = tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "  backend\tcluster")
	for _, n := range nodes {
		fmt.Fprintf(tw, "\t%s", n)
	}
	fmt.Fprintln(tw)
	for _, b := range backends {
		fmt.Fprintf(tw, "  %s\t%s", b, orDash(st.Cluster[b]))
		for _, n := range nodes {
			fmt.Fprintf(tw, "\t%s", orDash(st.Backends[n][b]))
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
