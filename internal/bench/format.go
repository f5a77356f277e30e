package bench

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Progress formats a one-line progress report.
func Progress(r Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "t=%-4s legit %d ok/%d (%.0f msg/s)", r.Elapsed.Round(time.Second), r.Legit.OK, r.Legit.Sessions, r.Legit.MessagesPerS)
	for _, a := range r.Attacks {
		fmt.Fprintf(&b, " | %s %d (%.0f/s)", a.Scenario, a.Attempts, a.PerS)
		if a.MaxHeld > 0 {
			fmt.Fprintf(&b, " held %d", a.MaxHeld)
		}
	}
	if r.Resource != nil {
		fmt.Fprintf(&b, " | rss %.0f MB fds %d", r.Resource.RSSLastMB, r.Resource.FDsMax)
	}
	return b.String()
}

// WriteText writes the human report.
func WriteText(w io.Writer, r *Report) {
	l := r.Legit
	fmt.Fprintf(w, "agua bench: %s\n\n", r.Elapsed.Round(time.Millisecond))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LEGITIMATE\tsessions\tok\tsuccess\tsessions/s\tmsgs/s\tp50\tp99\tmax")
	fmt.Fprintf(tw, "\t%d\t%d\t%.2f%%\t%.1f\t%.1f\t%s\t%s\t%s\n", l.Sessions, l.OK, l.SuccessPct, l.SessionsPerS, l.MessagesPerS,
		l.P50.Round(time.Microsecond), l.P99.Round(time.Microsecond), l.Max.Round(time.Microsecond))
	tw.Flush()
	if len(l.Failures) > 0 {
		fmt.Fprintln(w, "  failures:")
		for _, k := range sortedKeys(l.Failures) {
			fmt.Fprintf(w, "    %-40s %d\n", k, l.Failures[k])
		}
	}
	writeSources(w, r.LegitSources)
	if len(r.Attacks) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ATTACK\tsource\taddresses\tattempts\tattempts/s\tmax held\toutcomes")
		for _, a := range r.Attacks {
			var outs []string
			for _, k := range sortedKeys(a.Outcomes) {
				outs = append(outs, fmt.Sprintf("%s=%d", k, a.Outcomes[k]))
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.0f\t%d\t%s\n", a.Scenario, a.Source, a.Addresses, a.Attempts, a.PerS, a.MaxHeld, strings.Join(outs, " "))
		}
		tw.Flush()
	}
	if rr := r.Resource; rr != nil {
		fmt.Fprintf(w, "\nTARGET pid %d: RSS max %.1f MB (last %.1f MB), threads max %d, open files max %d (%d samples)\n",
			rr.PID, rr.RSSMaxMB, rr.RSSLastMB, rr.ThreadsMax, rr.FDsMax, rr.Samples)
	}
}

// writeSources prints the legitimate clients' addresses: how many of each
// kind and the first ones (the JSON report lists them all, up to 10,000).
func writeSources(w io.Writer, s LegitSources) {
	first := func(l []string) string {
		if len(l) > 8 {
			return strings.Join(l[:8], " ") + " ..."
		}
		return strings.Join(l, " ")
	}
	switch {
	case len(s.Given) > 0:
		fmt.Fprintf(w, "  legitimate clients from (-legit-src): %s\n", strings.Join(s.Given, " "))
	case s.Pool != "":
		fmt.Fprintf(w, "  legitimate clients from %s, one address per session:\n", s.Pool)
		fmt.Fprintf(w, "    %d returning (the same every run): %s\n", s.ReturningCount, first(s.Returning))
		fmt.Fprintf(w, "    %d fresh (never seen before this run): %s\n", s.FreshCount, first(s.Fresh))
	}
}

func sortedKeys(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
