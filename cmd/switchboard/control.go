package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"switchboard/admin"
	"switchboard/config"
	"switchboard/internal/usertable"
)

// exitNotConfirmed is the exit status of a control request carried out
// but not confirmed by every member.
const exitNotConfirmed = 3

// newAdminClient reads the configuration for the [admin] address and
// token.
func newAdminClient(path string) (*admin.Client, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	if cfg.Admin == nil {
		return nil, fmt.Errorf("%s: no [admin] table, so the node has no admin listener to talk to", cfg.File)
	}
	c, err := admin.NewClient(cfg.Admin.Address, string(cfg.Admin.Token))
	if err != nil {
		return nil, cfg.ErrorAt("admin.address", err)
	}
	return c, nil
}

// explain adds what the operator can check to an admin client's error.
func explain(err error) error {
	var se *admin.StatusError
	switch {
	case errors.Is(err, admin.ErrUnreachable):
		return fmt.Errorf("%w (is switchboard serve running with this configuration?)", err)
	case errors.As(err, &se) && se.Code == http.StatusUnauthorized:
		return fmt.Errorf("%w (check admin.token_file)", err)
	}
	return err
}

// sendControl sends a control request and reports its outcome; it
// returns the exit status.
func sendControl(f *flags, send func(*admin.Client) (*admin.ControlResponse, error), done string, stdout io.Writer) int {
	c, err := newAdminClient(f.config)
	if err != nil {
		fmt.Fprintf(f.stderr, "switchboard %s: %v\n", f.name, err)
		return 1
	}
	resp, err := send(c)
	if err != nil {
		fmt.Fprintf(f.stderr, "switchboard %s: %v\n", f.name, explain(err))
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
	user := f.args[0]
	return sendControl(f, func(c *admin.Client) (*admin.ControlResponse, error) { return c.Invalidate(user, *kick) }, done, stdout)
}

// runHold is "switchboard hold [-ttl 10m] user".
func runHold(args []string, stdout, stderr io.Writer) int {
	f := newFlags("hold", "[-ttl 10m] user@domain", stderr)
	ttl := f.fs.Duration("ttl", usertable.DefaultHoldTTL, "how long the hold lasts unless renewed or released, at most 24h")
	if err := f.parse(args, 1); err != nil {
		return exitStatus(err)
	}
	if *ttl <= 0 || *ttl > usertable.MaxHoldTTL {
		fmt.Fprintf(stderr, "switchboard hold: -ttl must be positive and at most 24h, not %v\n", *ttl)
		return 1
	}
	done := fmt.Sprintf("on hold for %v: logins are refused on every node", *ttl)
	user := f.args[0]
	return sendControl(f, func(c *admin.Client) (*admin.ControlResponse, error) { return c.Hold(user, *ttl) }, done, stdout)
}

// runRelease is "switchboard release user".
func runRelease(args []string, stdout, stderr io.Writer) int {
	f := newFlags("release", "user@domain", stderr)
	if err := f.parse(args, 1); err != nil {
		return exitStatus(err)
	}
	user := f.args[0]
	return sendControl(f, func(c *admin.Client) (*admin.ControlResponse, error) { return c.Release(user) }, "released", stdout)
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
	st, err := c.Status()
	if err != nil {
		fmt.Fprintf(stderr, "switchboard status: %v\n", explain(err))
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(st)
		return 0
	}
	st.WriteText(stdout)
	return 0
}
