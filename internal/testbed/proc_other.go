//go:build !linux

package testbed

import "syscall"

// ChildAttr puts a child in its own process group; only Linux can kill it
// when the harness dies (the harness's cleanup does it elsewhere).
func ChildAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
