package main

import (
	"fmt"
	"io"
	"slices"
	"time"
)

// baseline names the mode each mode's paired difference is taken against.
var baseline = map[string]string{"cache": "direct", "imapproxy": "direct", "cache-tls": "direct-tls"}

// report prints the results as Markdown.
func report(w io.Writer, modes []*mode, results []*scenarioResult, failures map[string][]string) {
	by := make(map[string][]*scenarioResult)
	reps := 0
	for _, r := range results {
		by[r.Mode] = append(by[r.Mode], r)
		reps = max(reps, r.Rep+1)
	}
	fmt.Fprintf(w, "Scenario: log in, open %d messages in the preview pane, switch to %s and back, log out; %d paired repetitions, mode order rotating, each scenario as a user of its own (cold cache).\n\n", messagesOpened, secondFolder, reps)
	fmt.Fprintln(w, "| mode | PHP requests | IMAP logins by Roundcube | backend logins | IMAP commands sent by Roundcube | scenario time, median | paired difference, median | LOGIN p50 on hits (n) | LOGIN p50 on misses (n) |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|")
	for _, m := range modes {
		rs := by[m.name]
		if len(rs) == 0 {
			continue
		}
		var php, logins, cmds, sessions []float64
		var totals []time.Duration
		var hits, misses, all []time.Duration
		for _, r := range rs {
			php = append(php, float64(r.PHPRequests))
			logins = append(logins, float64(r.BackendLogins))
			totals = append(totals, r.Total)
			hits = append(hits, r.Hits...)
			misses = append(misses, r.Misses...)
			all = append(all, r.Unclassified...)
			if r.Sessions != nil {
				n, s := 0, 0
				for _, x := range r.Sessions {
					n += x.Commands
					if x.LoginLatency > 0 {
						s++
					}
				}
				cmds = append(cmds, float64(n))
				sessions = append(sessions, float64(s))
			}
		}
		diff := "—"
		if base, ok := baseline[m.name]; ok {
			diff = pairedDiff(rs, by[base])
		}
		hitCol := latency(hits)
		if len(all) > 0 {
			hitCol = "all logins: " + latency(all)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", m.name,
			medianOf(php), orDash(sessions), medianOf(logins), orDash(cmds),
			ms(median(totals)), diff, hitCol, latency(misses))
	}
	for _, m := range modes {
		for _, f := range failures[m.name] {
			fmt.Fprintf(w, "\nFailed scenario, %s: %s\n", m.name, f)
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Counts are medians per scenario (min–max when they vary). Paired difference: this mode's scenario time minus its baseline's in the same repetition (cache and imapproxy against direct, cache-tls against direct-tls), median over repetitions, and relative to the baseline's median. LOGIN latency: from the end of Roundcube's LOGIN/AUTHENTICATE line to the end of the tagged answer, seen at the counting relay; the -tls modes run without the relay. up-imapproxy gives the same answer on hits and misses, so its logins are shown together.")
}

// pairedDiff is the median of per-repetition differences a − b.
func pairedDiff(a, b []*scenarioResult) string {
	bt := make(map[int]time.Duration)
	var base []time.Duration
	for _, r := range b {
		bt[r.Rep] = r.Total
		base = append(base, r.Total)
	}
	var d []time.Duration
	for _, r := range a {
		if t, ok := bt[r.Rep]; ok {
			d = append(d, r.Total-t)
		}
	}
	if len(d) == 0 {
		return "—"
	}
	md := median(d)
	return fmt.Sprintf("%+.0f ms (%+.1f%%)", float64(md)/1e6, 100*float64(md)/float64(median(base)))
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// medianOf prints the median of counts, with the range when they vary.
func medianOf(v []float64) string {
	if len(v) == 0 {
		return "—"
	}
	s := slices.Clone(v)
	slices.Sort(s)
	var m float64
	if len(s)%2 == 1 {
		m = s[len(s)/2]
	} else {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	if s[0] == s[len(s)-1] {
		return fmt.Sprintf("%g", m)
	}
	return fmt.Sprintf("%g (%g–%g)", m, s[0], s[len(s)-1])
}

func orDash(v []float64) string { return medianOf(v) }

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/1e6) }

// latency prints a p50 in ms with the sample count.
func latency(d []time.Duration) string {
	if len(d) == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f ms (%d)", float64(median(d))/1e6, len(d))
}
