package shield

import (
	"context"
	"errors"
	"math"
	"net/netip"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gaissmai/bart"
)

// ban is one active ban. Bans live in an immutable bart table snapshot;
// only hits changes in place.
type ban struct {
	prefix   netip.Prefix
	reason   string // event name ("auth_failure") or the operator's text for manual bans
	action   Action
	created  time.Time
	expires  time.Time
	count    int // escalation level: 1 for a first offence
	manual   bool
	node     string // the node that issued it ("" = unnamed)
	hits     atomic.Int64
	decision Decision // precomputed, so refusing a banned client allocates nothing
	// spareGood: the ban does not refuse known-good addresses (a network
	// ban for guessing, see sparesKnownGood) nor revoke their status.
	spareGood bool
}

// BanInfo describes one active ban.
type BanInfo struct {
	Prefix  netip.Prefix `json:"prefix"`
	Reason  string       `json:"reason"`
	Action  Action       `json:"action"`
	Manual  bool         `json:"manual"`
	Created time.Time    `json:"created"`
	Expires time.Time    `json:"expires"`
	Count   int          `json:"count"`          // how many times this offender was banned (escalation level)
	Hits    int64        `json:"hits"`           // connections refused since the ban
	Node    string       `json:"node,omitempty"` // the node that issued it (Options.Node), with a shared store
}

func (b *ban) info() BanInfo {
	return BanInfo{Prefix: b.prefix, Reason: b.reason, Action: b.action, Manual: b.manual,
		Created: b.created, Expires: b.expires, Count: b.count, Hits: b.hits.Load(), Node: b.node}
}

// offender is the escalation history of an address or prefix.
type offender struct {
	count int
	last  int64 // unix nanoseconds of the last ban
}

// banLookup returns the most specific unexpired ban covering addr.
func (s *Shield) banLookup(addr netip.Addr, now time.Time) *ban {
	t := s.bans.Load()
	b, ok := t.Lookup(addr)
	if !ok {
		return nil
	}
	if now.Before(b.expires) {
		return b
	}
	// The most specific ban expired but has not been swept yet; a wider
	// one may still hold.
	var found *ban
	for _, sb := range t.Supernets(hostPrefix(addr)) {
		if now.Before(sb.expires) {
			found = sb
			break
		}
	}
	return found
}

// newBan builds a ban with its refusal decision.
func newBan(p netip.Prefix, reason string, action Action, temporary, manual bool, created time.Time, ttl time.Duration, count int) *ban {
	b := &ban{prefix: p, reason: reason, action: action, created: created, expires: created.Add(ttl), count: count, manual: manual,
		spareGood: sparesKnownGood(p, reason, manual)}
	text := reasonBannedManual
	if !manual {
		text = banText(reason)
	}
	b.decision = Decision{Action: action, Temporary: temporary, Reason: text, Source: "ban:" + reason}
	return b
}

// escalate records one more offence of p and returns the duration and
// escalation level of a ban for behaviour b.
func (s *Shield) escalate(p netip.Prefix, b *Behaviour, now time.Time) (time.Duration, int) {
	ns := now.UnixNano()
	count := 1
	s.offenders.do(p, true, func(o *offender, _ bool) {
		if o.count < 0 || (o.last != 0 && ns-o.last > s.cfg().OffenderTTL.Nanoseconds()) {
			o.count = 0
		}
		o.count++
		o.last = ns
		count = o.count
	})
	rec := OffenderRecord{Prefix: p, Count: count, Last: now, Expires: now.Add(s.cfg().OffenderTTL)}
	s.toStore(func(ctx context.Context, st StateStore) error { return st.PutOffender(ctx, rec) })
	base, maxTTL := s.cfg().BanTTL, s.cfg().BanMaxTTL
	if b.BanTTL > 0 {
		base, maxTTL = b.BanTTL, max(maxTTL, b.BanTTL)
	}
	if b.NoEscalation {
		return base, count
	}
	ttl := float64(base) * math.Pow(s.cfg().BanFactor, float64(count-1))
	if ttl > float64(maxTTL) || math.IsInf(ttl, 0) || math.IsNaN(ttl) {
		ttl = float64(maxTTL)
	}
	return time.Duration(ttl), count
}

// putBan stores b under banMu, keeping the table bounded.
func (s *Shield) putBan(b *ban, now time.Time) bool {
	t := s.bans.Load()
	if old, ok := t.Get(b.prefix); ok {
		b.hits.Store(old.hits.Load())
	} else if t.Size() >= s.cfg().TableSize {
		// Sweeping is O(bans): at most once a second when full.
		if now.Sub(s.lastSweep) >= time.Second || now.Before(s.lastSweep) {
			t = s.sweep(t, now)
			s.lastSweep = now
		}
		if t.Size() >= s.cfg().TableSize {
			s.dropped++
			s.bans.Store(t)
			return false
		}
	}
	if b.node == "" {
		b.node = s.node
	}
	s.bans.Store(t.InsertPersist(b.prefix, b))
	rec := b.record()
	s.toStore(func(ctx context.Context, st StateStore) error { return st.PutBan(ctx, rec) })
	if !b.spareGood {
		s.forgetKnownGood(b.prefix)
	}
	s.issued[b.reason]++
	s.repBan(b, now)
	s.log.Warn("shield ban", "addr", b.prefix.String(), "reason", b.reason, "ttl", b.expires.Sub(b.created).String(),
		"action", b.action.String(), "count", b.count)
	s.historyBan(BanEvent{Time: now, Kind: "ban", Prefix: b.prefix, Reason: b.reason, Action: b.action,
		TTL: b.expires.Sub(b.created), Count: b.count, Manual: b.manual})
	return true
}

// sweep removes expired bans from t and returns the new table.
func (s *Shield) sweep(t *bart.Table[*ban], now time.Time) *bart.Table[*ban] {
	var expired []*ban
	for _, b := range t.All() {
		if !now.Before(b.expires) {
			expired = append(expired, b)
		}
	}
	for _, b := range expired {
		t = t.DeletePersist(b.prefix)
		s.log.Info("shield unban", "addr", b.prefix.String(), "reason", b.reason, "cause", "expired", "hits", b.hits.Load())
		s.historyUnban(b, "expired", b.expires)
	}
	return t
}

// expireBans sweeps expired bans.
func (s *Shield) expireBans(now time.Time) {
	s.banMu.Lock()
	defer s.banMu.Unlock()
	s.bans.Store(s.sweep(s.bans.Load(), now))
}

// banBehaviour bans addr for crossing ev's threshold, then its prefix if
// enough of the prefix's addresses are banned. The reporting connection is
// not closed (its caller answers and closes); others from addr are.
func (s *Shield) banBehaviour(addr netip.Addr, r *eventRule, now time.Time, except *Conn) Decision {
	hp := hostPrefix(addr)
	s.banMu.Lock()
	ttl, count := s.escalate(hp, &r.b, now)
	b := newBan(hp, r.name, s.cfg().BanAction, r.b.Temporary, false, now, ttl, count)
	s.putBan(b, now)
	if s.counts != nil {
		s.counts.reset(countKey{ev: r.ev, subject: hp})
	}
	net := s.netPrefix(addr)
	var prefixBan *ban
	if !r.b.Temporary {
		prefixBan = s.maybeBanPrefix(net, r, now)
	}
	s.banMu.Unlock()
	if prefixBan != nil {
		s.kick(func(c *Conn) bool { return net.Contains(c.addr) && !s.pol.Load().exempt(c.addr) }, except, "ban")
	} else {
		s.kick(func(c *Conn) bool { return c.addr == addr }, except, "ban")
	}
	return b.decision
}

// maybeBanPrefix bans net when PrefixBanThreshold of its addresses are
// banned. Called under banMu.
func (s *Shield) maybeBanPrefix(net netip.Prefix, r *eventRule, now time.Time) *ban {
	t := s.bans.Load()
	if b, ok := t.Get(net); ok && now.Before(b.expires) {
		return nil
	}
	if s.pol.Load().trusted.LookupPrefix(net) {
		return nil
	}
	n := 0
	for p, b := range t.Subnets(net) {
		if p.Bits() == p.Addr().BitLen() && now.Before(b.expires) {
			n++
		}
	}
	if n < s.cfg().PrefixBanThreshold {
		return nil
	}
	ttl, count := s.escalate(net, &r.b, now)
	b := newBan(net, r.name, s.cfg().BanAction, false, false, now, ttl, count)
	if !s.putBan(b, now) {
		return nil
	}
	return b
}

// CanBan says why p cannot be banned (allowlisted, a trusted proxy), or
// nil, so a user interface offers a block only where it would work.
func (s *Shield) CanBan(p netip.Prefix) error {
	if !p.IsValid() {
		return errors.New("invalid prefix")
	}
	p = canonPrefix(p)
	pol := s.pol.Load()
	if r := pol.lookupPrefix(p); r != nil && r.allow {
		return errors.New("prefix is allowlisted")
	}
	if pol.trusted.LookupPrefix(p) {
		return errors.New("prefix is a trusted proxy")
	}
	return nil
}

// Ban bans p for ttl (ttl <= 0: Config.BanTTL) with the given client action
// (Allow: Config.BanAction). A prefix covered by an allow rule or a trusted
// proxy cannot be banned.
func (s *Shield) Ban(p netip.Prefix, ttl time.Duration, reason string, action Action) error {
	if err := s.CanBan(p); err != nil {
		return err
	}
	p = canonPrefix(p)
	pol := s.pol.Load()
	if action == Allow {
		action = s.cfg().BanAction
	}
	if action > Tarpit {
		return errors.New("invalid action")
	}
	if ttl <= 0 {
		ttl = s.cfg().BanTTL
	}
	reason = strings.TrimSpace(reason)
	if reason == "" {
		reason = "manual"
	}
	now := s.now()
	b := newBan(p, reason, action, false, true, now, ttl, 1)
	s.banMu.Lock()
	ok := s.putBan(b, now)
	s.banMu.Unlock()
	if !ok {
		return errors.New("ban table full")
	}
	s.kick(func(c *Conn) bool { return p.Contains(c.addr) && !pol.exempt(c.addr) }, nil, "ban")
	return nil
}

// Unban lifts the ban on exactly p.
func (s *Shield) Unban(p netip.Prefix) bool {
	if !p.IsValid() {
		return false
	}
	p = canonPrefix(p)
	s.banMu.Lock()
	defer s.banMu.Unlock()
	t := s.bans.Load()
	b, ok := t.Get(p)
	if !ok {
		return false
	}
	s.bans.Store(t.DeletePersist(p))
	s.toStore(func(ctx context.Context, st StateStore) error { return st.DeleteBan(ctx, p) })
	s.log.Info("shield unban", "addr", p.String(), "reason", b.reason, "cause", "manual", "hits", b.hits.Load())
	s.historyUnban(b, "manual", s.now())
	return true
}

// UnbanReason lifts every ban with the given reason and returns how many.
func (s *Shield) UnbanReason(reason string) int {
	return s.unbanWhere(func(b *ban) bool { return b.reason == reason })
}

// UnbanAll lifts every ban and returns how many.
func (s *Shield) UnbanAll() int { return s.unbanWhere(func(*ban) bool { return true }) }

func (s *Shield) unbanWhere(match func(*ban) bool) int {
	s.banMu.Lock()
	defer s.banMu.Unlock()
	t := s.bans.Load()
	var gone []*ban
	for _, b := range t.All() {
		if match(b) {
			gone = append(gone, b)
		}
	}
	for _, b := range gone {
		t = t.DeletePersist(b.prefix)
		p := b.prefix
		s.toStore(func(ctx context.Context, st StateStore) error { return st.DeleteBan(ctx, p) })
		s.log.Info("shield unban", "addr", b.prefix.String(), "reason", b.reason, "cause", "manual", "hits", b.hits.Load())
		s.historyUnban(b, "manual", s.now())
	}
	s.bans.Store(t)
	return len(gone)
}

// Bans lists the active bans, most recent first.
func (s *Shield) Bans() []BanInfo {
	now := s.now()
	var out []BanInfo
	for _, b := range s.bans.Load().All() {
		if now.Before(b.expires) {
			out = append(out, b.info())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out
}

// report records ev from addr. c is the reporting connection, or nil.
func (s *Shield) report(c *Conn, addr netip.Addr, ev Event, now time.Time) Decision {
	r := s.rule(ev)
	if r == nil {
		return allow
	}
	s.act.event(addr, ev)
	s.repEvent(c, addr, r, now)
	ns := now.UnixNano()
	pol := s.pol.Load()
	if r.b.KnownGood && s.activeBan(addr, now) == nil {
		s.markKnownGood(addr, ns)
		if c != nil && !c.knownGood.Swap(true) {
			c.uncontested()
		}
	}
	if pol.exempt(addr) {
		return allow
	}
	if b := s.activeBan(addr, now); b != nil && !s.cfg().DryRun {
		return b.decision
	}
	if r.b.Resets != 0 {
		had := false
		s.ips.do(addr, false, func(v *ipState, _ bool) {
			w := v.events.at(r.b.Resets)
			had = w.count > 0
			*w = window{}
		})
		if k := (countKey{ev: r.b.Resets, subject: hostPrefix(addr)}); s.counts != nil && (had || s.counts.has(k)) {
			s.counts.reset(k)
		}
	}
	if r.net.Count > 0 {
		if d, banned := s.networkFlood(addr, ev, r, now, c); banned {
			return d
		}
	}
	th := r.th
	if th.Count <= 0 {
		return allow
	}
	var n int32
	s.ips.do(addr, true, func(v *ipState, _ bool) {
		w := v.events.at(ev)
		n = w.add(ns, th.Window.Nanoseconds())
		if n >= int32(th.Count) {
			*w = window{}
		}
	})
	if n < int32(th.Count) && s.counts != nil {
		// Other nodes' events of this address, as last known.
		if total := s.counts.add(countKey{ev: ev, subject: hostPrefix(addr)}, ns); total >= int64(th.Count) {
			n = int32(min(total, 1<<30))
		}
	}
	if n < int32(th.Count) {
		return allow
	}
	if th.DryRun || s.cfg().DryRun {
		s.log.Info("shield would ban", "addr", addr.String(), "reason", r.name, "count", n, "window", th.Window.String())
		return s.wouldBlock(addr, r.decision, true)
	}
	return s.banBehaviour(addr, r, now, c)
}

// forgetKnownGood takes known-good status away from the addresses of a
// new ban, on every node: a bot that delivered accepted mail before it
// flooded must not be served under lockdown once its ban expires.
func (s *Shield) forgetKnownGood(p netip.Prefix) {
	s.forgetKnownGoodLocal(p)
	s.toStore(func(ctx context.Context, st StateStore) error { return st.RevokeKnownGood(ctx, p) })
}

func (s *Shield) forgetKnownGoodLocal(p netip.Prefix) { s.knownGood.deleteIn(p) }

// markKnownGood remembers addr as known-good until now+KnownGoodTTL. The
// store hears of it when the address becomes known-good and then at most
// once per KnownGoodTTL/100, not on every message.
func (s *Shield) markKnownGood(addr netip.Addr, ns int64) {
	until := ns + s.cfg().KnownGoodTTL.Nanoseconds()
	refresh := false
	s.knownGood.do(addr, true, func(v *int64, _ bool) {
		refresh = *v < until-s.cfg().KnownGoodTTL.Nanoseconds()/100
		*v = until
	})
	if refresh {
		u := time.Unix(0, until)
		s.toStore(func(ctx context.Context, st StateStore) error { return st.MarkKnownGood(ctx, addr, u) })
	}
}

// isKnownGood reports whether addr authenticated or delivered accepted mail
// within KnownGoodTTL.
func (s *Shield) isKnownGood(addr netip.Addr, ns int64) bool {
	good := false
	s.knownGood.do(addr, false, func(v *int64, _ bool) { good = *v > ns })
	return good
}

// networkFlood counts ev against the sender's network (a botnet spreads a
// flood over addresses that each stay under the per-address threshold)
// and, past the behaviour's network threshold, bans the network.
// Allowlisted addresses are never counted (report returns before).
func (s *Shield) networkFlood(addr netip.Addr, ev Event, r *eventRule, now time.Time, except *Conn) (Decision, bool) {
	th := r.net
	net := s.eventNet(addr, r)
	ns := now.UnixNano()
	var n int32
	s.prefixes.do(net, true, func(v *prefixState, _ bool) {
		w := v.events.at(ev)
		n = w.add(ns, th.Window.Nanoseconds())
		if n >= int32(th.Count) {
			*w = window{}
		}
	})
	if n < int32(th.Count) && s.counts != nil {
		// Other nodes' events of this network, as last known.
		if total := s.counts.add(countKey{ev: ev, net: true, subject: net}, ns); total >= int64(th.Count) {
			n = int32(min(total, 1<<30))
		}
	}
	if n < int32(th.Count) {
		return allow, false
	}
	return s.banNetwork(net, ev, r, now, except)
}

// banNetwork bans net for crossing ev's network threshold (unless dry run
// or a trusted proxy's) and closes its connections but except.
func (s *Shield) banNetwork(net netip.Prefix, ev Event, r *eventRule, now time.Time, except *Conn) (Decision, bool) {
	th := r.net
	if th.DryRun || s.cfg().DryRun {
		s.log.Info("shield would ban", "addr", net.String(), "reason", r.netName, "window", th.Window.String())
		return allow, false
	}
	if s.pol.Load().trusted.LookupPrefix(net) {
		return allow, false
	}
	if b, ok := s.bans.Load().Get(net); ok && now.Before(b.expires) {
		return b.decision, true // banned meanwhile (another node's crossing)
	}
	s.banMu.Lock()
	ttl, count := s.escalate(net, &r.b, now)
	b := newBan(net, r.netName, s.cfg().BanAction, r.b.Temporary, false, now, ttl, count)
	s.putBan(b, now)
	s.banMu.Unlock()
	if s.counts != nil {
		s.counts.reset(countKey{ev: ev, net: true, subject: net})
	}
	ns := s.now().UnixNano()
	s.kick(func(c *Conn) bool {
		return net.Contains(c.addr) && !s.pol.Load().exempt(c.addr) && !(b.spareGood && s.isKnownGood(c.addr, ns))
	}, except, "ban")
	return b.decision, true
}
