package main

import (
	"context"
	"fmt"
	"log"
	"path/filepath"
	"time"

	"switchboard/bench/loadgen"
	"switchboard/internal/testbed"
)

// userFilter is the LDAP filter every proxy searches with (%s: the login
// name). It is Switchboard's default filter.
const userFilter = "(&(mail=%s)(status=active))"

// target is one system under test.
type target struct {
	lg *loadgen.Target
	// daemons are the processes the benchmark started for the target;
	// their trees are what memory and CPU are charged to.
	daemons []*daemon
	// pids, when set, replaces the daemons' trees (direct: the backends).
	pids         func() []int
	multiProcess bool
	// floor marks the relay: measured on plaintext sessions and bulk
	// only. (It passes TLS through, so clients would verify the
	// backends' certificates by the relay's address, and it holds two
	// pipes per session while it splices, more descriptors than 5,000
	// idle sessions may have here.)
	floor   bool
	cleanup func()
	// skip, when set, says why the target is not measured.
	skip    string
	skipFor string // name used in the skip row when lg is nil
}

func (t *target) name() string {
	if t.lg != nil {
		return t.lg.Name
	}
	return t.skipFor
}

// procs returns the pids to charge memory and CPU to.
func (t *target) procs() []int {
	if t.pids != nil {
		return t.pids()
	}
	var roots []int
	for _, d := range t.daemons {
		if !d.exited() {
			roots = append(roots, d.pid())
		}
	}
	return loadgen.ProcTree(roots...)
}

func (t *target) cpu() time.Duration { return loadgen.CPUTime(t.procs()) }

func (t *target) sysCPU() time.Duration {
	_, sys := loadgen.CPUTimes(t.procs())
	return sys
}

func (t *target) stop() {
	for _, d := range t.daemons {
		d.stop()
	}
	t.daemons = nil
	if t.cleanup != nil {
		t.cleanup()
		t.cleanup = nil
	}
}

// startTargets starts every selected target. A target that cannot run is
// returned with skip set, so the rest of the run goes on.
func startTargets(ctx context.Context, cfg *config, tb *bed, dir string) []*target {
	var out []*target
	for _, name := range cfg.targets {
		var t *target
		var err error
		switch name {
		case "direct":
			t = directTarget(tb)
		case "relay":
			t, err = startRelay(tb, filepath.Join(dir, name))
		case "perdition", "dovecot-proxy", "nginx", "switchboard", "baseline":
			pc, perr := tb.proxyConfig(filepath.Join(dir, name))
			if perr != nil {
				err = perr
				break
			}
			switch name {
			case "perdition":
				t, err = startPerdition(pc)
			case "dovecot-proxy":
				t, err = startDovecotProxy(pc)
			case "nginx":
				t, err = startNginx(pc)
			case "switchboard":
				t, err = startSwitchboard(ctx, name, cfg.switchboard, pc)
			case "baseline":
				t, err = startSwitchboard(ctx, name, cfg.baseline, pc)
			}
		}
		if err != nil {
			t = &target{skip: err.Error(), skipFor: name}
		} else {
			log.Printf("%s: up", name)
		}
		out = append(out, t)
	}
	return out
}

// directTarget connects to the user's own backend. Its memory and CPU
// figures are the backends' own, for scale.
func directTarget(tb *bed) *target {
	per := make(map[string]map[string]string)
	for i, d := range tb.backends {
		per[backendNames[i]] = map[string]string{
			"imap/none":     fmt.Sprintf("%s:%d", d.IP, tb.imapPort),
			"imap/implicit": d.IMAPSAddr,
			"pop3/none":     fmt.Sprintf("%s:%d", d.IP, tb.pop3Port),
			"pop3/implicit": d.POP3SAddr,
		}
	}
	return &target{
		lg:           &loadgen.Target{Name: "direct", PerHost: per, CAPEM: tb.caPEM},
		pids:         tb.backendPIDs,
		multiProcess: true,
	}
}

// proxyConfig gives a proxy target its own loopback IP, a certificate for
// it, and the testbed's LDAP and backend coordinates.
func (b *bed) proxyConfig(dir string) (proxyConfig, error) {
	ip := allocFreshIP(b)
	cert, key, err := b.ca.Issue(ip, "localhost")
	if err != nil {
		return proxyConfig{}, err
	}
	return proxyConfig{
		Dir: dir, IP: ip,
		LDAPAddr: b.slapd.Addr, BaseDN: b.slapd.PeopleDN, BindDN: b.slapd.BindDN, BindPW: b.slapd.BindPassword,
		Filter:   userFilter,
		IMAPPort: b.imapPort, POP3Port: b.pop3Port,
		CertFile: cert, KeyFile: key, CAFile: b.ca.File, CAPEM: b.caPEM,
	}, nil
}

func allocFreshIP(b *bed) string {
	for {
		ip := testbed.AllocIP()
		if ip != b.slapd.IP && ip != b.backends[0].IP && ip != b.backends[1].IP {
			return ip
		}
	}
}
