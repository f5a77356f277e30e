package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"time"

	"github.com/agua-mail/agua/internal/admin"
	"github.com/agua-mail/agua/internal/report"
	"github.com/agua-mail/agua/internal/server"
	"github.com/agua-mail/agua/shield"
)

const reportUsage = "report abuse [-since 24h] [-format text|csv|xarf] [-prefix4 24] [-prefix6 48] [-per4 16] [-per6 48] [-min 10] [-resolver HOST:PORT] [-cluster]\n" +
	"       report attack [-since 1h] [-step 1m] [-format text|json] [-cluster]"

// cmdReport prints an abuse or attack report from the shield's event
// history: from the running server, or from the state folder when it is
// stopped.
func cmdReport(e *env) error {
	if len(e.args) == 0 {
		return usagef("%s", reportUsage)
	}
	// Flags may come first (agua report -config FILE attack): the kind is
	// the first argument that names one.
	kind := e.args[0]
	for i, a := range e.args {
		if a == "abuse" || a == "attack" {
			kind = a
			e.args = append(e.args[:i:i], e.args[i+1:]...)
			break
		}
	}
	if kind != "abuse" && kind != "attack" {
		e.args = e.args[1:]
	}
	switch kind {
	case "abuse":
		return reportAbuse(e)
	case "attack":
		return reportAttack(e)
	}
	return usagef("unknown report %q: %s", kind, reportUsage)
}

// history fetches the history since the given period back from now;
// with cluster, merged with the bans every node of the cluster made.
func (e *env) history(since string, step time.Duration, cluster bool) (shield.HistorySnapshot, error) {
	now := time.Now()
	from, err := admin.ParseSince(since, now)
	if err != nil {
		return shield.HistorySnapshot{}, usagef("-since %q: use a duration (24h) or an RFC 3339 time", since)
	}
	var snap shield.HistorySnapshot
	c := admin.NewClient(server.AdminSocket(e.cfg))
	// Reports need only the addresses that misbehaved.
	q := url.Values{"since": {from.UTC().Format(time.RFC3339)}, "step": {step.String()}, "offending": {"true"}}
	if cluster {
		q.Set("cluster", "true")
	}
	err = c.Do("GET", "/v1/history?"+q.Encode(), nil, &snap)
	if errors.Is(err, admin.ErrNotRunning) && cluster {
		return snap, errors.New("-cluster reads the cluster's ban log through the running server: agua is not running")
	}
	if errors.Is(err, admin.ErrNotRunning) {
		// The server is stopped: read what it saved.
		dir := server.ShieldStateDir(e.cfg)
		snap, err := shield.ReadHistory(dir, e.cfg.Shield, from, step, now)
		if errors.Is(err, fs.ErrNotExist) {
			return snap, fmt.Errorf("agua is not running and %s holds no shield history: %s", dir, notRunHere)
		}
		if err != nil {
			return snap, fmt.Errorf("agua is not running and %s holds no shield history: %w", dir, err)
		}
		return snap, nil
	}
	return snap, err
}

func reportAbuse(e *env) error {
	since := e.flags.String("since", "24h", "period: a duration back from now, or an RFC 3339 time")
	format := e.flags.String("format", "text", "text (one email per abuse contact), csv (one row per address) or xarf (XARF v4 JSON)")
	p4 := e.flags.Int("prefix4", 24, "IPv4 network size that groups addresses")
	p6 := e.flags.Int("prefix6", 48, "IPv6 network size that groups addresses")
	per4 := e.flags.Int("per4", 16, "IPv4 network size that gets one email when reverse DNS names no owner (its -prefix4 networks listed inside)")
	per6 := e.flags.Int("per6", 48, "IPv6 network size that gets one email when reverse DNS names no owner")
	minimum := e.flags.Uint64("min", 10, "offences (failed logins, unknown recipients, protocol errors, pregreet, connections while banned for them) an address needs to be reported, unless it was banned")
	resolver := e.flags.String("resolver", "", "DNS server (HOST:PORT) for reverse lookups of the offenders; empty: no lookups")
	contact := e.flags.String("contact", "", "reply address named in the reports (default postmaster@HOSTNAME)")
	cluster := e.flags.Bool("cluster", false, "cover the bans every node of the cluster made ([cluster] redis), not only this node's")
	pos, err := e.parse()
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("%s", reportUsage)
	}
	if *p4 < 8 || *p4 > 32 || *p6 < 16 || *p6 > 128 {
		return usagef("-prefix4 must be 8..32 and -prefix6 16..128")
	}
	if *per4 < 8 || *per4 > *p4 || *per6 < 16 || *per6 > *p6 {
		return usagef("-per4 must be 8..-prefix4 and -per6 16..-prefix6")
	}
	var write func(*report.AbuseReport) error
	switch *format {
	case "text":
		write = func(r *report.AbuseReport) error { return r.WriteText(e.stdout) }
	case "csv":
		write = func(r *report.AbuseReport) error { return r.WriteCSV(e.stdout) }
	case "xarf":
		write = func(r *report.AbuseReport) error { return r.WriteXARF(e.stdout) }
	default:
		return usagef("-format must be text, csv or xarf")
	}
	if *resolver != "" {
		if _, port, err := net.SplitHostPort(*resolver); err != nil || port == "" {
			return usagef("-resolver %q: want HOST:PORT of a DNS server, e.g. 127.0.0.1:53", *resolver)
		}
	}
	snap, err := e.history(*since, time.Minute, *cluster)
	if err != nil {
		return err
	}
	opts := report.AbuseOptions{Hostname: e.cfg.Hostname, Contact: *contact, Prefix4: *p4, Prefix6: *p6,
		Contact4: *per4, Contact6: *per6, Min: max(*minimum, 1)}
	if *resolver != "" {
		opts.Resolver = &report.Resolver{Server: *resolver, Timeout: 2 * time.Second, Max: 200}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return write(report.Abuse(ctx, snap, opts))
}

func reportAttack(e *env) error {
	since := e.flags.String("since", "1h", "period: a duration back from now, or an RFC 3339 time")
	step := e.flags.Duration("step", time.Minute, "timeline step (whole minutes)")
	format := e.flags.String("format", "text", "text or json")
	top := e.flags.Int("top", 10, "offending networks listed")
	cluster := e.flags.Bool("cluster", false, "cover the bans every node of the cluster made ([cluster] redis), not only this node's")
	pos, err := e.parse()
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("%s", reportUsage)
	}
	if *format != "text" && *format != "json" {
		return usagef("-format must be text or json")
	}
	if *step < time.Minute {
		return usagef("-step must be at least 1m")
	}
	snap, err := e.history(*since, *step, *cluster)
	if err != nil {
		return err
	}
	r := report.Attack(snap, report.AttackOptions{Hostname: e.cfg.Hostname, Top: *top})
	r.WorstNetworks = e.worstNetworks(*top)
	if *format == "json" {
		return r.WriteJSON(e.stdout)
	}
	return r.WriteText(e.stdout)
}

// worstNetworks returns the n lowest reputation scores of networks: from
// the running server (this node's), or from the state folder when it is
// stopped; none when neither answers (the report does without).
func (e *env) worstNetworks(n int) []shield.Score {
	var live admin.Live
	err := admin.NewClient(server.AdminSocket(e.cfg)).Do("GET", "/v1/live", nil, &live)
	if errors.Is(err, admin.ErrNotRunning) {
		_, nets, err := shield.ReadWorstScores(server.ShieldStateDir(e.cfg), e.cfg.Shield, n, time.Now())
		if err != nil {
			return nil
		}
		return nets
	}
	if err != nil {
		return nil
	}
	return live.WorstNets[:min(n, len(live.WorstNets))]
}
