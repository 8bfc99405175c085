// Package config reads Switchboard's one configuration file, a TOML file
// (TOML 1.0, read with github.com/BurntSushi/toml), and checks all of it
// before anything starts.
//
//	cfg, err := config.Load("/etc/switchboard/switchboard.toml")
//	if err != nil {
//		fmt.Fprintln(os.Stderr, err) // every problem, one per line
//		os.Exit(1)
//	}
//	hosts := cfg.HostMap()     // route.HostMap for the router
//	trusted := cfg.TrustedNets() // []netip.Prefix
//
// Every problem is reported in the same pass, one per line, each naming the
// file, the line and the key in the form editors understand:
//
//	switchboard.toml:12: listen[1].address: missing port in address "0.0.0.0"
//
// Array elements are counted from zero. Keys the configuration does not
// know are errors, so a misspelt key cannot be silently ignored. Syntax
// errors keep the TOML library's line and column.
//
// Defaults live in Default, one comment per value. A default that a
// package also applies to a zero Options field is that package's exported
// constant (router.DefaultAuthFailDelay, ldapmap.DefaultFilter,
// cluster.DefaultProbeInterval, ...), never a copy, so that `switchboard
// check` and the server read the same value. docs/configuration.md
// documents every key and its default; tests check both against the
// structs. Durations are strings with a unit ("30s", "31m"). Secrets are
// never in the file itself: a *_file key names a file whose content is
// read into a secret.String, which prints as "***".
//
// Each package of Switchboard has its own Options; the command maps this
// configuration onto them. This package builds none of them, but checks
// with the packages' own exported checks (ldapmap.CheckURI, CheckFilter,
// ValidAttribute; secret.Local for what counts as this machine), so a file
// that passes here is not refused later for a reason stated differently.
package config
