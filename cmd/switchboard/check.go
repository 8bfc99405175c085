package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"

	"switchboard/config"
)

// runCheck loads and checks the configuration as serve would, without
// listening or connecting anywhere: the file, the certificates, the
// backend and LDAP CA files, and the map file or the LDAP options. It
// prints "FILE: ok" and returns 0, or prints every problem, one per line,
// and returns 1.
func runCheck(args []string, stdout, stderr io.Writer) int {
	f := newFlags("check", "", stderr)
	if err := f.parse(args, 0); err != nil {
		return exitStatus(err)
	}
	if err := check(f.config, stderr); err != nil {
		printProblems(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok\n", f.config)
	return 0
}

// check runs every check and returns all problems found.
func check(path string, logw io.Writer) error {
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	// Warnings from the packages (a certificate that expires soon) are
	// worth seeing; routine messages are not.
	logger := slog.New(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: slog.LevelWarn}))
	slog.SetDefault(logger)

	var errs []error
	if _, err := newServerTLS(cfg, logger); err != nil {
		errs = append(errs, err)
	}
	if _, err := newBackendTLS(cfg); err != nil {
		errs = append(errs, err)
	}
	_, closer, err := newMapper(cfg)
	if err != nil {
		errs = append(errs, err)
	} else {
		closer.Close()
	}
	return errors.Join(errs...)
}

// printProblems prints err one problem per line: the errors of an
// errors.Join each on their own, recursively.
func printProblems(w io.Writer, err error) {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			printProblems(w, e)
		}
		return
	}
	fmt.Fprintln(w, err)
}
