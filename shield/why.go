package shield

import (
	"net/netip"
	"sort"
	"time"
)

// RuleInfo describes the rule that matches an address.
type RuleInfo struct {
	Source string       `json:"source"` // file:line or config:rules[N]
	Text   string       `json:"text"`
	Prefix netip.Prefix `json:"prefix"`
	Allow  bool         `json:"allow"`
	Action Action       `json:"action"`
	DryRun bool         `json:"dry_run,omitempty"`
}

// Counters are the live counters of one address and its prefix.
type Counters struct {
	Prefix       netip.Prefix     `json:"prefix"`
	IPConns      int              `json:"ip_conns"`
	PrefixConns  int              `json:"prefix_conns"`
	IPTokens     float64          `json:"ip_tokens"`
	PrefixTokens float64          `json:"prefix_tokens"`
	Events       map[string]int32 `json:"events,omitempty"` // event counts inside their threshold windows
	// Thresholds are the thresholds of the events in Events: Count of
	// them within Window ban the address (agua's admin API writes them
	// under their config names).
	Thresholds map[string]Threshold `json:"-"`
}

// Explanation says why the shield treats an address the way it does.
type Explanation struct {
	Addr         netip.Addr     `json:"addr"`
	Rule         *RuleInfo      `json:"rule,omitempty"`
	Ban          *BanInfo       `json:"ban,omitempty"`
	Allowlisted  bool           `json:"allowlisted"`
	TrustedProxy bool           `json:"trusted_proxy"`
	KnownGood    bool           `json:"known_good"`
	Lockdown     bool           `json:"lockdown"`
	Limits       LimitsConfig   `json:"limits"`
	Counters     Counters       `json:"counters"`
	Reputation   ReputationInfo `json:"reputation"` // the score of the address and its network, with their parts
	Decision     Decision       `json:"decision"`   // what a new connection would get (no listener capacity check)
}

// Why explains the treatment of addr: matching rule, ban, limits and
// current counters, known-good and lockdown state, reputation, and the
// final decision.
func (s *Shield) Why(addr netip.Addr) Explanation {
	addr = unmap(addr)
	now := s.now()
	ns := now.UnixNano()
	p := s.pol.Load()
	e := Explanation{Addr: addr, Lockdown: s.lockdown.Load(), Limits: s.cfg().Limits,
		TrustedProxy: p.trusted.Lookup(addr), KnownGood: s.isKnownGood(addr, ns)}
	if r := p.lookup(addr); r != nil {
		e.Rule = &RuleInfo{Source: r.source, Text: r.text, Prefix: r.prefix, Allow: r.allow, Action: r.action, DryRun: r.dryRun}
		e.Allowlisted = r.allow
	}
	if b := s.activeBan(addr, now); b != nil {
		bi := b.info()
		e.Ban = &bi
	}
	lim := &s.cfg().Limits
	e.Counters.Prefix = s.netPrefix(addr)
	e.Counters.IPTokens = float64(lim.PerIPBurst)
	e.Counters.PrefixTokens = float64(lim.PerPrefixBurst)
	s.ips.do(addr, false, func(v *ipState, _ bool) {
		e.Counters.IPConns = int(v.conns)
		e.Counters.IPTokens = v.rate.peek(ns, lim.PerIPRate, lim.PerIPBurst)
		v.events.each(func(ev Event, w *window) {
			r := s.rule(ev)
			if r == nil || r.th.Count <= 0 {
				return
			}
			if n := w.current(ns, r.th.Window.Nanoseconds()); n > 0 {
				if e.Counters.Events == nil {
					e.Counters.Events = make(map[string]int32)
					e.Counters.Thresholds = make(map[string]Threshold)
				}
				e.Counters.Events[ev.String()] = n
				e.Counters.Thresholds[ev.String()] = r.th
			}
		})
	})
	s.prefixes.do(e.Counters.Prefix, false, func(v *prefixState, _ bool) {
		e.Counters.PrefixConns = int(v.conns)
		e.Counters.PrefixTokens = v.rate.peek(ns, lim.PerPrefixRate, lim.PerPrefixBurst)
	})
	e.Reputation = s.Reputation(addr)
	e.Decision = s.Decide(addr, "")
	return e
}

// ConnInfo describes one live connection.
type ConnInfo struct {
	ID            uint64     `json:"id"`
	Listener      string     `json:"listener"`
	Addr          netip.Addr `json:"addr"`
	Since         time.Time  `json:"since"`
	LastActivity  time.Time  `json:"last_activity"`
	Authenticated bool       `json:"authenticated"`
	KnownGood     bool       `json:"known_good"`
}

// Conns lists the live connections of every listener, oldest first.
func (s *Shield) Conns() []ConnInfo {
	s.lnMu.Lock()
	lns := append([]*listener(nil), s.listeners...)
	s.lnMu.Unlock()
	var out []ConnInfo
	for _, l := range lns {
		l.mu.Lock()
		for c := range l.conns {
			out = append(out, ConnInfo{ID: c.id, Listener: l.lc.Name, Addr: c.addr, Since: c.since,
				LastActivity: time.Unix(0, c.lastActive.Load()), Authenticated: c.authed.Load(), KnownGood: c.knownGood.Load()})
		}
		l.mu.Unlock()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// ListenerStats are the counters of one listener or middleware name.
type ListenerStats struct {
	Accepted  uint64 `json:"accepted"`
	Rejected  uint64 `json:"rejected"`
	Dropped   uint64 `json:"dropped"`
	Tarpitted uint64 `json:"tarpitted"`
	Evicted   uint64 `json:"evicted"` // closed by the shield after admission: eviction, ban, lockdown, newly denied
	Active    int64  `json:"active"`
}

// Stats are the shield's counters since New.
type Stats struct {
	Listeners     map[string]ListenerStats `json:"listeners"`
	BansActive    int                      `json:"bans_active"`
	BansIssued    map[string]uint64        `json:"bans_issued"`  // by reason
	BansDropped   uint64                   `json:"bans_dropped"` // not issued because the ban table was full
	ReloadsOK     uint64                   `json:"reloads_ok"`
	ReloadsFailed uint64                   `json:"reloads_failed"`
	TarpitHeld    int64                    `json:"tarpit_held"`
	Rules         int                      `json:"rules"`
	Lockdown      bool                     `json:"lockdown"`
	StoreDropped  uint64                   `json:"store_dropped"` // state store writes dropped because the queue was full
	StoreErrors   uint64                   `json:"store_errors"`  // state store writes that failed
	Counters      CounterStats             `json:"counters"`      // behaviour counted across nodes (a shared store)
	Kernel        KernelStats              `json:"kernel"`        // [shield.kernel]: what the kernel dropped
}

// Stats returns a snapshot of the counters.
func (s *Shield) Stats() Stats {
	st := Stats{Listeners: make(map[string]ListenerStats), BansIssued: make(map[string]uint64),
		ReloadsOK: s.reloadsOK.Load(), ReloadsFailed: s.reloadsFailed.Load(), TarpitHeld: s.tarpitHeld.Load(),
		Rules: s.pol.Load().size(), Lockdown: s.lockdown.Load(), StoreDropped: s.storeDropped.Load(), StoreErrors: s.storeErrors.Load(),
		Counters: s.counts.stats()}
	st.Kernel = s.kernelStats()
	s.lnMu.Lock()
	for name, c := range s.stats {
		st.Listeners[name] = ListenerStats{Accepted: c.accepted.Load(), Rejected: c.rejected.Load(), Dropped: c.dropped.Load(),
			Tarpitted: c.tarpitted.Load(), Evicted: c.evicted.Load()}
	}
	for _, l := range s.listeners {
		ls := st.Listeners[l.lc.Name]
		ls.Active += l.active.Load()
		st.Listeners[l.lc.Name] = ls
	}
	s.lnMu.Unlock()
	now := s.now()
	for _, b := range s.bans.Load().All() {
		if now.Before(b.expires) {
			st.BansActive++
		}
	}
	s.banMu.Lock()
	for k, v := range s.issued {
		st.BansIssued[k] = v
	}
	st.BansDropped = s.dropped
	s.banMu.Unlock()
	return st
}
