package shield

import (
	"net/netip"
)

// Fair capacity.
//
// A listener that is full makes room for a newcomer by closing an idle
// connection of a client that is neither authenticated nor known-good (a
// "contestable" connection), chosen from the network that holds the largest
// share of the listener. Shares are counted in a hierarchy of networks, so a
// botnet inside a few /16s cannot starve the rest of the Internet, and inside
// a /16 one /24 cannot starve its neighbours:
//
//	IPv4: /16 → /24 → connection
//	IPv6: /32 → /48 → /64 → connection
//
// The fairness rule (max-min fair share, applied level by level from the
// top): at a level, let m be the largest number of contestable connections
// any network there holds, and c the number the newcomer's own network holds
// (0 when it holds none).
//
//   - c+1 < m: the newcomer takes a slot from a largest network (descending
//     at each lower level to its largest network, then to an idle
//     connection, oldest first). After the swap the newcomer's network holds
//     c+1 ≤ m-1, so no network ends up with a larger share than the one it
//     took from: the largest share only shrinks.
//   - otherwise, when c ≥ m-1: the newcomer's network already holds a
//     largest share, or would after the swap. Taking from another network
//     would only move the largest share from one network to another (two
//     botnets would evict each other forever), so nothing is taken at this
//     level. Taking from inside its own network leaves its share at this
//     level unchanged, so the rule is applied again one level down, among
//     the networks inside the newcomer's own.
//   - at the last level (the newcomer's /24 or /64 holds a largest share
//     there) nothing is evicted: the newcomer would only evict its own
//     kind. It is refused with the usual capacity refusal.
//
// A known-good newcomer is not part of the contest: it keeps its reserve and,
// when the listener is full, goes first: it takes from the largest network
// whatever network it comes from.
//
// Cost: adding, removing and promoting a connection (authenticated,
// known-good) touch one node per level; each node sits in a count bucket of
// its parent, so the largest network of a level is found in O(1) and a count
// changes by moving the node to the next bucket. Candidates of a leaf network
// are an intrusive list in CLOCK order: a head that is not idle is moved to
// the tail (a second chance) instead of being scanned again. A search is
// bounded by fairBudget steps, so a listener whose largest networks hold only
// busy connections costs a bounded search, never a scan of every connection.
// Memory is one node per network that holds a contestable connection, and
// bucket slices no longer than the largest count: bounded by the listener's
// connections.

// fairBudget bounds the steps (count buckets, networks and connections
// looked at) of one victim search.
const fairBudget = 256

// fairLevels are the prefix lengths of the hierarchy, largest network first;
// the last level's networks hold the connections.
var (
	fairLevels4 = [...]int{16, 24}
	fairLevels6 = [...]int{32, 48, 64}
)

func fairLevels(addr netip.Addr) []int {
	if addr.Is4() {
		return fairLevels4[:]
	}
	return fairLevels6[:]
}

// fairNode is one network at one level.
type fairNode struct {
	key    netip.Prefix
	count  int                // contestable connections inside
	parent *fairGroup         // the group this node belongs to
	bucket links[fairNode]    // in its parent's bucket of nodes with its count
	kids   *fairGroup         // the networks one level down; nil at the last level
	conns  ilist[Conn, *Conn] // last level: the connections, CLOCK order
}

func (n *fairNode) links() *links[fairNode] { return &n.bucket }

// fairBucket is the networks of a group holding the same count.
type fairBucket = ilist[fairNode, *fairNode]

// fairGroup is the set of networks inside one network (or the top level),
// bucketed by count.
type fairGroup struct {
	owner   *fairNode // nil at the top
	members map[netip.Prefix]*fairNode
	buckets []fairBucket // buckets[k]: members with count k (k ≥ 1); [0] unused
	max     int          // largest count; buckets[max] is non-empty unless max == 0
}

func newFairGroup(owner *fairNode) *fairGroup {
	return &fairGroup{owner: owner, members: make(map[netip.Prefix]*fairNode)}
}

func (g *fairGroup) unlink(n *fairNode) { g.buckets[n.count].unlink(n) }

func (g *fairGroup) push(n *fairNode) {
	for len(g.buckets) <= n.count {
		g.buckets = append(g.buckets, fairBucket{})
	}
	g.buckets[n.count].pushBack(n)
}

// inc moves n one bucket up.
func (g *fairGroup) inc(n *fairNode) {
	if n.count > 0 {
		g.unlink(n)
	}
	n.count++
	g.push(n)
	g.max = max(g.max, n.count)
}

// dec moves n one bucket down and forgets it at zero.
func (g *fairGroup) dec(n *fairNode) {
	g.unlink(n)
	n.count--
	if n.count > 0 {
		g.push(n)
	} else {
		delete(g.members, n.key)
	}
	// Counts move by one, so the new largest is max or max-1.
	for g.max > 0 && g.buckets[g.max].empty() {
		g.max--
	}
	if len(g.buckets) > 2*g.max+8 {
		g.buckets = append([]fairBucket(nil), g.buckets[:g.max+1]...)
	}
}

// fairShares is one listener's hierarchy of contestable connections. It is
// not safe for concurrent use: the listener's mu guards it.
type fairShares struct {
	top *fairGroup
	// Networks that emptied, kept for reuse (at most fairFree of each
	// kind, with their kids' map and buckets): a stranger from a network
	// that holds no connection then costs no allocation here, where it
	// cost seven (issue 15).
	freeInner, freeLeaf []*fairNode
}

// fairFree bounds each free list of fairShares.
const fairFree = 64

// node returns a network for p in parent, with a group of kids when inner.
func (f *fairShares) node(p netip.Prefix, parent *fairGroup, inner bool) *fairNode {
	free := &f.freeLeaf
	if inner {
		free = &f.freeInner
	}
	if k := len(*free); k > 0 {
		n := (*free)[k-1]
		(*free)[k-1] = nil
		*free = (*free)[:k-1]
		n.key, n.parent = p, parent
		return n
	}
	n := &fairNode{key: p, parent: parent}
	if inner {
		n.kids = newFairGroup(n)
	}
	return n
}

// recycle keeps n, which emptied and left its group, for node. An empty
// network holds nothing: no connection, no kid, in no bucket.
func (f *fairShares) recycle(n *fairNode) {
	free := &f.freeLeaf
	if n.kids != nil {
		free = &f.freeInner
	}
	if len(*free) < fairFree {
		n.parent = nil
		*free = append(*free, n)
	}
}

func newFairShares() *fairShares { return &fairShares{top: newFairGroup(nil)} }

// add counts c in its networks.
func (f *fairShares) add(c *Conn) {
	if c.fairLeaf != nil {
		return
	}
	g := f.top
	levels := fairLevels(c.addr)
	for i, bits := range levels {
		p, _ := c.addr.Prefix(bits)
		n := g.members[p]
		if n == nil {
			n = f.node(p, g, i < len(levels)-1)
			g.members[p] = n
		}
		g.inc(n)
		if n.kids == nil {
			c.fairLeaf = n
			n.conns.pushBack(c)
			return
		}
		g = n.kids
	}
}

// remove forgets c; a no-op when c is not counted.
func (f *fairShares) remove(c *Conn) {
	n := c.fairLeaf
	if n == nil {
		return
	}
	n.conns.unlink(c)
	c.fairLeaf = nil
	for n != nil {
		g := n.parent
		g.dec(n)
		if n.count == 0 {
			f.recycle(n)
		}
		n = g.owner
	}
}

// fairSearch is one victim search.
type fairSearch struct {
	ns, idle int64 // now and the idle threshold, unix nanoseconds
	budget   int
	commit   bool // move busy heads to the tail (CLOCK); false: look only
}

// victim returns an idle contestable connection to close for a newcomer
// from addr (first: a known-good newcomer, who goes first), or nil when the
// fairness rule gives the newcomer nothing. With s.commit the victim is
// removed from the shares; the caller closes it.
func (f *fairShares) victim(addr netip.Addr, first bool, s *fairSearch) *Conn {
	g := f.top
	levels := fairLevels(addr)
	for i := 0; g != nil && g.max > 0; i++ {
		var mine *fairNode
		c := 0
		if !first && i < len(levels) {
			p, _ := addr.Prefix(levels[i])
			if mine = g.members[p]; mine != nil {
				c = mine.count
			}
		}
		if first || c+1 < g.max {
			least := c + 2
			if first {
				least = 1
			}
			v := s.fromGroup(g, least)
			if v != nil && s.commit {
				f.remove(v)
			}
			return v
		}
		// The newcomer's network holds a largest share at this level: look
		// one level down, inside it (nil at the last level: no eviction).
		if mine == nil {
			return nil
		}
		g = mine.kids
	}
	return nil
}

// fromGroup finds an idle connection in the members of g holding at least
// least connections, largest first.
func (s *fairSearch) fromGroup(g *fairGroup, least int) *Conn {
	for k := g.max; k >= least && k > 0; k-- {
		if s.budget--; s.budget < 0 {
			return nil
		}
		for n := g.buckets[k].head; n != nil; n = next(n) {
			if v := s.fromNode(n); v != nil {
				return v
			}
			if s.budget < 0 {
				return nil
			}
		}
	}
	return nil
}

// fromNode finds an idle connection inside n, its largest networks first.
func (s *fairSearch) fromNode(n *fairNode) *Conn {
	if s.budget--; s.budget < 0 {
		return nil
	}
	if n.kids != nil {
		return s.fromGroup(n.kids, 1)
	}
	// CLOCK: look at the head; an idle one is the victim, a busy one goes
	// to the tail and is looked at again only after all the others.
	c := n.conns.head
	for range n.count {
		if s.budget--; s.budget < 0 || c == nil {
			return nil
		}
		if s.ns-c.lastActive.Load() >= s.idle {
			return c
		}
		after := next(c)
		if s.commit && after != nil {
			n.conns.unlink(c)
			n.conns.pushBack(c)
		}
		c = after
	}
	return nil
}
