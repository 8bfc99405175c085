package main

import (
	"os"
	"strings"
	"syscall"
)

// The Go runtime's monitor thread (sysmon) sleeps deeply while every
// processor is idle, and the next system call that enters the scheduler
// wakes it and sends it back to polling every 20 µs for a while. A proxy
// under load goes idle between bursts hundreds of times a second, so the
// monitor wakes about once per session; on a virtual machine each of its
// sleeps costs tens of microseconds of CPU. Measured (docs/performance.md):
// a quarter of the proxy's CPU per POP3 session at concurrency 16.
//
// Setting GODEBUG=schedtrace keeps the monitor out of its deep sleep, so it
// settles at its slowest period, 10 ms, and stays there: at most 100 wakes
// a second, busy or idle. The period set is the longest there is (about 25
// days), so the trace the setting is named for is printed once at start
// (when the machine has been up that long) and then about never.
const monitorGODEBUG = "schedtrace=2147483647"

// monitorEnv returns the environment to re-execute with so that the
// runtime's monitor stays awake, or nil when GODEBUG already says
// something about schedtrace (the operator's choice, schedtrace=0 to keep
// Go's default).
func monitorEnv(env []string) []string {
	out := make([]string, 0, len(env)+1)
	set := false
	for _, kv := range env {
		v, ok := strings.CutPrefix(kv, "GODEBUG=")
		if !ok {
			out = append(out, kv)
			continue
		}
		for _, s := range strings.Split(v, ",") {
			if strings.HasPrefix(s, "schedtrace=") {
				return nil
			}
		}
		if v != "" {
			v += ","
		}
		out = append(out, "GODEBUG="+v+monitorGODEBUG)
		set = true
	}
	if !set {
		out = append(out, "GODEBUG="+monitorGODEBUG)
	}
	return out
}

// tuneMonitor re-executes the running binary with the monitor's setting
// (see monitorGODEBUG), unless GODEBUG already has one. It returns only
// if it did not re-execute, with the reason if that was a failure: then
// the process runs with Go's default.
func tuneMonitor() error {
	env := monitorEnv(os.Environ())
	if env == nil {
		return nil
	}
	// The kernel names the process after the file executed ("switchboard"
	// for ps, pgrep and the journal), so the binary's own path comes first;
	// /proc/self/exe, the very file running, if that path is gone.
	if path, err := os.Executable(); err == nil {
		syscall.Exec(path, os.Args, env) // returns only if it failed
	}
	return os.NewSyscallError("execve", syscall.Exec("/proc/self/exe", os.Args, env))
}
