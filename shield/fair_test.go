package shield

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

// fairModel is the fairness rule of fair.go computed the slow way, by
// scanning every connection, to check the structure against.
type fairModel struct{ conns []*Conn }

// count is how many contestable connections lie inside p.
func (m *fairModel) count(p netip.Prefix) int {
	n := 0
	for _, c := range m.conns {
		if p.Contains(c.addr) {
			n++
		}
	}
	return n
}

// largest is the largest count among the networks of bits length inside
// scope (scope invalid: the top level) that hold a connection.
func (m *fairModel) largest(scope netip.Prefix, bits int, v4 bool) int {
	best := 0
	for _, c := range m.conns {
		if c.addr.Is4() != v4 && scope.IsValid() || scope.IsValid() && !scope.Contains(c.addr) {
			continue
		}
		if !scope.IsValid() {
			// the top level mixes both families: compare at each's own top
			bits = fairLevels(c.addr)[0]
		}
		p, _ := c.addr.Prefix(bits)
		best = max(best, m.count(p))
	}
	return best
}

// decidingLevel returns the level at which the rule lets the newcomer take a
// slot (and the scope there), or -1 for no eviction.
func (m *fairModel) decidingLevel(addr netip.Addr, first bool) (int, netip.Prefix) {
	levels := fairLevels(addr)
	var scope netip.Prefix
	for i, bits := range levels {
		mx := m.largest(scope, bits, addr.Is4())
		if mx == 0 {
			return -1, scope
		}
		p, _ := addr.Prefix(bits)
		c := m.count(p)
		if first || c+1 < mx {
			return i, scope
		}
		if i == len(levels)-1 {
			return -1, scope
		}
		scope = p
	}
	return -1, scope
}

// checkVictim checks that v is a connection the rule allows: from a largest
// network at the deciding level and at every level below it.
func (m *fairModel) checkVictim(t *testing.T, addr netip.Addr, first bool, v *Conn) {
	t.Helper()
	level, scope := m.decidingLevel(addr, first)
	if level < 0 {
		if v != nil {
			t.Fatalf("newcomer %s (first %v): rule gives no eviction, got victim %s", addr, first, v.addr)
		}
		return
	}
	if v == nil {
		t.Fatalf("newcomer %s (first %v): want a victim (deciding level %d in %v), got none", addr, first, level, scope)
	}
	levels := fairLevels(v.addr)
	for i := level; i < len(levels); i++ {
		p, _ := v.addr.Prefix(levels[i])
		var mx int
		if i == 0 {
			mx = m.largest(netip.Prefix{}, 0, v.addr.Is4())
		} else {
			mx = m.largest(scope, levels[i], v.addr.Is4())
		}
		if got := m.count(p); got != mx {
			t.Fatalf("newcomer %s: victim %s is in %v holding %d, but a network of that level in %v holds %d", addr, v.addr, p, got, scope, mx)
		}
		scope = p
	}
	// Every connection is idle: CLOCK gives the oldest of the leaf network.
	for _, c := range m.conns {
		if scope.Contains(c.addr) {
			if c != v {
				t.Fatalf("victim %s is not the oldest of %v (%s is)", v.addr, scope, c.addr)
			}
			break
		}
	}
}

// checkCounts walks the structure and compares every count with the model.
func (m *fairModel) checkCounts(t *testing.T, f *fairShares) {
	t.Helper()
	var walk func(g *fairGroup) int
	walk = func(g *fairGroup) int {
		total, largest := 0, 0
		for p, n := range g.members {
			if n.key != p || n.parent != g {
				t.Fatalf("node %v misfiled", p)
			}
			if want := m.count(p); n.count != want {
				t.Fatalf("%v counts %d, want %d", p, n.count, want)
			}
			if n.kids != nil {
				if got := walk(n.kids); got != n.count {
					t.Fatalf("%v counts %d, its networks %d", p, n.count, got)
				}
			} else {
				k := 0
				for c := n.conns.head; c != nil; c = next(c) {
					k++
				}
				if k != n.count {
					t.Fatalf("%v lists %d connections, counts %d", p, k, n.count)
				}
			}
			total += n.count
			largest = max(largest, n.count)
		}
		if g.max != largest {
			t.Fatalf("group max %d, largest member %d", g.max, largest)
		}
		return total
	}
	if total := walk(f.top); total != len(m.conns) {
		t.Fatalf("structure holds %d, model %d", total, len(m.conns))
	}
}

// randAddr draws from a few networks at every level, so that ties and
// nested largest networks happen often.
func randAddr(r *rand.Rand) netip.Addr {
	if r.IntN(4) == 0 {
		return netip.MustParseAddr(fmt.Sprintf("2001:db8:%x:%x:%x::%x", r.IntN(2), r.IntN(3), r.IntN(3), 1+r.IntN(50)))
	}
	return netip.AddrFrom4([4]byte{127, byte(r.IntN(4)), byte(r.IntN(4)), byte(1 + r.IntN(200))})
}

// TestFairSharesProperty: after random adds and removes, the structure's
// counts match a scan, and the victim chosen for a random newcomer is always
// the one the rule names: from a maximal network at the deciding level and
// below, the oldest of its leaf network; none when the newcomer's network
// already holds a largest share.
func TestFairSharesProperty(t *testing.T) {
	evicted, refused := 0, 0
	for seed := range uint64(40) {
		r := rand.New(rand.NewPCG(seed, 7))
		f := newFairShares()
		m := &fairModel{}
		for step := range 600 {
			switch op := r.IntN(10); {
			case op < 6 || len(m.conns) == 0:
				c := &Conn{addr: randAddr(r)}
				f.add(c)
				m.conns = append(m.conns, c)
			case op < 8:
				i := r.IntN(len(m.conns))
				f.remove(m.conns[i])
				m.conns = append(m.conns[:i], m.conns[i+1:]...)
			default:
				addr := randAddr(r)
				first := r.IntN(5) == 0
				s := &fairSearch{ns: 1, idle: 0, budget: 1 << 30, commit: true}
				v := f.victim(addr, first, s)
				m.checkVictim(t, addr, first, v)
				if v == nil {
					refused++
				} else {
					evicted++
					if v.fairLeaf != nil {
						t.Fatalf("seed %d step %d: victim still counted", seed, step)
					}
					for i, c := range m.conns {
						if c == v {
							m.conns = append(m.conns[:i], m.conns[i+1:]...)
							break
						}
					}
				}
			}
			m.checkCounts(t, f)
		}
		for _, c := range m.conns {
			f.remove(c)
		}
		if len(f.top.members) != 0 || f.top.max != 0 {
			t.Fatalf("seed %d: empty structure keeps %d networks, max %d", seed, len(f.top.members), f.top.max)
		}
	}
	if evicted < 100 || refused < 100 {
		t.Fatalf("the random runs made %d evictions and %d refusals: both paths need exercising", evicted, refused)
	}
}

// TestFairSharesBusySkipped: a busy connection is never the victim; the
// search moves on to the next idle one (CLOCK), then to smaller networks,
// and gives up within its budget.
func TestFairSharesBusySkipped(t *testing.T) {
	f := newFairShares()
	busy := func(a string) *Conn {
		c := &Conn{addr: mustAddr(a)}
		c.lastActive.Store(100)
		f.add(c)
		return c
	}
	idle := func(a string) *Conn {
		c := &Conn{addr: mustAddr(a)}
		f.add(c)
		return c
	}
	for i := range 5 {
		busy(fmt.Sprintf("127.10.0.%d", i+1))
	}
	quiet := idle("127.10.0.99")
	s := &fairSearch{ns: 100, idle: 50, budget: fairBudget, commit: true}
	if v := f.victim(mustAddr("127.1.0.1"), false, s); v != quiet {
		t.Fatalf("victim %v, want the idle 127.10.0.99", v)
	}
	// Only busy connections left in the largest network; a smaller one has
	// an idle one: it is taken (the largest with an idle connection).
	other := idle("127.11.0.1")
	idle("127.11.0.2")
	s = &fairSearch{ns: 100, idle: 50, budget: fairBudget, commit: true}
	if v := f.victim(mustAddr("127.1.0.1"), false, s); v != other {
		t.Fatalf("victim %v, want 127.11.0.1", v)
	}
	// Nothing idle anywhere: no victim, and the search stays in budget.
	f = newFairShares()
	for i := range 2000 {
		busy(fmt.Sprintf("127.20.%d.%d", i/200, i%200+1))
	}
	s = &fairSearch{ns: 100, idle: 50, budget: fairBudget, commit: true}
	if v := f.victim(mustAddr("127.1.0.1"), false, s); v != nil {
		t.Fatalf("victim %v among busy connections", v.addr)
	}
	if s.budget > 0 {
		t.Fatalf("budget left %d: want the search cut off", s.budget)
	}
}

// BenchmarkFairVictim: one add and one eviction with 100,000 connections
// held by a botnet in 64 /16s plus strangers.
func BenchmarkFairVictim(b *testing.B) {
	f := newFairShares()
	r := rand.New(rand.NewPCG(1, 2))
	for range 100_000 {
		f.add(&Conn{addr: netip.AddrFrom4([4]byte{127, byte(64 + r.IntN(64)), byte(r.IntN(256)), byte(r.IntN(256))})})
	}
	newcomer := mustAddr("127.1.2.3")
	b.ResetTimer()
	for i := range b.N {
		s := fairSearch{ns: 1, idle: 0, budget: fairBudget, commit: true}
		v := f.victim(newcomer, false, &s)
		if v == nil {
			b.Fatal("no victim")
		}
		v.addr = netip.AddrFrom4([4]byte{127, byte(64 + i%64), byte(i >> 8), byte(i)})
		f.add(v)
	}
}

// TestStrangerEvictsFromLargestNetwork: a listener whose strangers' share
// is full of idle bots of one /24, and whose reserve a known-good client
// uses: a stranger of another network gets a bot's slot (a swap: the count
// stays), a further bot of the same /24 gets nothing, and neither the
// known-good client nor an authenticated bot is touched. Before fair
// capacity the stranger got "421 4.7.0 server busy".
func TestStrangerEvictsFromLargestNetwork(t *testing.T) {
	h := newHarness(t, testConfig(), Options{})
	srv := startServer(t, h.s, ListenerConfig{Name: "smtp", MaxConns: 10}) // 8 for strangers
	good := mustAddr("127.51.0.1")
	h.s.report(nil, good, AuthSuccess, h.clock.Now())

	var bots []*client
	for i := range 8 {
		b := dialFrom(t, srv.addr, fmt.Sprintf("127.50.0.%d", i+1))
		b.expect("220")
		bots = append(bots, b)
	}
	bots[0].cmd("AUTH bob good") // authenticated: out of the contest
	kg := dialFrom(t, srv.addr, "127.51.0.1")
	kg.expect("220") // in the reserve: 9 of 10
	h.clock.Advance(time.Minute)

	dialFrom(t, srv.addr, "127.50.0.20").expect("421 4.7.0 server busy")
	stranger := dialFrom(t, srv.addr, "127.52.0.1")
	stranger.expect("220")
	if r := stranger.cmd("NOOP"); r != "250 ok" {
		t.Fatal(r)
	}
	// The victim: the oldest idle contestable connection of the /24.
	bots[1].expectClosed()
	for _, b := range bots[2:] {
		if r := b.cmd("NOOP"); r != "250 ok" {
			t.Fatalf("bot not chosen: %q", r)
		}
	}
	for _, c := range []*client{bots[0], kg} {
		if r := c.cmd("NOOP"); r != "250 ok" {
			t.Fatalf("untouchable client: %q", r)
		}
	}
	st := h.s.Stats().Listeners["smtp"]
	if st.Evicted != 1 || st.Active != 9 {
		t.Fatalf("evicted %d active %d, want 1 and 9", st.Evicted, st.Active)
	}
}

// A connection from a network that holds none, counted then forgotten,
// allocates nothing once the fair shares have a network to reuse (issue
// 15: it cost seven allocations per stranger), for IPv4 and IPv6.
func TestFairSharesReuseNetworks(t *testing.T) {
	f := newFairShares()
	for _, family := range []string{"v4", "v6"} {
		conns := make([]Conn, 200) // made here: the test's own allocations
		for i := range conns {
			conns[i].addr = netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 1})
			if family == "v6" {
				conns[i].addr = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 8), byte(i), 15: 1})
			}
		}
		i := 0
		churn := func() {
			c := &conns[i]
			i++
			f.add(c)
			f.remove(c)
		}
		churn() // the first networks are new
		if n := testing.AllocsPerRun(100, churn); n != 0 {
			t.Errorf("%s: %v allocations per connection from a new network", family, n)
		}
	}
	if len(f.top.members) != 0 || len(f.freeInner) > fairFree || len(f.freeLeaf) > fairFree {
		t.Fatalf("networks left %d, free lists %d and %d (at most %d)", len(f.top.members), len(f.freeInner), len(f.freeLeaf), fairFree)
	}
}

// BenchmarkFairSharesNewNetwork: one connection from a network that holds
// none, counted and forgotten (allocs/op: 0).
func BenchmarkFairSharesNewNetwork(b *testing.B) {
	f := newFairShares()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		c := &Conn{addr: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), 1})}
		f.add(c)
		f.remove(c)
	}
}
