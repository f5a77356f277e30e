package shield

import (
	"net/netip"
	"testing"
)

// TestDeleteIn checks that revoking a prefix removes exactly the addresses
// inside it (IPv4 and IPv6, up to the end of the space) through the
// network index, without walking the table, and that the index follows
// deletions and evictions.
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
		{"2001:db8::/32", []string{"2001:db8:1:2::5", "2001:db8:1:2:ffff::1", "2001:db8:1:3::5"}},
		{"0.0.0.0/0", []string{"192.0.2.0", "192.0.2.7", "192.0.2.255", "192.0.3.1", "10.1.0.1", "10.1.15.255",
			"10.1.16.0", "10.9.200.1", "10.10.0.1", "255.255.255.254", "255.255.255.255"}},
	}
	for _, c := range cases {
		tab := newNetTable[int64](1000)
		for _, a := range addrs {
			tab.do(netip.MustParseAddr(a), true, func(v *int64, _ bool) { *v = 1 })
		}
		tab.deleteIn(netip.MustParsePrefix(c.prefix))
		if w := tab.walks.Load(); w != 0 {
			t.Errorf("deleteIn(%s) walked the table %d times", c.prefix, w)
		}
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

// TestNetTableIndexFollowsEviction: addresses that left the table (evicted
// when full, deleted, dropped by a walk) leave the network index too, so it
// stays as small as the table.
func TestNetTableIndexFollowsEviction(t *testing.T) {
	tab := newNetTable[int64](100)
	for i := range 1000 {
		tab.do(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), true, func(v *int64, _ bool) { *v = int64(i) })
	}
	tab.delete(netip.AddrFrom4([4]byte{10, 0, 3, 0xe7})) // the last one, 999
	tab.each(func(_ netip.Addr, v *int64) bool { return *v%2 == 0 })
	n := tab.len()
	if n == 0 || n > 100 {
		t.Fatalf("%d entries in a table of 100", n)
	}
	tab.mu.Lock()
	indexed := tab.hosts.Size()
	tab.mu.Unlock()
	if indexed != n {
		t.Fatalf("index holds %d addresses, the table %d", indexed, n)
	}
	tab.deleteIn(netip.MustParsePrefix("10.0.0.0/16"))
	if n := tab.len(); n != 0 {
		t.Fatalf("%d entries left after deleting their /16", n)
	}
}
