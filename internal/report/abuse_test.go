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
// and IPv6 network sizes; capacity and rate-limit refusals, dry runs and the
// operator's own blocks are not held against anyone; -min filters the rest
// unless there was a ban.
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
		"2001:db8:1::/48=2001:db8:1:2::7,2001:db8:1:3::9",
		"198.51.0.0/16=198.51.100.7", // 198.51.100.0/24 was only refused by a rate limit: no abuse
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("networks:\n got %v\nwant %v", got, want)
	}
	if o := r.Networks[0].Offenders[0]; !o.Flood || o.Offences() != 900 || o.tags()[0] != "flood" {
		t.Errorf("flood: %+v", o)
	}
}

// TestAbuseOneEmailPerContact: an attack from many addresses of one /16,
// spread over several /24s, is one email that lists the /24s and counts
// the addresses; a burst refused only by rate limits is in no email; an
// address that came back while banned for its abuse is reported with
// those refusals.
func TestAbuseOneEmailPerContact(t *testing.T) {
	t0 := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	var addrs []shield.AddrHistory
	for i := range 113 {
		a := netip.AddrFrom4([4]byte{203, 0, byte(i % 3), byte(10 + i)})
		addrs = append(addrs, shield.AddrHistory{Addr: netip.PrefixFrom(a, 32), First: t0, Last: t0,
			Events: map[string]uint64{"auth_failure": 12}})
	}
	addrs = append(addrs,
		shield.AddrHistory{Addr: netip.MustParsePrefix("198.51.100.9/32"), First: t0, Last: t0,
			Refused: []shield.Refusal{{Source: "limit:per_ip_rate", Action: shield.Reject, Count: 5000}}},
		shield.AddrHistory{Addr: netip.MustParsePrefix("192.0.2.5/32"), First: t0, Last: t0,
			Events:  map[string]uint64{"unknown_recipient": 25},
			Refused: []shield.Refusal{{Source: "ban:unknown_recipient", Action: shield.Reject, Count: 40}, {Source: "limit:per_ip_rate", Count: 7}}})
	r := Abuse(context.Background(), shield.HistorySnapshot{Now: t0.Add(time.Minute), Since: t0, Addrs: addrs},
		AbuseOptions{Hostname: "mx.test"})
	var b strings.Builder
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	txt := b.String()
	if n := strings.Count(txt, "\nFrom: ") + 1; n != 2 || len(r.Contacts) != 2 {
		t.Fatalf("%d emails (%d contacts), want 2 (203.0.0.0/16 and 192.0.0.0/16):\n%s", n, len(r.Contacts), txt)
	}
	for _, want := range []string{
		"To: the abuse contact of 203.0.0.0/16 (whois 203.0.0.0)",
		"113 addresses in 3 networks of yours (203.0.0.0/24, 203.0.1.0/24, 203.0.2.0/24)\nabused it",
		"1 address in 1 network of yours (192.0.2.0/24)\nabused it",
		"coming back while banned for it",
	} {
		if !strings.Contains(txt, want) {
			t.Errorf("missing %q in:\n%s", want, txt)
		}
	}
	if strings.Contains(txt, "198.51.100.9") {
		t.Errorf("an address refused only by a rate limit was reported:\n%s", txt)
	}
	for _, n := range r.Networks {
		for _, o := range n.Offenders {
			if o.Addr.Addr() == netip.MustParseAddr("192.0.2.5") && (o.Banned != 40 || o.abuse() != 65) {
				t.Errorf("192.0.2.5: banned %d, abuse %d; want 40, 65", o.Banned, o.abuse())
			}
		}
	}
}
