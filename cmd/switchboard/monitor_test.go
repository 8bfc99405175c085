package main

import (
	"slices"
	"testing"
)

func TestMonitorEnv(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		want []string // nil: no re-execution
	}{
		{"no GODEBUG", []string{"PATH=/bin"}, []string{"PATH=/bin", "GODEBUG=" + monitorGODEBUG}},
		{"empty GODEBUG", []string{"GODEBUG=", "HOME=/"}, []string{"GODEBUG=" + monitorGODEBUG, "HOME=/"}},
		{"other settings kept", []string{"GODEBUG=madvdontneed=1"}, []string{"GODEBUG=madvdontneed=1," + monitorGODEBUG}},
		{"already set", []string{"GODEBUG=" + monitorGODEBUG}, nil},
		{"operator's choice", []string{"GODEBUG=gctrace=1,schedtrace=0"}, nil},
		{"a lookalike is not it", []string{"GODEBUG=xschedtrace=1"}, []string{"GODEBUG=xschedtrace=1," + monitorGODEBUG}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := monitorEnv(tc.env)
			if !slices.Equal(got, tc.want) || (got == nil) != (tc.want == nil) {
				t.Errorf("monitorEnv(%q) = %q, want %q", tc.env, got, tc.want)
			}
		})
	}
}
