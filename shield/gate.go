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
//   - Three classes. First: allowlisted, trusted, authenticated and known-good
//     clients. Then everyone else (strangers). Last, repeats: a connection
//     that already had a slot and is neither authenticated nor allowlisted
//     (a second message in one session from an unauthenticated sender).
//   - First goes first, but not always: after gateFirstBurst grants in a row
//     to the first class while strangers wait, one stranger is served.
//     Strict priority would let a flood whose addresses earned known-good
//     status (an accepted message is enough) starve every stranger, and a
//     real user is usually a stranger.
//   - Repeats go when neither other class waits (or after gateRepeatEvery
//     grants to the others while they waited, so they never starve), and
//     at most RepeatSlots of them are inside at once even when slots are
//     free. A message flood is many messages per connection over a few
//     hundred connections; a session's first message (every new sender's,
//     a real user's) goes ahead of the flood's next ones, and the flood's
//     connections wait here, costing nothing, instead of all being served
//     at once and sharing the CPU with everyone else (least attained
//     service first: short sessions before long ones). Known-good status
//     helps the first message of a session only, so a botnet whose
//     addresses delivered before is a repeat sender too; authentication and
//     the allowlist keep a session first for all its messages.
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
	s           *Shield
	slots       int
	repeatSlots int

	mu          sync.Mutex
	busy        int
	repeatBusy  int // repeats inside (of busy)
	first       gateClass
	rest        gateClass
	repeat      gateClass
	streak      int // grants in a row to first while rest waited
	repeatSkips int // grants to the other classes while a repeat could have gone
	stats       GateStats
}

// gateFirstBurst is how many grants in a row the first class gets while
// strangers wait.
const gateFirstBurst = 4

// gateRepeatEvery is how many grants the first and stranger classes get
// while a repeat waits under its cap, before one repeat is served anyway.
const gateRepeatEvery = 16

// gateRepeatShare is the share of the slots repeats may hold at once: one
// in gateRepeatShare (at least one).
const gateRepeatShare = 32

// gateTier is a waiter's class.
type gateTier uint8

const (
	tierFirst gateTier = iota
	tierRest
	tierRepeat
)

// GateStats are a Gate's counters.
type GateStats struct {
	Slots        int    `json:"slots"`
	RepeatSlots  int    `json:"repeat_slots"` // most repeat deliveries inside at once
	Busy         int    `json:"busy"`
	RepeatBusy   int    `json:"repeat_busy"`
	Waiting      int    `json:"waiting"`
	GrantedFirst uint64 `json:"granted_first"`  // grants to known-good, authenticated or allowlisted clients
	GrantedRest  uint64 `json:"granted_rest"`   // grants to strangers
	GrantedRep   uint64 `json:"granted_repeat"` // grants to connections that had a slot before (unauthenticated)
	Waited       uint64 `json:"waited"`         // grants that had to wait for a slot
	Canceled     uint64 `json:"canceled"`       // waits ended by the caller's context
}

// Gate returns a new fair admission queue with slots places (at least 1);
// repeat deliveries may hold one in gateRepeatShare of them (at least 1).
func (s *Shield) Gate(slots int) *Gate {
	slots = max(1, slots)
	g := &Gate{s: s, slots: slots, repeatSlots: max(1, slots/gateRepeatShare)}
	g.first.init()
	g.rest.init()
	g.repeat.init()
	return g
}

// Stats returns the gate's counters.
func (g *Gate) Stats() GateStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := g.stats
	st.Slots, st.RepeatSlots, st.Busy, st.RepeatBusy = g.slots, g.repeatSlots, g.busy, g.repeatBusy
	st.Waiting = g.first.n + g.rest.n + g.repeat.n
	return st
}

// Acquire waits for a slot for the client of c (a shield connection, or any
// net.Conn judged by its remote address) and returns the function that gives
// it back. It returns ctx's error if ctx ends first.
func (g *Gate) Acquire(ctx context.Context, c net.Conn) (release func(), err error) {
	sc := FromConn(c)
	addr, tier := g.classify(sc, c)
	g.mu.Lock()
	if g.free(tier) {
		g.take(tier, false)
		g.mu.Unlock()
		return g.granted(sc, tier), nil
	}
	w := &gateWaiter{ready: make(chan struct{}), tier: tier}
	g.class(tier).push(w, addr)
	g.dispatch() // a slot may be free while others waited
	g.mu.Unlock()
	select {
	case <-w.ready:
		return g.granted(sc, tier), nil
	case <-ctx.Done():
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if w.granted {
		// Granted as ctx ended: hand the slot on.
		g.give(tier)
		g.dispatch()
	} else {
		w.class.remove(w)
	}
	g.stats.Canceled++
	return nil, ctx.Err()
}

// free reports whether a client of tier may go in at once: a slot is free
// and nobody it must not overtake waits. Called with mu held.
func (g *Gate) free(tier gateTier) bool {
	if g.busy >= g.slots {
		return false
	}
	if tier == tierRepeat {
		return g.repeatBusy < g.repeatSlots && g.repeat.n == 0
	}
	return g.first.n+g.rest.n == 0
}

func (g *Gate) class(tier gateTier) *gateClass {
	switch tier {
	case tierFirst:
		return &g.first
	case tierRest:
		return &g.rest
	}
	return &g.repeat
}

// classify returns the client's address and class. sc is c's shield
// connection, or nil.
func (g *Gate) classify(sc *Conn, c net.Conn) (netip.Addr, gateTier) {
	var addr netip.Addr
	if sc != nil {
		addr = sc.addr
		switch {
		case sc.authed.Load():
			return addr, tierFirst
		case sc.gateTurns.Load() > 0:
			if g.s.pol.Load().exempt(addr) {
				return addr, tierFirst
			}
			return addr, tierRepeat
		case sc.knownGood.Load():
			return addr, tierFirst
		}
	} else if c != nil {
		addr = addrOf(c.RemoteAddr())
	}
	if !addr.IsValid() {
		return addr, tierRest
	}
	if g.s.pol.Load().exempt(addr) || g.s.isKnownGood(addr, g.s.now().UnixNano()) {
		return addr, tierFirst
	}
	return addr, tierRest
}

// granted counts the slot on sc's connection and returns its release.
func (g *Gate) granted(sc *Conn, tier gateTier) func() {
	if sc != nil {
		sc.gateTurns.Add(1)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			g.give(tier)
			g.dispatch()
			g.mu.Unlock()
		})
	}
}

// take and give count a slot of tier in and out. Called with mu held.
func (g *Gate) take(tier gateTier, waited bool) {
	g.busy++
	switch tier {
	case tierFirst:
		g.stats.GrantedFirst++
	case tierRest:
		g.stats.GrantedRest++
	case tierRepeat:
		g.repeatBusy++
		g.stats.GrantedRep++
	}
	if waited {
		g.stats.Waited++
	}
}

func (g *Gate) give(tier gateTier) {
	g.busy--
	if tier == tierRepeat {
		g.repeatBusy--
	}
}

// dispatch grants free slots to waiters, in the order of the Gate's doc.
// Called with mu held.
func (g *Gate) dispatch() {
	for g.busy < g.slots {
		repeatMay := g.repeat.n > 0 && g.repeatBusy < g.repeatSlots
		others := g.first.n + g.rest.n
		var w *gateWaiter
		switch {
		case repeatMay && (others == 0 || g.repeatSkips >= gateRepeatEvery):
			w = g.repeat.pop()
			g.repeatSkips = 0
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
		if w.tier != tierRepeat && repeatMay {
			g.repeatSkips++
		}
		w.granted = true
		g.take(w.tier, true)
		close(w.ready)
	}
}

// gateWaiter is one client waiting.
type gateWaiter struct {
	ready   chan struct{}
	granted bool
	tier    gateTier
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
