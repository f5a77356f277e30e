package shield

import (
	"net/netip"
	"testing"
)

// TestDeleteIn checks that revoking a prefix removes exactly the addresses
// inside it, whether deleteIn looks them up one by one (small IPv4
// prefixes, up to the last address of the space) or walks the table
// (wider prefixes, IPv6).
func TestDeleteIn(t *testing.T) {
	addrs := []string{
		"192.0.2.0", "192.0.2.7", "192.0.2.255", "192.0.3.1", // a /24 and its neighbour
		"10.1.0.1", "10.1.15.255", "10.1.16.0", // a /20's edges
		"10.9.200.1", "10.10.0.1", // a /16 and beyond
		"255.255.255.254", "255.255.255.255", // the end of the space: Next wraps to invalid
		"2001:db8:1:2::5", "2001:db8:1:2:ffff::1", "2001:db8:1:3::5",
	}
	cases := []struct {
		prefix string
		gone   []string
	}{
		{"192.0.2.7/32", []string{"192.0.2.7"}},
		{"192.0.2.9/24", []string{"192.0.2.0", "192.0.2.7", "192.0.2.255"}},
		{"10.1.0.0/20", []string{"10.1.0.1", "10.1.15.255"}},
		{"10.9.0.0/16", []string{"10.9.200.1"}},
		{"255.255.255.0/24", []string{"255.255.255.254", "255.255.255.255"}},
		{"2001:db8:1:2::/64", []string{"2001:db8:1:2::5", "2001:db8:1:2:ffff::1"}},
		{"2001:db8:1:2::5/128", []string{"2001:db8:1:2::5"}},
	}
	for _, c := range cases {
		tab := newLRU[netip.Addr, int64](1000, hashAddr)
		for _, a := range addrs {
			tab.do(netip.MustParseAddr(a), true, func(v *int64, _ bool) { *v = 1 })
		}
		deleteIn(tab, netip.MustParsePrefix(c.prefix))
		gone := map[string]bool{}
		for _, g := range c.gone {
			gone[g] = true
		}
		for _, a := range addrs {
			found := tab.do(netip.MustParseAddr(a), false, func(*int64, bool) {})
			if found == gone[a] {
				t.Errorf("after deleteIn(%s): %s present = %v, want %v", c.prefix, a, found, !gone[a])
			}
		}
		if got, want := tab.len(), len(addrs)-len(c.gone); got != want {
			t.Errorf("after deleteIn(%s): %d entries, want %d", c.prefix, got, want)
		}
	}
}
