package bench

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
)

// Legitimate clients are strangers to the server (issue 13): a real user
// connecting to a hosting provider's server comes from an address the server
// has never seen, not from 127.0.0.1, which agua's default config (and
// Postfix's mynetworks) trusts. By default every session of a legitimate
// client comes from its own address in LegitPool, as users of many networks
// would (one address opening sessions back to back would only measure the
// per-address rate limit):
//
//   - even-numbered clients are "returning": their addresses follow a fixed
//     sequence in the lower half of the pool, the same in every run, so a
//     server that saw an earlier run (the baseline) may know them;
//   - odd-numbered clients are "fresh": each session draws a random address
//     in the upper half, so the server has never seen it.
//
// Both kinds are spread over the pool's /16s and /24s.

// DefaultLegitPool is where legitimate clients come from by default: clear
// of 127.0.0.0/16 (127.0.0.1 and the servers' own addresses) and of the
// attackers' defaults (127.64.0.0/10 holds 127.66.0.0/16).
var DefaultLegitPool = netip.MustParsePrefix("127.128.0.0/9")

// maxListedSources bounds the addresses a report lists per kind.
const maxListedSources = 10_000

// LegitSources says which addresses the legitimate clients used.
type LegitSources struct {
	Pool      string   `json:"pool,omitempty"`      // "" when given as a list (-legit-src)
	Returning []string `json:"returning,omitempty"` // in order of first use, at most maxListedSources
	Fresh     []string `json:"fresh,omitempty"`
	Given     []string `json:"given,omitempty"`
	// Counts of distinct addresses used (the lists may be cut short).
	ReturningCount int `json:"returning_count,omitempty"`
	FreshCount     int `json:"fresh_count,omitempty"`
}

// loopback1 is never a legitimate client.
var loopback1 = netip.MustParseAddr("127.0.0.1")

// checkLegitSources refuses a legitimate client set that holds 127.0.0.1 or
// overlaps the attackers.
func checkLegitSources(cfg *Config) error {
	for _, a := range cfg.LegitSrc {
		if a == loopback1 || !a.IsLoopback() {
			return fmt.Errorf("-legit-src %s: legitimate clients come from loopback addresses other than 127.0.0.1, which servers allowlist (a path real users never take)", a)
		}
	}
	if len(cfg.LegitSrc) > 0 {
		return nil
	}
	p := cfg.LegitPool
	if !p.Addr().Is4() || !p.Addr().IsLoopback() || p.Bits() > 16 {
		return fmt.Errorf("-legit-pool %s: want an IPv4 loopback prefix of /16 or wider", p)
	}
	if p.Contains(loopback1) {
		return fmt.Errorf("-legit-pool %s holds 127.0.0.1, which servers allowlist: pick a pool clear of 127.0.0.0/16", p)
	}
	if len(cfg.Attacks) > 0 && p.Overlaps(cfg.AttackSrc) {
		return fmt.Errorf("-legit-pool %s overlaps -attack-src %s: legitimate clients would share the botnet's networks", p, cfg.AttackSrc)
	}
	return nil
}

// legitSources hands each legitimate session its source address and
// remembers what was used.
type legitSources struct {
	given            []netip.Addr
	returning, fresh *addrPool // the pool's lower and upper halves
	clients          int       // returning clients: ceil(Legit/2)

	mu   sync.Mutex
	rand *rand.Rand
	used map[netip.Addr]bool
	rep  LegitSources
}

func newLegitSources(cfg *Config, r *rand.Rand) *legitSources {
	ls := &legitSources{given: cfg.LegitSrc, rand: r, used: map[netip.Addr]bool{}, clients: (cfg.Legit + 1) / 2}
	if len(cfg.LegitSrc) > 0 {
		for _, a := range cfg.LegitSrc {
			ls.rep.Given = append(ls.rep.Given, a.String())
		}
		return ls
	}
	p := cfg.LegitPool.Masked()
	lower := netip.PrefixFrom(p.Addr(), p.Bits()+1)
	upper := netip.PrefixFrom(ipv4From(ipv4Uint(p.Addr())+1<<(31-p.Bits())), p.Bits()+1)
	ls.returning, ls.fresh = newAddrPool(lower), newAddrPool(upper)
	ls.rep.Pool = p.String()
	return ls
}

// addr returns the source address of client i's session-th session.
func (ls *legitSources) addr(i, session int) netip.Addr {
	if len(ls.given) > 0 {
		return ls.given[i%len(ls.given)]
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	var a netip.Addr
	if i%2 == 0 {
		a = ls.returning.at(uint64(i/2 + session*ls.clients))
		if !ls.used[a] {
			ls.rep.ReturningCount++
			if len(ls.rep.Returning) < maxListedSources {
				ls.rep.Returning = append(ls.rep.Returning, a.String())
			}
		}
	} else {
		for a = ls.fresh.at(ls.rand.Uint64()); ls.used[a]; a = ls.fresh.at(ls.rand.Uint64()) {
		}
		ls.rep.FreshCount++
		if len(ls.rep.Fresh) < maxListedSources {
			ls.rep.Fresh = append(ls.rep.Fresh, a.String())
		}
	}
	ls.used[a] = true
	return a
}

// report returns the addresses used so far.
func (ls *legitSources) report() LegitSources {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	r := ls.rep
	r.Returning = append([]string(nil), r.Returning...)
	r.Fresh = append([]string(nil), r.Fresh...)
	return r
}

func ipv4Uint(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func ipv4From(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
