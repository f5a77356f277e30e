package report

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/agua-mail/agua/shield"
)

// TestAbuseSelectsAndGroups: addresses are grouped by the configured IPv4
// and IPv6 network sizes; a network the shield counted as a whole joins its
// group; capacity refusals, dry runs and the operator's own blocks are not
// held against anyone; -min filters the rest unless there was a ban.
func TestAbuseSelectsAndGroups(t *testing.T) {
	t0 := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	p := netip.MustParsePrefix
	snap := shield.HistorySnapshot{Now: t0.Add(time.Hour), Since: t0, Addrs: []shield.AddrHistory{
		{Addr: p("2001:db8:1:2::7/128"), First: t0, Last: t0, Events: map[string]uint64{"auth_failure": 50}},
		{Addr: p("2001:db8:1:3::9/128"), First: t0, Last: t0, Events: map[string]uint64{"protocol_error": 12}},
		{Addr: p("198.51.100.0/24"), First: t0, Last: t0, Refused: []shield.Refusal{{Source: "limit:per_prefix_rate", Action: shield.Reject, Count: 400}}},
		{Addr: p("198.51.100.7/32"), First: t0, Last: t0, Events: map[string]uint64{"unknown_recipient": 3},
			Bans: []shield.BanEvent{{Time: t0, Kind: "ban", Prefix: p("198.51.100.7/32"), Reason: "unknown_recipient"}}},
		{Addr: p("192.0.2.1/32"), First: t0, Last: t0, Refused: []shield.Refusal{{Source: "capacity", Action: shield.Reject, Count: 1000},
			{Source: "shield.rules:3", Action: shield.Drop, DryRun: true, Count: 1000}}},
		{Addr: p("192.0.2.2/32"), First: t0, Last: t0, Events: map[string]uint64{"auth_failure": 2}},
		{Addr: p("203.0.113.0/24"), First: t0, Last: t0, Refused: []shield.Refusal{{Source: "ban:scanner", Action: shield.Drop, Count: 5}},
			Bans: []shield.BanEvent{{Time: t0, Kind: "ban", Prefix: p("203.0.113.0/24"), Reason: "scanner", Manual: true}}},
		{Addr: p("192.0.2.3/32"), First: t0, Last: t0, Events: map[string]uint64{"message": 900},
			Bans: []shield.BanEvent{{Time: t0, Kind: "ban", Prefix: p("192.0.2.3/32"), Reason: "message"}}},
	}}
	r := Abuse(context.Background(), snap, AbuseOptions{Hostname: "mx.test", Prefix4: 16, Prefix6: 48})
	var got []string
	for _, n := range r.Networks {
		var addrs []string
		for _, o := range n.Offenders {
			addrs = append(addrs, addrString(o))
		}
		got = append(got, n.Prefix.String()+"="+strings.Join(addrs, ","))
	}
	want := []string{
		"192.0.0.0/16=192.0.2.3",
		"198.51.0.0/16=198.51.100.0/24,198.51.100.7",
		"2001:db8:1::/48=2001:db8:1:2::7,2001:db8:1:3::9",
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("networks:\n got %v\nwant %v", got, want)
	}
	if o := r.Networks[0].Offenders[0]; !o.Flood || o.Offences() != 900 || o.tags()[0] != "flood" {
		t.Errorf("flood: %+v", o)
	}
}
