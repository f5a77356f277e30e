package server

import (
	"net/netip"

	"github.com/agua-mail/agua/internal/dnsbl"
)

// dnsblScores gives the shield's reputation score the cached [dnsbl]
// score of each address (shield.ScoreSource, the "dnsbl" part): listing
// lists add their weight, allowlists subtract theirs. Peek never waits; an
// address not looked up yet has no answer.
type dnsblScores struct{ c *dnsbl.Checker }

func (d dnsblScores) PeekScore(addr netip.Addr) (float64, bool) {
	r := d.c.Peek(addr)
	return float64(r.Score), r.Done
}
