package main

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/agua-mail/agua/internal/admin"
	"github.com/agua-mail/agua/internal/dnsbl"
	"github.com/agua-mail/agua/shield"
)

// agua why prints each [dnsbl] list's answer and the score.
func TestFormatWhyDNSBL(t *testing.T) {
	a := netip.MustParseAddr("192.0.2.5")
	x := admin.WhyResult{Explanation: shield.Explanation{Addr: a}, DNSBL: &dnsbl.Result{
		Addr: a, Done: true, Score: 3, Listed: true, Answers: []dnsbl.Answer{
			{List: "zen.example", Weight: 3, Listed: true, Records: []netip.Addr{netip.MustParseAddr("127.0.0.2")}},
			{List: "slow.example", Weight: 2, Error: "A 5.2.0.192.slow.example: resolver: temporary failure"},
			{List: "wl.example", Weight: -2},
		}}}
	out := formatWhy(x)
	for _, want := range []string{
		"dnsbl:     score 3, listed: refused before the greeting (dnsbl:zen.example)",
		"zen.example              listed [127.0.0.2], weight +3",
		"slow.example             no answer (A 5.2.0.192.slow.example: resolver: temporary failure), counted as not listed",
		"wl.example               not listed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
}

// agua why prints the reputation of the address and of its network, each
// with its parts, worst first, and what they make of the client.
func TestFormatWhyReputation(t *testing.T) {
	a := netip.MustParseAddr("192.0.2.5")
	x := admin.WhyResult{Explanation: shield.Explanation{Addr: a, Reputation: shield.ReputationInfo{
		Address:  shield.Score{Prefix: netip.MustParsePrefix("192.0.2.5/32"), Score: -7.5, Parts: map[string]float64{"ban": -5, "protocol_error": -3, "message": 0.5}},
		Network:  shield.Score{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Score: -12, Parts: map[string]float64{"ban": -5, "protocol_error": -7}},
		Standing: shield.Untrusted, HalfLife: "24h0m0s", Trusted: 5, Untrusted: -5, NetworkUntrusted: -20, Lockdown: 10,
	}}}
	out := formatWhy(x)
	for _, want := range []string{
		"reputation: untrusted (address score at or below -5: no reserved share, evicted first); served in lockdown: no (at or above 10); half-life 24h0m0s",
		"address 192.0.2.5/32         -7.5 (ban -5, protocol_error -3, message +0.5)",
		"network 192.0.2.0/24         -12 (protocol_error -7, ban -5)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
}
