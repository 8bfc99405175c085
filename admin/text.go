package admin

import (
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"
)

// WriteText writes st for people, as "switchboard status" prints it:
// the node, its members, then each backend's cluster verdict beside each
// live node's probes.
func (st *Status) WriteText(w io.Writer) {
	state := "serving"
	if st.Draining {
		state = "draining"
	}
	mode := "on its own (no [cluster])"
	if st.Clustered {
		alive := 0
		for _, m := range st.Members {
			if m.State == "alive" {
				alive++
			}
		}
		mode = fmt.Sprintf("in a cluster, %d of %d members alive", alive, len(st.Members))
	}
	fmt.Fprintf(w, "node %s: %s, %s; version %s\n", st.Node, state, mode, st.Version)
	fmt.Fprintf(w, "sessions here: imap %d, pop3 %d\n", st.Sessions["imap"], st.Sessions["pop3"])
	if !st.Clustered {
		return
	}

	fmt.Fprintln(w, "\nmembers:")
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	for _, m := range st.Members {
		note := ""
		if m.Local {
			note = "this node"
		} else if m.State != "alive" && !m.Since.IsZero() {
			note = "since " + m.Since.Local().Format(time.DateTime)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", m.Name, m.Addr, m.State, note)
	}
	tw.Flush()

	var backends []string
	for b := range st.Cluster {
		backends = append(backends, b)
	}
	for _, view := range st.Backends {
		for b := range view {
			if !slices.Contains(backends, b) {
				backends = append(backends, b)
			}
		}
	}
	if len(backends) == 0 {
		return
	}
	slices.Sort(backends)
	var nodes []string
	for n := range st.Backends {
		nodes = append(nodes, n)
	}
	slices.Sort(nodes)
	fmt.Fprintln(w, "\nbackends (cluster verdict, then each live node's probes):")
	tw = tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "  backend\tcluster")
	for _, n := range nodes {
		fmt.Fprintf(tw, "\t%s", n)
	}
	fmt.Fprintln(tw)
	for _, b := range backends {
		fmt.Fprintf(tw, "  %s\t%s", b, orDash(st.Cluster[b]))
		for _, n := range nodes {
			fmt.Fprintf(tw, "\t%s", orDash(st.Backends[n][b]))
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
