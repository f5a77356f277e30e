package report

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/agua-mail/agua/shield"
)

// AttackOptions say how to build an attack report.
type AttackOptions struct {
	Hostname string
	Top      int // networks listed; 0 = 10
	Prefix4  int // default 24
	Prefix6  int // default 48
}

// Peak is the busiest step of a series.
type Peak struct {
	At    time.Time `json:"at"`
	Count uint64    `json:"count"`
}

// NetworkSummary is one offending network in an attack report.
type NetworkSummary struct {
	Prefix     string    `json:"prefix"`
	Addresses  int       `json:"addresses"`
	Refused    uint64    `json:"refused"`
	Offences   uint64    `json:"offences"`
	Activities []string  `json:"activities"`
	First      time.Time `json:"first"`
	Last       time.Time `json:"last"`
}

// AttackReport sums up an incident.
type AttackReport struct {
	Hostname string        `json:"hostname"`
	Since    time.Time     `json:"since"`
	Now      time.Time     `json:"now"`
	Step     time.Duration `json:"step"`

	Admitted          uint64            `json:"admitted"`
	AdmittedKnownGood uint64            `json:"admitted_known_good"`
	Refused           uint64            `json:"refused"`
	RefusedByAction   map[string]uint64 `json:"refused_by_action"`
	RefusedBySource   map[string]uint64 `json:"refused_by_source"`
	Events            map[string]uint64 `json:"events"`
	BansByReason      map[string]uint64 `json:"bans_by_reason"` // the shield's own bans, by behaviour
	// OperatorBans are the blocks of agua block and the dashboard, by the
	// reason given ("manual" when none was).
	OperatorBans         uint64                 `json:"operator_bans"`
	OperatorBansByReason map[string]uint64      `json:"operator_bans_by_reason"`
	Bans                 uint64                 `json:"bans"`
	Unbans               uint64                 `json:"unbans"`
	PeakRefused          Peak                   `json:"peak_refused"`
	PeakAdmitted         Peak                   `json:"peak_admitted"`
	Attackers            int                    `json:"attackers"` // offending addresses
	TopNetworks          []NetworkSummary       `json:"top_networks"`
	Timeline             []shield.TimelinePoint `json:"timeline"`
	// WorstNetworks are the lowest reputation scores of networks now,
	// with their parts (set by the caller; none when unknown).
	WorstNetworks []shield.Score `json:"worst_networks,omitempty"`
}

// Attack builds the attack report of snap.
func Attack(snap shield.HistorySnapshot, opts AttackOptions) *AttackReport {
	if opts.Top <= 0 {
		opts.Top = 10
	}
	if opts.Hostname == "" {
		opts.Hostname = "localhost"
	}
	r := &AttackReport{Hostname: opts.Hostname, Since: snap.Since.UTC(), Now: snap.Now.UTC(), Step: snap.Step,
		RefusedByAction: map[string]uint64{}, RefusedBySource: map[string]uint64{}, Events: map[string]uint64{},
		BansByReason: map[string]uint64{}, OperatorBansByReason: map[string]uint64{}, Timeline: snap.Timeline}
	for _, p := range snap.Timeline {
		r.Admitted += p.Admitted
		r.AdmittedKnownGood += p.AdmittedKnownGood
		refused := p.RefusedTotal()
		r.Refused += refused
		for k, v := range p.Refused {
			r.RefusedByAction[k] += v
		}
		for k, v := range p.RefusedBySource {
			r.RefusedBySource[k] += v
		}
		for k, v := range p.Events {
			r.Events[k] += v
		}
		r.Bans += p.Bans
		r.Unbans += p.Unbans
		if refused > r.PeakRefused.Count {
			r.PeakRefused = Peak{p.Start, refused}
		}
		if p.Admitted > r.PeakAdmitted.Count {
			r.PeakAdmitted = Peak{p.Start, p.Admitted}
		}
	}
	for _, b := range snap.Bans {
		switch {
		case b.Kind != "ban":
		case b.Manual:
			r.OperatorBans++
			reason := b.Reason
			if reason == "manual" { // agua block without -reason
				reason = "no reason given"
			}
			r.OperatorBansByReason[reason]++
		default:
			r.BansByReason[b.Reason]++
		}
	}
	// The attack report counts everything the shield refused, rules and
	// limits included: the operator's view, not an abuse desk's.
	nets := networks(snap, sizeOr(opts.Prefix4, 32, 24), sizeOr(opts.Prefix6, 128, 48), func(*Offender) bool { return true })
	for _, n := range nets {
		r.Attackers += len(n.Offenders)
	}
	for _, n := range nets[:min(opts.Top, len(nets))] {
		ns := NetworkSummary{Prefix: n.Prefix.String(), Addresses: len(n.Offenders), Offences: n.Offences(), First: n.First(), Last: n.Last()}
		seen := map[string]bool{}
		for _, o := range n.Offenders {
			ns.Refused += o.Refused
			for _, t := range o.tags() {
				if !seen[t] {
					seen[t] = true
					ns.Activities = append(ns.Activities, t)
				}
			}
		}
		r.TopNetworks = append(r.TopNetworks, ns)
	}
	return r
}

// WriteJSON writes the report as JSON.
func (r *AttackReport) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// sortedCounts lists a count map, largest first.
func sortedCounts(m map[string]uint64) string {
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, func(a, b string) int {
		if c := cmp.Compare(m[b], m[a]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	var parts []string
	for _, k := range keys {
		if m[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func perSecond(n uint64, step time.Duration) string {
	if step <= 0 {
		step = time.Minute
	}
	return fmt.Sprintf("%.1f/s", float64(n)/step.Seconds())
}

// WriteText writes the report for a person.
func (r *AttackReport) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "Attack report for %s\n", r.Hostname)
	fmt.Fprintf(w, "Period: %s to %s (UTC)\n\n", utc(r.Since), utc(r.Now))

	fmt.Fprintf(w, "Summary\n")
	// A dry run's "would block" is no refusal: not in the count, nor in
	// its parts, but on a line of its own.
	fmt.Fprintf(w, "  connections refused:  %d (%s)\n", r.Refused, sortedCounts(without(r.RefusedByAction, "would_block")))
	if n := r.RefusedByAction["would_block"]; n > 0 {
		fmt.Fprintf(w, "  dry run:              %d served that a rule or limit in dry run would have refused\n", n)
	}
	fmt.Fprintf(w, "  connections admitted: %d, of which from known-good clients: %d\n", r.Admitted, r.AdmittedKnownGood)
	if r.PeakRefused.Count > 0 {
		fmt.Fprintf(w, "  peak refused:         %d per %s at %s (%s)\n", r.PeakRefused.Count, r.Step, utc(r.PeakRefused.At), perSecond(r.PeakRefused.Count, r.Step))
	}
	if r.PeakAdmitted.Count > 0 {
		fmt.Fprintf(w, "  peak admitted:        %d per %s at %s (%s)\n", r.PeakAdmitted.Count, r.Step, utc(r.PeakAdmitted.At), perSecond(r.PeakAdmitted.Count, r.Step))
	}
	fmt.Fprintf(w, "  offending addresses:  %d\n\n", r.Attackers)

	fmt.Fprintf(w, "What the shield did\n")
	fmt.Fprintf(w, "  refusals by source:   %s\n", sortedCounts(r.RefusedBySource))
	fmt.Fprintf(w, "  bans issued:          %d; lifted or expired: %d\n", r.Bans, r.Unbans)
	var byShield uint64
	for _, n := range r.BansByReason {
		byShield += n
	}
	if byShield > 0 || r.OperatorBans == 0 {
		fmt.Fprintf(w, "    by the shield:      %d (%s)\n", byShield, sortedCounts(r.BansByReason))
	}
	if r.OperatorBans > 0 {
		fmt.Fprintf(w, "    by the operator:    %d (%s)\n", r.OperatorBans, sortedCounts(r.OperatorBansByReason))
	}
	fmt.Fprintf(w, "  reported behaviour:   %s\n\n", sortedCounts(without(r.Events, "auth_success", "message", "recipient")))

	fmt.Fprintf(w, "Legitimate traffic served\n")
	fmt.Fprintf(w, "  connections of known-good clients: %d\n", r.AdmittedKnownGood)
	fmt.Fprintf(w, "  successful logins:                 %d\n", r.Events["auth_success"])
	fmt.Fprintf(w, "  messages accepted:                 %d (recipients: %d)\n\n", r.Events["message"], r.Events["recipient"])

	fmt.Fprintf(w, "Top offending networks\n")
	if len(r.TopNetworks) == 0 {
		fmt.Fprintf(w, "  none\n")
	} else {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  network\taddresses\toffences\trefused\tfirst (UTC)\tlast (UTC)\twhat")
		for _, n := range r.TopNetworks {
			fmt.Fprintf(tw, "  %s\t%d\t%d\t%d\t%s\t%s\t%s\n", n.Prefix, n.Addresses, n.Offences, n.Refused, utc(n.First), utc(n.Last), strings.Join(n.Activities, ", "))
		}
		tw.Flush()
	}

	if len(r.WorstNetworks) > 0 {
		fmt.Fprintf(w, "\nWorst reputation now (networks; score and its parts)\n")
		for _, s := range r.WorstNetworks {
			fmt.Fprintf(w, "  %-20s %s\n", s.Prefix, s.Line())
		}
	}

	fmt.Fprintf(w, "\nTimeline (UTC, per %s; steps without activity left out)\n", r.Step)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "  start\tadmitted\tknown-good\trefused\treject\tdrop\ttarpit\tauth fail\tunknown rcpt\tproto err\tpregreet\tmessages\tbans\t")
	for _, p := range r.Timeline {
		if p.Admitted == 0 && p.RefusedTotal() == 0 && len(p.Events) == 0 && p.Bans == 0 && p.Unbans == 0 {
			continue
		}
		fmt.Fprintf(tw, "  %s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", p.Start.UTC().Format("2006-01-02 15:04"),
			p.Admitted, p.AdmittedKnownGood, p.RefusedTotal(), p.Refused["reject"], p.Refused["drop"], p.Refused["tarpit"],
			p.Events["auth_failure"], p.Events["unknown_recipient"], p.Events["protocol_error"], p.Events["pregreet"], p.Events["message"], p.Bans)
	}
	return tw.Flush()
}

func without(m map[string]uint64, keys ...string) map[string]uint64 {
	out := maps.Clone(m)
	for _, k := range keys {
		delete(out, k)
	}
	return out
}
