package shield

import (
	"context"
	"net"
	"net/netip"
	"sync"
)

// Gate is a fair admission queue in front of a stage that every client of
// a service shares and that can only do so much at once: in agua, making
// accepted mail durable (the group commit). At most Slots clients are inside;
// the others wait, and when a slot frees the next one is chosen so that a
// flood from many addresses, each under its per-address limits, cannot push
// everyone else behind it:
//
//   - Two classes. First: allowlisted, trusted, authenticated and known-good
//     clients. Then everyone else (strangers). First goes first, but not
//     always: after gateFirstBurst grants in a row to the first class while
//     strangers wait, one stranger is served. Strict priority would let a
//     flood whose addresses earned known-good status (an accepted message is
//     enough) starve every stranger, and a real user is usually a stranger.
//   - Inside a class, networks take turns (round robin over /16s, IPv6 /32s,
//     and inside each over its /24s, /64s; first come first served inside
//     one /24 or /64). A botnet in one /16 gets one turn per round however
//     many of its messages wait; one spread over 64 /16s gets 64 turns, and
//     a client of any other network waits at most one round.
//
// Every operation is O(1) under one mutex. Memory is one waiter per waiting
// client (a client waits in its own goroutine, so the waiting count is
// bounded by the service's connections) and one node per network with a
// waiter.
type Gate struct {
	s     *Shield
	slots int

	mu     sync.Mutex
	busy   int
	first  gateClass
	rest   gateClass
	streak int // grants in a row to first while rest waited
	stats  GateStats
}

// gateFirstBurst is how many grants in a row the first class gets while
// strangers wait.
const gateFirstBurst = 4

// GateStats are a Gate's counters.
type GateStats struct {
	Slots        int    `json:"slots"`
	Busy         int    `json:"busy"`
	Waiting      int    `json:"waiting"`
	GrantedFirst uint64 `json:"granted_first"` // grants to known-good, authenticated or allowlisted clients
	GrantedRest  uint64 `json:"granted_rest"`  // grants to strangers
	Waited       uint64 `json:"waited"`        // grants that had to wait for a slot
	Canceled     uint64 `json:"canceled"`      // waits ended by the caller's context
}

// Gate returns a new fair admission queue with slots places (at least 1).
func (s *Shield) Gate(slots int) *Gate {
	g := &Gate{s: s, slots: max(1, slots)}
	g.first.init()
	g.rest.init()
	return g
}

// Stats returns the gate's counters.
func (g *Gate) Stats() GateStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := g.stats
	st.Slots, st.Busy, st.Waiting = g.slots, g.busy, g.first.n+g.rest.n
	return st
}

// Acquire waits for a slot for the client of c (a shield connection, or any
// net.Conn judged by its remote address) and returns the function that gives
// it back. It returns ctx's error if ctx ends first.
func (g *Gate) Acquire(ctx context.Context, c net.Conn) (release func(), err error) {
	addr, first := g.classify(c)
	g.mu.Lock()
	if g.busy < g.slots && g.first.n+g.rest.n == 0 {
		g.busy++
		g.count(first, false)
		g.mu.Unlock()
		return g.releaser(), nil
	}
	w := &gateWaiter{ready: make(chan struct{}), first: first}
	if first {
		g.first.push(w, addr)
	} else {
		g.rest.push(w, addr)
	}
	g.dispatch() // a slot may be free while others waited
	g.mu.Unlock()
	select {
	case <-w.ready:
		return g.releaser(), nil
	case <-ctx.Done():
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if w.granted {
		// Granted as ctx ended: hand the slot on.
		g.busy--
		g.dispatch()
	} else {
		w.class.remove(w)
	}
	g.stats.Canceled++
	return nil, ctx.Err()
}

// classify returns the client's address and whether it goes in the first
// class.
func (g *Gate) classify(c net.Conn) (netip.Addr, bool) {
	sc := FromConn(c)
	var addr netip.Addr
	if sc != nil {
		addr = sc.addr
		if sc.authed.Load() || sc.knownGood.Load() {
			return addr, true
		}
	} else if c != nil {
		addr = addrOf(c.RemoteAddr())
	}
	if !addr.IsValid() {
		return addr, false
	}
	return addr, g.s.pol.Load().exempt(addr) || g.s.isKnownGood(addr, g.s.now().UnixNano())
}

func (g *Gate) releaser() func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			g.busy--
			g.dispatch()
			g.mu.Unlock()
		})
	}
}

func (g *Gate) count(first, waited bool) {
	if first {
		g.stats.GrantedFirst++
	} else {
		g.stats.GrantedRest++
	}
	if waited {
		g.stats.Waited++
	}
}

// dispatch grants free slots to waiters, in the order of the Gate's doc.
// Called with mu held.
func (g *Gate) dispatch() {
	for g.busy < g.slots {
		var w *gateWaiter
		switch {
		case g.first.n > 0 && (g.rest.n == 0 || g.streak < gateFirstBurst):
			w = g.first.pop()
			if g.rest.n > 0 {
				g.streak++
			}
		case g.rest.n > 0:
			w = g.rest.pop()
			g.streak = 0
		default:
			return
		}
		w.granted = true
		g.busy++
		g.count(w.first, true)
		close(w.ready)
	}
}

// gateWaiter is one client waiting.
type gateWaiter struct {
	ready   chan struct{}
	granted bool
	first   bool
	class   *gateClass
	leaf    *gateNet
	link    links[gateWaiter]
}

func (w *gateWaiter) links() *links[gateWaiter] { return &w.link }

// gateNet is a network with waiters: a /16 (/32) holding /24s (/64s), or
// a /24 (/64) holding waiters.
type gateNet struct {
	key     netip.Prefix
	parent  *gateNet       // nil for a top network
	turn    links[gateNet] // in the turn order of its parent (or class)
	kids    gateRing       // top networks: their /24s (/64s) with waiters
	waiters gateQueue      // leaf networks: first come first served
}

func (n *gateNet) links() *links[gateNet] { return &n.turn }

type gateQueue = ilist[gateWaiter, *gateWaiter]

// gateRing is a turn order of networks: the head goes next, then moves to
// the back.
type gateRing = ilist[gateNet, *gateNet]

// gateClass is the waiters of one class.
type gateClass struct {
	n      int
	turns  gateRing // top networks with waiters
	tops   map[netip.Prefix]*gateNet
	leaves map[netip.Prefix]*gateNet
}

func (c *gateClass) init() {
	c.tops = make(map[netip.Prefix]*gateNet)
	c.leaves = make(map[netip.Prefix]*gateNet)
}

// gatePrefixes returns the top and leaf networks of addr.
func gatePrefixes(addr netip.Addr) (top, leaf netip.Prefix) {
	if !addr.IsValid() {
		return
	}
	if addr.Is4() {
		top, _ = addr.Prefix(16)
		leaf, _ = addr.Prefix(24)
	} else {
		top, _ = addr.Prefix(32)
		leaf, _ = addr.Prefix(64)
	}
	return top, leaf
}

func (c *gateClass) push(w *gateWaiter, addr netip.Addr) {
	tp, lp := gatePrefixes(addr)
	top := c.tops[tp]
	if top == nil {
		top = &gateNet{key: tp}
		c.tops[tp] = top
		c.turns.pushBack(top)
	}
	leaf := c.leaves[lp]
	if leaf == nil {
		leaf = &gateNet{key: lp, parent: top}
		c.leaves[lp] = leaf
		top.kids.pushBack(leaf)
	}
	w.class, w.leaf = c, leaf
	leaf.waiters.pushBack(w)
	c.n++
}

// pop takes the next waiter: the first of the next /24 of the next /16, and
// moves both networks to the back of their turn orders.
func (c *gateClass) pop() *gateWaiter {
	top := c.turns.head
	leaf := top.kids.head
	w := leaf.waiters.head
	c.remove(w)
	if !leaf.waiters.empty() { // still waiting: its turn comes again after the others
		top.kids.unlink(leaf)
		top.kids.pushBack(leaf)
	}
	if !top.kids.empty() {
		c.turns.unlink(top)
		c.turns.pushBack(top)
	}
	return w
}

// remove takes w out of its leaf, forgetting networks left without waiters.
func (c *gateClass) remove(w *gateWaiter) {
	leaf := w.leaf
	leaf.waiters.unlink(w)
	w.leaf = nil
	c.n--
	if !leaf.waiters.empty() {
		return
	}
	top := leaf.parent
	top.kids.unlink(leaf)
	delete(c.leaves, leaf.key)
	if top.kids.empty() {
		c.turns.unlink(top)
		delete(c.tops, top.key)
	}
}
