// Command labtool is the Go half of the Ansible lab (ansible/lab/lab.sh):
//
//	labtool backends -dir DIR -ldap-ip IP -mx1-ip IP -mx2-ip IP -trusted CIDR -nodes IP,IP,IP
//	labtool probe -nodes IP,IP,IP -ca FILE -stop-file FILE -report FILE
//
// backends starts slapd and the two Dovecot backends of internal/testbed on
// the lab bridge's addresses, issues a certificate per node from the
// testbed's CA, writes the Ansible variables that point the nodes at them
// (DIR/vars.yml, the bind password in DIR/secrets/) and runs until SIGTERM.
//
// probe is the client loop of the rolling upgrade: fresh IMAP logins to
// each node, a health-aware client that uses only nodes whose /healthz
// answers 200, and IDLE sessions held on every node that reconnect when
// told BYE. It runs until the stop file appears and prints what it saw.
//
// Nothing here is part of the product; it only drives the lab.
package main

import (
	"fmt"
	"log/slog"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: labtool backends|probe [flags]")
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	var err error
	switch os.Args[1] {
	case "backends":
		err = runBackends(os.Args[2:], logger)
	case "probe":
		err = runProbe(os.Args[2:], logger)
	default:
		err = fmt.Errorf("unknown subcommand %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "labtool:", err)
		os.Exit(1)
	}
}
