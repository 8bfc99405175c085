package main

import (
	"errors"
	"fmt"
	"os"

	"switchboard/config"
)

// runServe runs the proxy until it is told to stop. It is a placeholder
// until the router is wired in: it loads the configuration and fails.
func runServe(args []string) int {
	f := newFlags("serve", "", os.Stderr)
	if err := f.parse(args, 0); err != nil {
		return exitStatus(err)
	}
	if _, err := config.Load(f.config); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Fprintln(os.Stderr, "switchboard serve:", errors.New("not yet wired"))
	return 1
}
