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
