package shield

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Counters that add up across nodes (issue 16).
//
// A node sharing its store (Options.Store) counts every thresholded event
// twice: in its own window, which bans at once when this node alone sees
// the threshold (as without a cluster), and in a local accumulator that a
// goroutine sends to the store every counterFlush with one AddCounts call
// (one Redis round trip for every subject counted meanwhile). The store
// answers each subject's total over every node; the node that makes a total
// reach the threshold is told so (the store forgets the counter in the same
// atomic step) and bans, and the ban reaches the other nodes through
// Watch. Between flushes a node decides with what it has not sent yet plus
// the last total the store told it (for at most knownFresh), so nothing a
// session does waits on the store.
//
// Why windowed counters and not GCRA: a threshold here is "Count events
// within Window", a count and not a rate; two integers per subject in
// epoch-aligned windows with the sliding-window estimate (see
// StateStore.AddCounts) need one INCRBY and two GETs in a script, merge
// from any number of nodes by addition, expire by themselves, and batch:
// a node adds 40 failures as one INCRBY 40. GCRA keeps one timestamp per
// subject, which is exact for a rate but must be updated once per event
// (it does not batch without losing its meaning) and answers "too fast",
// not "too many".
//
// Overshoot: an attacker spreading over N nodes is banned once the total
// reaches the threshold T, plus what arrives before the crossing is seen:
// the events in one flush interval and the propagation of the ban (one
// PUBLISH, BenchmarkPropagation: well under counterFlush). At a cluster-wide
// rate of r events per second that is at most r × (counterFlush +
// propagation) extra events, never more than (N−1) × (T−1) in all: each node
// still bans alone at T. A failed login takes a round trip and the
// protocol's failure delay, so an attacker gets a handful of extra tries at
// most; with the store unreachable the nodes count alone (up to N × T).

// counterFlush is how often a node sends what it counted to the store.
const counterFlush = 100 * time.Millisecond

// knownFresh is how long a total the store answered is used for local
// decisions: long enough to cover the flushes of a busy subject, short
// enough that the decay of the previous window (at most knownFresh/Window
// of it) does not matter.
const knownFresh = time.Second

// counterTimeout bounds one AddCounts call; a slow store delays the next
// flush, never a session.
const counterTimeout = 2 * time.Second

// countKey names one shared counter: an event counted per address or per
// network.
type countKey struct {
	ev      Event
	net     bool // the network threshold (network_<name>)
	subject netip.Prefix
}

func hashCountKey(k countKey) uint64 {
	h := hashPrefix(k.subject) ^ uint64(k.ev)*0x9e3779b97f4a7c15
	if k.net {
		h = ^h
	}
	return h
}

// pendingCount is what a node counted for a key since its last flush.
type pendingCount struct {
	add   int64
	reset bool
}

// knownCount is the last total the store answered for a key.
type knownCount struct {
	total int64
	at    int64 // unix nanoseconds
}

// sharedCounts is a node's accumulator of counts to share.
type sharedCounts struct {
	mu      sync.Mutex
	pending map[countKey]pendingCount // bounded by max
	max     int
	known   *lru[countKey, knownCount]

	sent    atomic.Uint64 // events sent to the store
	dropped atomic.Uint64 // events not shared: the accumulator was full, or the store failed
	crossed atomic.Uint64 // bans this node issued because the cluster total crossed a threshold
}

func newSharedCounts(capacity int) *sharedCounts {
	return &sharedCounts{pending: make(map[countKey]pendingCount), max: capacity,
		known: newLRU[countKey, knownCount](capacity, hashCountKey)}
}

// add counts one event for k and returns the cluster total as this node
// knows it: the last total the store answered (if fresh) plus what this
// node has not sent yet.
func (c *sharedCounts) add(k countKey, ns int64) int64 {
	c.mu.Lock()
	p, ok := c.pending[k]
	if ok || len(c.pending) < c.max {
		p.add++
		c.pending[k] = p
	} else {
		c.dropped.Add(1)
	}
	c.mu.Unlock()
	var known int64
	c.known.do(k, false, func(v *knownCount, _ bool) {
		if ns-v.at < knownFresh.Nanoseconds() {
			known = v.total
		}
	})
	return known + p.add
}

// reset makes the next flush forget k's counter on every node (a ban was
// issued for it, or a reset event such as a good login came), and forgets
// what this node knew of it.
func (c *sharedCounts) reset(k countKey) {
	c.mu.Lock()
	if _, ok := c.pending[k]; ok || len(c.pending) < c.max {
		c.pending[k] = pendingCount{reset: true}
	}
	c.mu.Unlock()
	c.known.delete(k)
}

// has reports whether this node counted or learnt anything of k.
func (c *sharedCounts) has(k countKey) bool {
	c.mu.Lock()
	_, ok := c.pending[k]
	c.mu.Unlock()
	return ok || c.known.do(k, false, func(*knownCount, bool) {})
}

// take returns what was counted since the last call and starts again.
func (c *sharedCounts) take() map[countKey]pendingCount {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pending) == 0 {
		return nil
	}
	p := c.pending
	c.pending = make(map[countKey]pendingCount, len(p))
	return p
}

// counterLoop flushes the accumulator every counterFlush until Close.
func (s *Shield) counterLoop() {
	defer s.wg.Done()
	t := time.NewTicker(counterFlush)
	defer t.Stop()
	for {
		select {
		case <-s.closed:
			return
		case <-t.C:
			s.flushCounts()
		}
	}
}

// flushCounts sends what was counted to the store in one AddCounts call,
// remembers the totals and bans where this node's events crossed a
// threshold.
func (s *Shield) flushCounts() {
	pending := s.counts.take()
	if len(pending) == 0 {
		return
	}
	keys := make([]countKey, 0, len(pending))
	batch := make([]Count, 0, len(pending))
	for k, p := range pending {
		r := s.rule(k.ev)
		if r == nil {
			continue
		}
		th, name := r.th, r.name
		if k.net {
			th, name = r.net, r.netName
		}
		if th.Count <= 0 || th.Window <= 0 {
			continue // the threshold was turned off
		}
		keys = append(keys, k)
		batch = append(batch, Count{Name: name, Subject: k.subject, Window: th.Window, Limit: int64(th.Count),
			Add: p.add, Reset: p.reset})
	}
	now := s.now()
	ctx, cancel := context.WithTimeout(context.Background(), counterTimeout)
	totals, err := s.store.AddCounts(ctx, now, batch)
	cancel()
	if err != nil {
		for _, c := range batch {
			s.counts.dropped.Add(uint64(c.Add))
		}
		s.storeFailed(err)
		return
	}
	ns := now.UnixNano()
	for i, k := range keys {
		s.counts.sent.Add(uint64(batch[i].Add))
		if i >= len(totals) {
			break
		}
		t := totals[i]
		if t.Crossed {
			s.counts.crossed.Add(1)
			s.counts.known.delete(k)
			s.crossedCluster(k, t.Total, now)
			continue
		}
		s.counts.known.do(k, true, func(v *knownCount, _ bool) { *v = knownCount{total: t.Total, at: ns} })
	}
}

// crossedCluster bans k's subject: the cluster's events crossed its
// threshold with this node's. An address allowlisted or banned meanwhile
// is left alone.
func (s *Shield) crossedCluster(k countKey, total int64, now time.Time) {
	r := s.rule(k.ev)
	if r == nil {
		return
	}
	if k.net {
		s.log.Info("shield cluster threshold", "addr", k.subject.String(), "reason", r.netName, "count", total)
		s.banNetwork(k.subject, k.ev, r, now, nil)
		return
	}
	addr := k.subject.Addr()
	if s.pol.Load().exempt(addr) || s.banLookup(addr, now) != nil {
		return
	}
	s.log.Info("shield cluster threshold", "addr", addr.String(), "reason", r.name, "count", total)
	s.ips.do(addr, false, func(v *ipState, _ bool) { *v.events.at(k.ev) = window{} })
	if r.th.DryRun || s.cfg().DryRun {
		s.log.Info("shield would ban", "addr", addr.String(), "reason", r.name, "count", total, "window", r.th.Window.String())
		return
	}
	s.banBehaviour(addr, r, now, nil)
}

// CounterStats are the shared counters' figures, for status and metrics.
type CounterStats struct {
	Sent    uint64 `json:"sent"`    // events sent to the shared store
	Dropped uint64 `json:"dropped"` // events not shared (accumulator full, store failed): counted on this node only
	Crossed uint64 `json:"crossed"` // bans issued because the cluster's total crossed a threshold
}

func (c *sharedCounts) stats() CounterStats {
	if c == nil {
		return CounterStats{}
	}
	return CounterStats{Sent: c.sent.Load(), Dropped: c.dropped.Load(), Crossed: c.crossed.Load()}
}
