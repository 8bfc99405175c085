package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"syscall"
	"time"

	"switchboard/admin"
	"switchboard/config"
	"switchboard/move"
	sbtls "switchboard/tls"
)

// runMove is "switchboard move [-dry-run] [-overwrite] user DEST".
func runMove(args []string, stdout, stderr io.Writer) int {
	f := newFlags("move", "[-dry-run] [-overwrite] user@domain DEST", stderr)
	dryRun := f.fs.Bool("dry-run", false, "check and print what the move would do, change nothing")
	overwrite := f.fs.Bool("overwrite", false, "let the pre-copy replace mail DEST already holds for the user (left by an interrupted move)")
	if err := f.parse(args, 2); err != nil {
		return exitStatus(err)
	}
	user, dest := f.args[0], f.args[1]
	cfg, err := config.Load(f.config)
	if err != nil {
		fmt.Fprintf(stderr, "switchboard move: %v\n", err)
		return 1
	}
	logger, flush := cfg.Logger(stderr)
	defer flush()
	opts, closer, err := moveOptions(cfg, logger)
	if err != nil {
		fmt.Fprintf(stderr, "switchboard move: %v\n", err)
		return 1
	}
	defer closer()
	opts.Overwrite = *overwrite
	opts.Progress = stdout
	m, err := move.New(opts)
	if err != nil {
		fmt.Fprintf(stderr, "switchboard move: %v\n", err)
		return 1
	}
	// Ctrl-C or SIGTERM before the switch rolls the move back.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *dryRun {
		return printPlan(ctx, m, opts, user, dest, stdout, stderr)
	}
	r, err := m.Move(ctx, user, dest)
	if err != nil {
		fmt.Fprintf(stderr, "switchboard move: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "moved %s from %s to %s: %d messages, %d folders verified; pre-copy %v, final sync %v, blocked %v\n",
		user, r.Source, r.Dest, r.Messages, r.Folders, r.PreCopy.Round(time.Millisecond),
		r.FinalSync.Round(time.Millisecond), r.Blocked.Round(time.Millisecond))
	return 0
}

// printPlan is -dry-run.
func printPlan(ctx context.Context, m *move.Mover, opts *move.Options, user, dest string, stdout, stderr io.Writer) int {
	p, err := m.Plan(ctx, user, dest)
	if err != nil {
		fmt.Fprintf(stderr, "switchboard move: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "would move %s (%s) from %s to %s:\n", user, p.DN, p.Source, p.Dest)
	for i, s := range p.Steps(opts) {
		fmt.Fprintf(stdout, "  %d. %s\n", i+1, s)
	}
	return 0
}

// moveOptions maps [move], [ldap], [hosts] and [admin] onto
// move.Options; the function it returns closes the LDAP connections.
func moveOptions(cfg *config.Config, logger *slog.Logger) (*move.Options, func(), error) {
	switch {
	case cfg.Move == nil:
		return nil, nil, fmt.Errorf("%s: no [move] table (bind_dn, bind_password_file, doveadm_password_file)", cfg.File)
	case cfg.LDAP == nil:
		return nil, nil, fmt.Errorf("%s: no [ldap] table: a move changes the user's LDAP entry", cfg.File)
	}
	ac, err := newAdminClient(cfg.File, true) // holds, kicks, invalidations: control
	if err != nil {
		return nil, nil, err
	}
	mc, lc := cfg.Move, cfg.LDAP
	tc, err := sbtls.NewClient(&sbtls.ClientOptions{CAFile: lc.CAFile})
	if err != nil {
		return nil, nil, cfg.ErrorAt("ldap.ca_file", err)
	}
	dir, err := move.NewLDAP(&move.LDAPOptions{
		URIs: lc.URIs, StartTLS: lc.StartTLS, TLSConfig: tc,
		BindDN: mc.BindDN, BindPassword: mc.BindPassword,
		BaseDN: lc.BaseDN, Filter: lc.Filter, Attribute: lc.Attribute,
		Timeout: lc.Timeout.Duration, Logger: logger,
	})
	if err != nil {
		return nil, nil, cfg.ErrorAt("move", err)
	}
	backends, err := doveadmBackends(cfg)
	if err != nil {
		dir.Close()
		return nil, nil, err
	}
	opts := &move.Options{
		Directory:     dir,
		Cluster:       adminCluster{ac, logger},
		Backends:      backends,
		Attribute:     lc.Attribute,
		HoldAttribute: mc.HoldAttribute,
		HoldValue:     mc.HoldValue,
		HoldTTL:       mc.HoldTTL.Duration,
		Settle:        mc.Settle.Duration,
		SessionWait:   mc.SessionWait.Duration,
		Logger:        logger,
	}
	return opts, func() { dir.Close() }, nil
}

// doveadmBackends returns a doveadm client for every backend named in
// [hosts] or [move.backends].
func doveadmBackends(cfg *config.Config) (map[string]move.Backend, error) {
	mc := cfg.Move
	scheme := "http"
	hc := &http.Client{Timeout: mc.Timeout.Duration}
	if mc.DoveadmCAFile != "" {
		tc, err := sbtls.NewClient(&sbtls.ClientOptions{CAFile: mc.DoveadmCAFile})
		if err != nil {
			return nil, cfg.ErrorAt("move.doveadm_ca_file", err)
		}
		scheme = "https"
		hc.Transport = &http.Transport{TLSClientConfig: tc}
	}
	names := make([]string, 0, len(cfg.Hosts)+len(mc.Backends))
	for n := range cfg.Hosts {
		names = append(names, n)
	}
	for n := range mc.Backends {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make(map[string]move.Backend, len(names))
	for _, n := range names {
		httpAddr, tcpAddr := cfg.DoveadmAddrs(n)
		out[n] = &move.Doveadm{
			Name:     n,
			URL:      scheme + "://" + httpAddr + "/doveadm/v1",
			TCPAddr:  tcpAddr,
			Password: mc.DoveadmPassword,
			Client:   hc,
		}
	}
	return out, nil
}

// adminCluster is move.Cluster over a node's admin API.
type adminCluster struct {
	c   *admin.Client
	log *slog.Logger
}

// Hold fails unless every member confirmed it: a node that has not heard
// of the hold could let a login through to the source.
func (a adminCluster) Hold(user string, ttl time.Duration) error {
	resp, err := a.c.Hold(user, ttl)
	if err != nil {
		return explain(err)
	}
	if resp.Warning != "" {
		return fmt.Errorf("hold not confirmed by every node: %s", resp.Warning)
	}
	return nil
}

func (a adminCluster) Release(user string) error {
	resp, err := a.c.Release(user)
	if err != nil {
		return explain(err)
	}
	if resp.Warning != "" {
		a.log.Warn("release not confirmed by every node; gossip carries it", "user", user, "warning", resp.Warning)
	}
	return nil
}

func (a adminCluster) Invalidate(user string, kick bool) error {
	resp, err := a.c.Invalidate(user, kick)
	if err != nil {
		return explain(err)
	}
	if resp.Warning != "" {
		a.log.Warn("invalidate not confirmed by every node; gossip carries it", "user", user, "warning", resp.Warning)
	}
	return nil
}
