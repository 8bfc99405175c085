package testbed

import "syscall"

// ChildAttr puts a child in its own process group and has Linux send it
// SIGKILL when the harness dies.
func ChildAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
