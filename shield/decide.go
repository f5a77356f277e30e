package shield

import (
	"net/netip"
	"time"
)

// ipState is what the shield remembers about one address.
type ipState struct {
	conns  int32
	rate   bucket
	reqs   bucket
	events eventSlots[window]
}

// prefixState is what the shield remembers about one prefix.
type prefixState struct {
	conns  int32
	rate   bucket
	events eventSlots[window] // for behaviours counted per network
}

// inlineEvents is how many events a per-address record holds without
// allocating: the shield's three and a service's first four (agua's mail
// behaviours). Later events go to a slice grown on first use.
const inlineEvents = 8

// eventSlots holds one T per Event.
type eventSlots[T any] struct {
	inline [inlineEvents]T
	more   []T
}

// at returns ev's slot, growing the overflow to hold every registered event.
func (e *eventSlots[T]) at(ev Event) *T {
	if int(ev) < inlineEvents {
		return &e.inline[ev]
	}
	i := int(ev) - inlineEvents
	if i >= len(e.more) {
		e.more = append(e.more, make([]T, max(i+1, numEvents()-inlineEvents)-len(e.more))...)
	}
	return &e.more[i]
}

// slice returns the slots as one slice indexed by Event, nil when every
// slot is zero.
func (e *eventSlots[T]) slice() []T {
	var zero T
	var out []T
	e.each(func(ev Event, v *T) {
		if any(*v) != any(zero) {
			if out == nil {
				out = make([]T, inlineEvents+len(e.more))
			}
			out[ev] = *v
		}
	})
	return out
}

// each calls fn for every slot, by Event.
func (e *eventSlots[T]) each(fn func(ev Event, v *T)) {
	for i := range e.inline {
		fn(Event(i), &e.inline[i])
	}
	for i := range e.more {
		fn(Event(inlineEvents+i), &e.more[i])
	}
}

// judge applies trusted proxies, rules, lockdown and bans: everything that
// needs no per-connection accounting. exempt is true for trusted proxies and
// allowlisted addresses, which are never limited or banned. With count, ban
// hits and dry-run matches are recorded.
func (s *Shield) judge(addr netip.Addr, now time.Time, count bool) (d Decision, exempt bool) {
	p := s.pol.Load()
	if p.trusted.Lookup(addr) {
		return allow, true
	}
	if r := p.lookup(addr); r != nil {
		if r.allow {
			return allow, true
		}
		rd := Decision{Action: r.action, Reason: reasonDenied, Source: r.source}
		if !r.dryRun && !s.cfg().DryRun {
			return rd, false
		}
		d = s.wouldBlock(addr, rd, count)
	}
	if s.lockdown.Load() && !s.isKnownGood(addr, now.UnixNano()) && !s.lockdownServed(addr, now.UnixNano()) {
		return Decision{Action: Drop, Reason: reasonLockdown, Source: "lockdown"}, false
	}
	if b := s.activeBan(addr, now); b != nil {
		if count {
			b.hits.Add(1)
		}
		if s.cfg().DryRun {
			return s.wouldBlock(addr, b.decision, count), false
		}
		return b.decision, false
	}
	return d, false
}

// wouldBlock turns a refusal into a dry-run allow, recording it when count.
func (s *Shield) wouldBlock(addr netip.Addr, d Decision, count bool) Decision {
	if count {
		s.agg.add(hostPrefix(addr), d.Source, d.Action, true)
	}
	d.Action = Allow
	d.DryRun = true
	return d
}

// enforce applies global dry-run to a limit refusal.
func (s *Shield) enforce(addr netip.Addr, d Decision, count bool) Decision {
	if s.cfg().DryRun {
		return s.wouldBlock(addr, d, count)
	}
	return d
}

// admit decides on a new connection to l from addr and, when it is allowed,
// takes its slots: per address, per prefix, per listener. The returned
// release gives back exactly the slots taken. class is Trusted for a
// client that counts as known-good (allowlisted, known-good, or trusted by
// its reputation), Untrusted for one its reputation makes untrusted.
func (s *Shield) admit(l *listener, addr netip.Addr, now time.Time) (d Decision, release func(), class Standing) {
	d, exempt := s.judge(addr, now, true)
	if d.Action != Allow {
		return d, nil, Neutral
	}
	dry := d // a dry-run match to report if nothing else refuses
	if exempt {
		l.active.Add(1)
		return d, func() { l.active.Add(-1) }, Trusted
	}
	if rd, ok := s.repRefusal(addr, l); ok {
		if d = s.enforce(addr, rd, true); d.Action != Allow {
			return d, nil, Neutral
		}
		dry = d
	}
	ns := now.UnixNano()
	s.repOutside(addr, now)
	class = Trusted
	if !s.isKnownGood(addr, ns) {
		class = s.standing(addr, ns)
	}
	if s.repUntrusted(addr, l) {
		// The Reputation's verdict (agua: a [dnsbl] listing with action
		// tarpit or untrusted) outweighs known-good and the score.
		class = Untrusted
	}
	knownGood := class == Trusted
	lim := &s.cfg().Limits

	// Per address: rate first (every attempt costs a token), then concurrency.
	var refusal Decision
	ipNode := s.ips.doNode(addr, func(v *ipState, _ bool) {
		if !v.rate.take(ns, lim.PerIPRate, lim.PerIPBurst) {
			refusal = Decision{Action: Reject, Temporary: true, Reason: reasonRate, Source: "limit:per_ip_rate"}
			return
		}
		if v.conns >= int32(lim.PerIPConns) {
			refusal = Decision{Action: Reject, Temporary: true, Reason: reasonPerIPConns, Source: "limit:per_ip_conns"}
			return
		}
		v.conns++
	})
	if refusal.Action != Allow {
		if d = s.enforce(addr, refusal, true); d.Action != Allow {
			return d, nil, class
		}
		ipNode = nil // dry run: admitted without a slot
		dry = d
	}
	pfx := s.netPrefix(addr)
	var pr Decision
	pfxNode := s.prefixes.doNode(pfx, func(v *prefixState, _ bool) {
		if !v.rate.take(ns, lim.PerPrefixRate, lim.PerPrefixBurst) {
			pr = Decision{Action: Reject, Temporary: true, Reason: reasonPrefixRate, Source: "limit:per_prefix_rate"}
			return
		}
		if v.conns >= int32(lim.PerPrefixConns) {
			pr = Decision{Action: Reject, Temporary: true, Reason: reasonPerPrefix, Source: "limit:per_prefix_conns"}
			return
		}
		v.conns++
	})
	if pr.Action != Allow {
		if d = s.enforce(addr, pr, true); d.Action != Allow {
			if ipNode != nil {
				withNode(ipNode, func(v *ipState) { v.conns-- })
			}
			return d, nil, class
		}
		pfxNode = nil
		dry = d
	}
	if !l.take(knownGood) {
		if !s.makeRoom(l, addr, class, now) {
			releaseConns(ipNode, pfxNode)
			return Decision{Action: Reject, Temporary: true, Reason: reasonCapacity, Source: "capacity"}, nil, class
		}
		// A swap: the newcomer takes the slot its victim gave back, so the
		// count does not grow, even when known-good clients hold part of
		// the reserve and the listener is above the strangers' ceiling.
		l.active.Add(1)
	}
	return dry, func() { // one allocation per connection
		releaseConns(ipNode, pfxNode)
		l.active.Add(-1)
	}, class
}

// releaseConns gives back the connection counted on an address and on its
// prefix (either node may be nil: not counted).
func releaseConns(ipNode *lruNode[netip.Addr, ipState], pfxNode *lruNode[netip.Prefix, prefixState]) {
	if ipNode != nil {
		withNode(ipNode, func(v *ipState) { v.conns-- })
	}
	if pfxNode != nil {
		withNode(pfxNode, func(v *prefixState) { v.conns-- })
	}
}

// peekLimits is admit without side effects, for Decide and Why.
func (s *Shield) peekLimits(addr netip.Addr, l *listener, now time.Time) Decision {
	ns := now.UnixNano()
	lim := &s.cfg().Limits
	var refusal Decision
	s.ips.do(addr, false, func(v *ipState, _ bool) {
		switch {
		case v.rate.peek(ns, lim.PerIPRate, lim.PerIPBurst) < 1:
			refusal = Decision{Action: Reject, Temporary: true, Reason: reasonRate, Source: "limit:per_ip_rate"}
		case v.conns >= int32(lim.PerIPConns):
			refusal = Decision{Action: Reject, Temporary: true, Reason: reasonPerIPConns, Source: "limit:per_ip_conns"}
		}
	})
	if refusal.Action == Allow {
		s.prefixes.do(s.netPrefix(addr), false, func(v *prefixState, _ bool) {
			switch {
			case v.rate.peek(ns, lim.PerPrefixRate, lim.PerPrefixBurst) < 1:
				refusal = Decision{Action: Reject, Temporary: true, Reason: reasonPrefixRate, Source: "limit:per_prefix_rate"}
			case v.conns >= int32(lim.PerPrefixConns):
				refusal = Decision{Action: Reject, Temporary: true, Reason: reasonPerPrefix, Source: "limit:per_prefix_conns"}
			}
		})
	}
	if refusal.Action != Allow {
		return s.enforce(addr, refusal, false)
	}
	if l != nil {
		class := Trusted
		if !s.isKnownGood(addr, ns) {
			class = s.standing(addr, ns)
		}
		if int(l.active.Load()) >= l.ceiling(class == Trusted) && !l.roomFor(addr, class, now) {
			return Decision{Action: Reject, Temporary: true, Reason: reasonCapacity, Source: "capacity"}
		}
	}
	return allow
}

// Decide returns what Accept on the named listener would decide for addr
// now, without side effects. listener "" skips the capacity check.
func (s *Shield) Decide(addr netip.Addr, listener string) Decision {
	addr = unmap(addr)
	now := s.now()
	d, exempt := s.judge(addr, now, false)
	if d.Action != Allow || exempt {
		return d
	}
	l := s.listenerByName(listener)
	if rd, ok := s.repRefusal(addr, l); ok {
		return s.enforce(addr, rd, false)
	}
	if ld := s.peekLimits(addr, l, now); ld.Action != Allow || ld.DryRun {
		return ld
	}
	return d
}

// makeRoom closes an idle contestable connection of l for a newcomer from
// addr of the given class (Trusted: it goes first), chosen by the fairness
// rule of fair.go, and reports whether it did.
func (s *Shield) makeRoom(l *listener, addr netip.Addr, class Standing, now time.Time) bool {
	victim := l.victim(addr, class, now, true)
	if victim == nil {
		return false
	}
	victim.kick() // releases its listener slot
	l.stats.evicted.Add(1)
	s.agg.add(hostPrefix(victim.addr), "evicted:capacity", Drop, false)
	return true
}

// roomFor reports whether a full l would make room for a newcomer from addr.
func (l *listener) roomFor(addr netip.Addr, class Standing, now time.Time) bool {
	return l.victim(addr, class, now, false) != nil
}

// victim picks the connection to close for a newcomer, nil for none: an
// idle untrusted connection first (for any newcomer that is not untrusted
// itself), else by the fairness rule.
func (l *listener) victim(addr netip.Addr, class Standing, now time.Time, commit bool) *Conn {
	search := fairSearch{ns: now.UnixNano(), idle: l.s.cfg().Limits.EvictIdle.Nanoseconds(), budget: fairBudget, commit: commit}
	l.mu.Lock()
	defer l.mu.Unlock()
	if class != Untrusted {
		if v := l.untrustedVictim(&search); v != nil {
			return v
		}
	}
	return l.fair.victim(addr, class == Trusted, &search)
}

// untrustedVictim returns an idle untrusted connection, looking at no
// more than the search's budget of them; with commit it is no longer
// counted. Called under l.mu.
func (l *listener) untrustedVictim(s *fairSearch) *Conn {
	for c := range l.untrusted {
		if s.budget--; s.budget < 0 {
			return nil
		}
		if s.ns-c.lastActive.Load() >= s.idle {
			if s.commit {
				l.fair.remove(c)
				delete(l.untrusted, c)
			}
			return c
		}
	}
	return nil
}

// hostPrefix is addr as a single-address prefix, the aggregation key.
func hostPrefix(addr netip.Addr) netip.Prefix { return netip.PrefixFrom(addr, addr.BitLen()) }
