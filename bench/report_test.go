package main

import (
	"strings"
	"testing"

	"switchboard/bench/loadgen"
)

// TestAheadCell checks the verdict on one line of the table: ahead on the
// mean or not, and how the rounds split when they do not agree.
func TestAheadCell(t *testing.T) {
	m := metric{workload: loadgen.WorkPOP3Session, tls: "none", conc: 64, higher: true,
		value: func(r *loadgen.Result) float64 { return r.SessionsPS }, format: "%.0f"}
	rounds := func(v ...float64) []loadgen.Result {
		rs := make([]loadgen.Result, len(v))
		for i := range v {
			rs[i].SessionsPS = v[i]
		}
		return rs
	}
	mean := func(rs []loadgen.Result) *loadgen.Result {
		var sum float64
		for _, r := range rs {
			sum += r.SessionsPS
		}
		return &loadgen.Result{SessionsPS: sum / float64(len(rs))}
	}
	for _, tc := range []struct {
		name      string
		sb, nginx []loadgen.Result
		want      string
	}{
		{"every round", rounds(600, 610, 620), rounds(500, 510, 520), "yes"},
		{"ahead on the mean, not in every round", rounds(600, 500, 700), rounds(550, 560, 570), "yes (nginx ahead in 1 of 3 rounds)"},
		{"behind on the mean", rounds(500, 600, 500), rounds(550, 560, 570), "**not ahead of nginx** (560; Switchboard ahead in 1 of 3 rounds)"},
		{"a tie is not ahead", rounds(500), rounds(500), "**not ahead of nginx** (500)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			per := map[string][]loadgen.Result{"switchboard": tc.sb, "nginx": tc.nginx}
			find := func(target string, _ metric) *loadgen.Result {
				if rs, ok := per[target]; ok {
					return mean(rs)
				}
				return nil
			}
			findRounds := func(target string, _ metric) []loadgen.Result {
				if rs := per[target]; len(rs) > 1 {
					return rs
				}
				return nil
			}
			got := aheadCell(m, find, findRounds)
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
			if strings.Contains(got, "dovecot-proxy") {
				t.Errorf("%q names a proxy that was not measured", got)
			}
		})
	}
}
