package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/agua-mail/agua/internal/admin"
	"github.com/agua-mail/agua/shield"
)

// cmdTop is a terminal view of the dashboard's live data, for operators on
// SSH: it polls the running server once a second and redraws.
func cmdTop(e *env) error {
	interval := e.flags.Duration("interval", time.Second, "refresh interval")
	once := e.flags.Bool("once", false, "print one frame and exit (for scripts); rates are measured over one -interval")
	_, c, err := e.client()
	if err != nil {
		return err
	}
	if *interval < 100*time.Millisecond {
		return usagef("-interval must be at least 100ms")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var prev *admin.Live
	for {
		var live admin.Live
		if err := c.Do("GET", "/v1/live", nil, &live); err != nil {
			return err
		}
		// A rate needs two samples: -once takes the second one an
		// interval after the first before it prints anything.
		if !*once || prev != nil {
			if !*once {
				fmt.Fprint(e.stdout, "\x1b[H\x1b[2J") // home, clear
			}
			renderTop(e.stdout, &live, prev)
			if !*once {
				fmt.Fprint(e.stdout, topFooter)
			}
			if *once {
				return nil
			}
		}
		prev = &live
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(*interval):
		}
	}
}

// topFooter ends each frame of the live view: how to leave it (q does
// not, the terminal stays in line mode).
const topFooter = "\n(refreshing every -interval; Ctrl-C quits)\n"

func renderTop(w io.Writer, l, prev *admin.Live) {
	lock := "off"
	if l.Lockdown {
		lock = "ON — only allowlisted and known-good clients are served"
	}
	fmt.Fprintf(w, "agua top — %s — %d connections open — lockdown %s\n\n", l.Time.UTC().Format(time.TimeOnly)+" UTC", l.Conns, lock)
	dt := 0.0
	if prev != nil {
		dt = l.Time.Sub(prev.Time).Seconds()
	}
	names := make([]string, 0, len(l.Listeners))
	for n := range l.Listeners {
		names = append(names, n)
	}
	sort.Strings(names)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "LISTENER\tOPEN\tSERVED/s\tREFUSED/s\tSERVED\tREJECTED\tDROPPED\tTARPITTED\tEVICTED\t")
	for _, n := range names {
		s := l.Listeners[n]
		served, refused := "-", "-"
		if prev != nil && dt > 0 {
			p := prev.Listeners[n]
			served = fmt.Sprintf("%.0f", float64(s.Accepted-p.Accepted)/dt)
			refused = fmt.Sprintf("%.0f", float64(s.Rejected+s.Dropped+s.Tarpitted-p.Rejected-p.Dropped-p.Tarpitted)/dt)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t\n", n, s.Active, served, refused, s.Accepted, s.Rejected, s.Dropped, s.Tarpitted, s.Evicted)
	}
	tw.Flush()
	fmt.Fprintln(w)
	talkers := func(title string, ts []admin.Talker) {
		fmt.Fprintf(w, "%s\n", title)
		if len(ts) == 0 {
			fmt.Fprintln(w, "  (none)")
			return
		}
		for i, t := range ts {
			if i == 8 {
				break
			}
			mark := ""
			if t.Banned {
				mark = "  BANNED"
			}
			fmt.Fprintf(w, "  %-22s %5d open  %4d authenticated%s\n", t.Prefix, t.Conns, t.Authenticated, mark)
		}
	}
	talkers("TOP ADDRESSES", l.TopAddrs)
	talkers("TOP NETWORKS", l.TopNets)
	fmt.Fprintf(w, "\nBANS (%d)\n", len(l.Bans))
	bans := append([]shield.BanInfo(nil), l.Bans...)
	sort.Slice(bans, func(i, j int) bool { return bans[i].Hits > bans[j].Hits })
	for i, b := range bans {
		if i == 10 {
			fmt.Fprintf(w, "  … %d more (agua bans)\n", len(bans)-10)
			break
		}
		fmt.Fprintf(w, "  %-22s %-18s %-7s %8d refused  expires in %s\n", b.Prefix, b.Reason, b.Action, b.Hits, strings.TrimSuffix(time.Until(b.Expires).Round(time.Second).String(), "0s"))
	}
}
