package bench

import (
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
)

// Legitimate clients are strangers: every session from its own address,
// half of them (returning) the same in every run, half fresh, none
// 127.0.0.1, all inside the pool, spread over its /16s.
func TestLegitSources(t *testing.T) {
	cfg := Config{Legit: 20, Attacks: []string{"flood"}}
	cfg.setDefaults()
	if err := checkLegitSources(&cfg); err != nil {
		t.Fatal(err)
	}
	run := func(seed uint64) (map[netip.Addr]bool, LegitSources) {
		ls := newLegitSources(&cfg, rand.New(rand.NewPCG(seed, seed)))
		got := map[netip.Addr]bool{}
		for session := range 30 {
			for i := range cfg.Legit {
				a := ls.addr(i, session)
				if a == loopback1 || !cfg.LegitPool.Contains(a) || got[a] || a.As4()[3] == 0 || a.As4()[3] == 255 {
					t.Fatalf("client %d session %d: %s", i, session, a)
				}
				got[a] = true
			}
		}
		return got, ls.report()
	}
	a1, u1 := run(1)
	_, u2 := run(2)
	if u1.ReturningCount != 300 || u1.FreshCount != 300 || len(u1.Returning) != 300 {
		t.Fatalf("%d returning, %d fresh", u1.ReturningCount, u1.FreshCount)
	}
	if strings.Join(u1.Returning, " ") != strings.Join(u2.Returning, " ") {
		t.Errorf("returning addresses differ between runs")
	}
	for _, f := range u2.Fresh {
		if a1[netip.MustParseAddr(f)] {
			t.Errorf("fresh address %s used in both runs", f)
		}
	}
	nets := map[netip.Prefix]bool{}
	for a := range a1 {
		p, _ := a.Prefix(16)
		nets[p] = true
	}
	if len(nets) < 64 {
		t.Errorf("600 sessions from %d /16s, want them spread", len(nets))
	}
	for _, bad := range []Config{
		{Legit: 1, LegitSrc: []netip.Addr{loopback1}},
		{Legit: 1, LegitPool: netip.MustParsePrefix("127.0.0.0/8")},
		{Legit: 1, LegitPool: netip.MustParsePrefix("127.64.0.0/10"), Attacks: []string{"flood"}, AttackSrc: netip.MustParsePrefix("127.66.0.0/16")},
		{Legit: 1, LegitPool: netip.MustParsePrefix("10.0.0.0/8")},
	} {
		bad.setDefaults()
		if err := checkLegitSources(&bad); err == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
}

// A botnet's consecutive attackers are spread over its networks.
func TestAddrPoolSpread(t *testing.T) {
	p := newAddrPool(netip.MustParsePrefix("127.64.0.0/10"))
	nets := map[netip.Prefix]bool{}
	for range 64 {
		a := p.get()
		if !netip.MustParsePrefix("127.64.0.0/10").Contains(a) {
			t.Fatalf("%s outside the pool", a)
		}
		n, _ := a.Prefix(16)
		nets[n] = true
	}
	if len(nets) != 64 {
		t.Fatalf("64 consecutive attackers in %d /16s of 64", len(nets))
	}
	one := newAddrPool(netip.MustParsePrefix("127.66.0.7/32"))
	if a := one.get(); a != netip.MustParseAddr("127.66.0.7") {
		t.Fatalf("single address pool gave %s", a)
	}
}
