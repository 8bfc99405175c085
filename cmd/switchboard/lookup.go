package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"text/tabwriter"
	"time"

	"switchboard/config"
	"switchboard/route"
)

// Exit statuses of lookup.
const (
	lookupOK      = 0 // the user is routable
	lookupFailed  = 1 // configuration, directory or entry problem
	lookupUnknown = 2 // no such user
)

// lookupTimeout bounds the whole lookup, failovers included.
const lookupTimeout = 30 * time.Second

// runLookup shows where a login is routed, using the map serve would
// build: its source, the entry, each host value with its role and the
// addresses it resolves to.
func runLookup(args []string, stdout, stderr io.Writer) int {
	f := newFlags("lookup", "user@domain", stderr)
	verbose := f.fs.Bool("v", false, "also print the user map's log messages (connections, failovers)")
	if err := f.parse(args, 1); err != nil {
		return exitStatus(err)
	}
	user := f.args[0]
	cfg, err := config.Load(f.config)
	if err != nil {
		printProblems(stderr, err)
		return lookupFailed
	}
	// The answer says what went wrong; the map's own log lines repeat it,
	// so they are shown only on request.
	logger := slog.New(slog.DiscardHandler)
	if *verbose {
		logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	slog.SetDefault(logger)
	m, closer, err := newMapper(cfg)
	if err != nil {
		printProblems(stderr, err)
		return lookupFailed
	}
	defer closer.Close()

	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	res, err := m.Lookup(ctx, user)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %s\n", user, describeLookupError(cfg, err))
		if errors.Is(err, route.ErrUnknownUser) {
			return lookupUnknown
		}
		return lookupFailed
	}
	printRoute(stdout, cfg, user, res)
	return lookupOK
}

// ambiguousDNs finds the DNs ldapmap lists in an ambiguous answer.
var ambiguousDNs = regexp.MustCompile(`entries (.*): ` + regexp.QuoteMeta(route.ErrAmbiguous.Error()))

// describeLookupError says why a lookup failed, in the terms of the
// configuration.
func describeLookupError(cfg *config.Config, err error) string {
	switch {
	case errors.Is(err, route.ErrUnknownUser):
		return "unknown user"
	case errors.Is(err, route.ErrAmbiguous):
		if m := ambiguousDNs.FindStringSubmatch(err.Error()); m != nil {
			dns := strings.Split(m[1], "; ")
			return fmt.Sprintf("ambiguous: %d entries: %s", len(dns), strings.Join(dns, "; "))
		}
		return "ambiguous: " + err.Error()
	case errors.Is(err, route.ErrUnavailable):
		if cfg.Map.Type == config.MapLDAP {
			return "LDAP unavailable: " + err.Error()
		}
		return "map unavailable: " + err.Error()
	case errors.Is(err, route.ErrNoHost):
		return "entry has no host value: " + err.Error()
	default:
		return "lookup failed: " + err.Error()
	}
}

// printRoute prints a successful lookup.
func printRoute(w io.Writer, cfg *config.Config, user string, res route.Result) {
	hm := cfg.HostMap()
	fmt.Fprintf(w, "user:    %s\n", user)
	fmt.Fprintf(w, "source:  %s\n", res.Source)
	label := "dn:"
	if cfg.Map.Type == config.MapFile {
		label = "line:"
	}
	fmt.Fprintf(w, "%-8s %s\n", label, res.DN)
	fmt.Fprintf(w, "hosts:\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for i, h := range res.Hosts {
		role := "primary"
		if i > 0 {
			role = fmt.Sprintf("standby %d", i)
		}
		fmt.Fprintf(tw, "  %s\t%s\timap %s\tpop3 %s\n", role, h, hm.Resolve(h, route.IMAP), hm.Resolve(h, route.POP3))
	}
	tw.Flush()
	if cfg.Backend.TLS {
		name := cfg.Backend.ServerName
		if name == "" {
			name = "the address's host"
		}
		fmt.Fprintf(w, "backend: implicit TLS, certificate name %s\n", name)
	} else {
		fmt.Fprintf(w, "backend: plaintext\n")
	}
}
