// Command switchboard is the routing IMAP/POP3 proxy. It takes a
// subcommand, then flags:
//
//	switchboard serve -config FILE                       run the proxy
//	switchboard check -config FILE                       check the configuration and exit
//	switchboard lookup -config FILE user@domain          show where a login is routed
//	switchboard status -config FILE                      show the node, the cluster and the backends
//	switchboard invalidate -config FILE [-kick] user     drop the cached route everywhere
//	switchboard hold -config FILE [-ttl 10m] user        refuse the user's logins everywhere
//	switchboard release -config FILE user                end a hold
//	switchboard move -config FILE [-dry-run] user DEST   move a mailbox to another backend
//	switchboard version                                  print the version
//
// status, invalidate, hold and release talk to the local node's admin
// listener, found (with its token) through the [admin] table of FILE.
//
// FILE defaults to /etc/switchboard/switchboard.toml; docs/configuration.md
// describes it. This package maps the configuration onto the Options of
// each package and wires them together; nothing imports it.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
)

// defaultConfig is the configuration file used without -config.
const defaultConfig = "/etc/switchboard/switchboard.toml"

// version is set at build time with -ldflags "-X main.version=v1.2.3";
// otherwise the module version or VCS revision from the build info is used.
var version = ""

const usage = `usage: switchboard <command> [flags] [arguments]

commands:
  serve       -config FILE                        run the proxy
  check       -config FILE                        check the configuration, print every problem
  lookup      -config FILE [-v] user@domain        show where a login is routed
  status      -config FILE [-json]                 show this node, the cluster members and the backends
  invalidate  -config FILE [-kick] user@domain     drop the user's cached route on every node;
                                                  -kick also closes the user's sessions
  hold        -config FILE [-ttl 10m] user@domain  refuse the user's logins on every node
                                                  (a mailbox move); ends by itself after -ttl
  release     -config FILE user@domain             end a hold
  move        -config FILE [-dry-run] [-overwrite] user@domain DEST
                                                  move the mailbox to backend DEST with dsync,
                                                  verify it, then switch LDAP (docs/moving-a-mailbox.md)
  version                                         print the version

FILE defaults to ` + defaultConfig + `. status, invalidate, hold and release
talk to the node's admin listener ([admin] address and token_file).
Exit status: 0 success, 1 failure or usage error; lookup exits 2 for an
unknown user; invalidate, hold and release exit 3 when the request was
carried out but not confirmed by every cluster member within a second
(gossip delivers it shortly after).
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches to a subcommand and returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 1
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "serve":
		return runServe(args)
	case "check":
		return runCheck(args, stdout, stderr)
	case "lookup":
		return runLookup(args, stdout, stderr)
	case "status":
		return runStatus(args, stdout, stderr)
	case "invalidate":
		return runInvalidate(args, stdout, stderr)
	case "hold":
		return runHold(args, stdout, stderr)
	case "release":
		return runRelease(args, stdout, stderr)
	case "move":
		return runMove(args, stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintf(stdout, "switchboard %s %s\n", versionString(), runtime.Version())
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "switchboard: unknown command %q\n\n%s", cmd, usage)
		return 1
	}
}

// versionString returns the version set at build time, or what the build
// info knows.
func versionString() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "(devel)"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return "(devel) " + rev
}

// flags is the flag set of a subcommand: -config, and the positional
// arguments wanted, which may come before or after the flags.
type flags struct {
	fs     *flag.FlagSet
	name   string
	stderr io.Writer
	config string
	args   []string
}

// newFlags returns the flags of subcommand name; argsUsage describes its
// positional arguments for the usage line.
func newFlags(name, argsUsage string, stderr io.Writer) *flags {
	f := &flags{fs: flag.NewFlagSet(name, flag.ContinueOnError), name: name, stderr: stderr}
	f.fs.SetOutput(stderr)
	f.fs.StringVar(&f.config, "config", defaultConfig, "configuration `file`")
	f.fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: switchboard %s [-config FILE] %s\n", name, argsUsage)
		f.fs.PrintDefaults()
	}
	return f
}

// parse parses args, allowing flags after positional arguments
// ("lookup alice@example.org -config F"), and checks that exactly nargs
// positional arguments were given. It prints what is wrong; the caller
// returns exitStatus(err).
func (f *flags) parse(args []string, nargs int) error {
	for {
		if err := f.fs.Parse(args); err != nil {
			return err // the flag package has printed it
		}
		rest := f.fs.Args()
		if len(rest) == 0 {
			break
		}
		f.args = append(f.args, rest[0])
		args = rest[1:]
	}
	var err error
	switch {
	case len(f.args) > nargs:
		err = fmt.Errorf("unexpected argument %q", strings.Join(f.args[nargs:], " "))
	case len(f.args) < nargs:
		err = errors.New("missing argument")
	}
	if err != nil {
		fmt.Fprintf(f.stderr, "switchboard %s: %v\n", f.name, err)
		f.fs.Usage()
	}
	return err
}

// exitStatus is the exit status for a parse error: 0 for -h, else 1.
func exitStatus(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 1
}
