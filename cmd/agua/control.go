package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/agua-mail/agua/internal/admin"
	"github.com/agua-mail/agua/internal/dnsbl"
	"github.com/agua-mail/agua/internal/server"
	"github.com/agua-mail/agua/shield"
)

// client parses the verb's flags and returns an admin API client for the
// server that uses the same config/data folder.
func (e *env) client() ([]string, *admin.Client, error) {
	pos, err := e.parse()
	if err != nil {
		return nil, nil, err
	}
	return pos, admin.NewClient(server.AdminSocket(e.cfg)), nil
}

func printJSON(e *env, v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func cmdStatus(e *env) error {
	_, c, err := e.client()
	if err != nil {
		return err
	}
	var st json.RawMessage
	if err := c.Do("GET", "/v1/status", nil, &st); err != nil {
		return err
	}
	return printJSON(e, st)
}

func cmdReload(e *env) error {
	_, c, err := e.client()
	if err != nil {
		return err
	}
	var out admin.ReloadResult
	if err := c.Do("POST", "/v1/reload", nil, &out); err != nil {
		if errors.Is(err, admin.ErrNotRunning) {
			return err // nothing is in force to keep: say only that
		}
		return fmt.Errorf("reload refused, the previous settings stay in force:\n%w", err)
	}
	fmt.Fprintln(e.stdout, out.Result)
	if len(out.RestartPending) > 0 {
		fmt.Fprintf(e.stdout, "changed but applied only at the next restart: %s ([shield], [dnsbl] and [greylist] apply live)\n",
			strings.Join(out.RestartPending, ", "))
	}
	for _, f := range out.Files {
		if f.Missing {
			return fmt.Errorf("rule file %s does not exist: none of its rules are in force", f.Name)
		}
	}
	return nil
}

func cmdBlock(e *env) error {
	var req admin.BanRequest
	e.flags.StringVar(&req.For, "for", "24h", "how long the block lasts")
	e.flags.StringVar(&req.Reason, "reason", "manual", "why (shown in bans and why)")
	e.flags.StringVar(&req.Action, "action", "reject", "reject, drop or tarpit")
	e.flags.BoolVar(&req.Force, "force", false, "block a prefix wider than admin.widest_block4/6 (/8, /32)")
	pos, c, err := e.client()
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("block CIDR [-for 24h] [-reason TEXT] [-action reject|drop|tarpit] [-force]")
	}
	req.Prefix = pos[0]
	var out map[string]string
	if err := c.Do("POST", "/v1/bans", req, &out); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, out["result"])
	return nil
}

func cmdUnblock(e *env) error {
	reason := e.flags.String("reason", "", "lift every ban with this reason (e.g. auth_failure)")
	all := e.flags.Bool("all", false, "lift every ban")
	pos, c, err := e.client()
	if err != nil {
		return err
	}
	q := url.Values{}
	switch {
	case *all && len(pos) == 0 && *reason == "":
		q.Set("all", "true")
	case *reason != "" && len(pos) == 0:
		q.Set("reason", *reason)
	case len(pos) == 1 && !*all && *reason == "":
		q.Set("prefix", pos[0])
	default:
		return usagef("unblock CIDR | -reason TEXT | -all")
	}
	var out map[string]any
	if err := c.Do("DELETE", "/v1/bans?"+q.Encode(), nil, &out); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, out["result"])
	return nil
}

// notRunHere ends the message of a verb that reads a stopped server's
// data folder and finds nothing there.
const notRunHere = "has agua run with this data folder? Pass the server's -config or -data"

func cmdBans(e *env) error {
	asJSON := e.flags.Bool("json", false, "print JSON")
	_, c, err := e.client()
	if err != nil {
		return err
	}
	var bans []shield.BanInfo
	stopped := false
	if err = c.Do("GET", "/v1/bans", nil, &bans); errors.Is(err, admin.ErrNotRunning) {
		// Stopped: the bans it saved, which it restores at its next start.
		dir := server.ShieldStateDir(e.cfg)
		if bans, err = shield.ReadBans(dir, time.Now()); errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("agua is not running, and %s holds no saved bans: %s", dir, notRunHere)
		} else if err != nil {
			return fmt.Errorf("agua is not running, and no saved bans could be read: %w", err)
		}
		stopped = true
	}
	if err != nil {
		return err
	}
	if *asJSON {
		if bans == nil {
			bans = []shield.BanInfo{} // [], not null: scripts iterate over it
		}
		return printJSON(e, bans)
	}
	if stopped {
		fmt.Fprintf(e.stdout, "agua is not running: bans saved in %s (restored at the next start)\n", server.ShieldStateDir(e.cfg))
	}
	if len(bans) == 0 {
		fmt.Fprintln(e.stdout, "no bans")
		return nil
	}
	// A cluster's bans say which node issued them.
	nodes := false
	for _, b := range bans {
		nodes = nodes || b.Node != ""
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	head := "PREFIX\tREASON\tACTION\tCOUNT\tHITS\tEXPIRES"
	if nodes {
		head += "\tNODE"
	}
	fmt.Fprintln(tw, head)
	for _, b := range bans {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s UTC (in %s)", b.Prefix, b.Reason, b.Action, b.Count, b.Hits,
			b.Expires.UTC().Format(time.DateTime), time.Until(b.Expires).Round(time.Second))
		if nodes {
			fmt.Fprintf(tw, "\t%s", cmp.Or(b.Node, "-"))
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

func cmdWhy(e *env) error {
	asJSON := e.flags.Bool("json", false, "print JSON")
	pos, c, err := e.client()
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("why IP")
	}
	var ex json.RawMessage
	if err := c.Do("GET", "/v1/why?ip="+url.QueryEscape(pos[0]), nil, &ex); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(e, ex)
	}
	var x admin.WhyResult
	if err := json.Unmarshal(ex, &x); err != nil {
		return err
	}
	fmt.Fprint(e.stdout, formatWhy(x))
	return nil
}

// formatWhy renders an explanation for a person at a terminal.
func formatWhy(x admin.WhyResult) string {
	var b strings.Builder
	verdict := "served"
	if x.Decision.Action != shield.Allow {
		verdict = fmt.Sprintf("%s (%s) by %s", x.Decision.Action, x.Decision.Reason, x.Decision.Source)
	}
	fmt.Fprintf(&b, "%s: %s\n", x.Addr, verdict)
	if x.Decision.DryRun {
		fmt.Fprintf(&b, "  dry run: would be blocked by %s\n", x.Decision.Source)
	}
	if r := x.Rule; r != nil {
		kind := "deny"
		if r.Allow {
			kind = "allow"
		}
		fmt.Fprintf(&b, "  rule:      %s %s (%s) at %s: %q\n", kind, r.Prefix, r.Action, r.Source, r.Text)
	} else {
		b.WriteString("  rule:      none matches\n")
	}
	if bn := x.Ban; bn != nil {
		fmt.Fprintf(&b, "  ban:       %s for %s (%s), expires %s UTC (in %s), ban #%d, %d refused since\n",
			bn.Prefix, bn.Reason, bn.Action, bn.Expires.UTC().Format(time.DateTime), time.Until(bn.Expires).Round(time.Second), bn.Count, bn.Hits)
	} else {
		b.WriteString("  ban:       none\n")
	}
	fmt.Fprintf(&b, "  known-good: %v   allowlisted: %v   trusted proxy: %v   lockdown: %v\n", x.KnownGood, x.Allowlisted, x.TrustedProxy, x.Lockdown)
	c := x.Counters
	fmt.Fprintf(&b, "  counters:  %d conn(s) from this address, %d from %s; rate tokens left %.1f (address), %.1f (prefix)\n",
		c.IPConns, c.PrefixConns, c.Prefix, c.IPTokens, c.PrefixTokens)
	for _, ev := range slices.Sorted(maps.Keys(c.Events)) {
		n := c.Events[ev]
		th, ok := x.Thresholds[ev]
		switch {
		case !ok: // a server without thresholds in its answer
			fmt.Fprintf(&b, "  events:    %s = %d in the current window\n", ev, n)
		case th.DryRun:
			fmt.Fprintf(&b, "  events:    %s = %d within %s (dry run: %d would ban)\n", ev, n, th.Window, th.Count)
		default:
			fmt.Fprintf(&b, "  events:    %s = %d within %s (%d ban the address)\n", ev, n, th.Window, th.Count)
		}
	}
	formatReputation(&b, &x.Reputation)
	if d := x.DNSBL; d != nil {
		formatDNSBL(&b, d)
	}
	return b.String()
}

// formatReputation renders the reputation score of an address and of its
// network, each with its parts, and what they make of the client.
func formatReputation(b *strings.Builder, r *shield.ReputationInfo) {
	why := fmt.Sprintf("trusted at or above %g, untrusted at or below %g (network %g)", r.Trusted, r.Untrusted, r.NetworkUntrusted)
	switch {
	case r.Standing == shield.Trusted:
		why = fmt.Sprintf("address score at or above %g: counts as known-good for capacity", r.Trusted)
	case r.Standing == shield.Untrusted && r.Address.Score <= r.Untrusted:
		why = fmt.Sprintf("address score at or below %g: no reserved share, evicted first", r.Untrusted)
	case r.Standing == shield.Untrusted:
		why = fmt.Sprintf("network score at or below %g: no reserved share, evicted first", r.NetworkUntrusted)
	}
	lockdown := "no"
	if r.LockdownServed {
		lockdown = "yes"
	}
	fmt.Fprintf(b, "  reputation: %s (%s); served in lockdown: %s (at or above %g); half-life %s\n",
		r.Standing, why, lockdown, r.Lockdown, r.HalfLife)
	fmt.Fprintf(b, "    address %-20s %s\n", r.Address.Prefix, r.Address.Line())
	fmt.Fprintf(b, "    network %-20s %s\n", r.Network.Prefix, r.Network.Line())
}

// formatDNSBL renders the [dnsbl] score of an address, one line per list.
func formatDNSBL(b *strings.Builder, d *dnsbl.Result) {
	verdict := "not listed"
	switch {
	case !d.Done:
		verdict = "lookups not finished (served as not listed)"
	case d.Allowlisted:
		verdict = "allowlisted"
	case d.Listed:
		verdict = "listed: refused before the greeting (" + d.Reason() + ")"
	}
	fmt.Fprintf(b, "  dnsbl:     score %d, %s\n", d.Score, verdict)
	for _, a := range d.Answers {
		answer := "not listed"
		switch {
		case a.Error != "":
			answer = "no answer (" + a.Error + "), counted as not listed"
		case a.Listed:
			answer = fmt.Sprintf("listed %v, weight %+d", a.Records, a.Weight)
		case len(a.Records) > 0:
			answer = fmt.Sprintf("answer %v outside the pattern, not counted", a.Records)
		}
		fmt.Fprintf(b, "    %-24s %s\n", a.List, answer)
	}
}

func cmdLockdown(e *env) error {
	pos, c, err := e.client()
	if err != nil {
		return err
	}
	var st admin.LockdownRequest
	switch {
	case len(pos) == 0:
		if err := c.Do("GET", "/v1/lockdown", nil, &st); err != nil {
			return err
		}
	case len(pos) == 1 && (pos[0] == "on" || pos[0] == "off"):
		if err := c.Do("POST", "/v1/lockdown", admin.LockdownRequest{On: pos[0] == "on"}, &st); err != nil {
			return err
		}
	default:
		return usagef("lockdown [on|off]")
	}
	if st.On {
		fmt.Fprintln(e.stdout, "lockdown: on (only allowlisted and known-good clients are served; others are dropped)")
	} else {
		fmt.Fprintln(e.stdout, "lockdown: off")
	}
	return nil
}
