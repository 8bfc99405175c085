//go:build !linux

package main

// takeTerminal does nothing off Linux: Ctrl-C reaches make and the demo
// alike there.
func takeTerminal() (restore func()) { return func() {} }
