package shield

import (
	"fmt"
	"math"
	"net/netip"
	"sort"
	"strings"
	"sync/atomic"
	"time"
)

// Reputation, explained.
//
// Every address and every network (ipv4_prefix/ipv6_prefix: /24, /64) has
// a score: the sum of its parts, one part per input, each decaying
// exponentially with [reputation] half_life. An input adds its weight
// (reputation.weights) times its amount to the part of the address and to
// the part of the address's network:
//
//   - a ban: weights.ban (negative) × the ban's escalation level; a ban of
//     a network counts for that network only;
//   - a reported event: weights.<event>, by default the behaviour's own
//     [Behaviour.Reputation] (protocol_error, auth_failure: negative;
//     auth_success: positive; a service's own, such as agua's accepted
//     messages and SPF/DMARC results, likewise);
//   - the outside score of a [ScoreSource] (agua: the weighted DNS
//     blocklist score, positive when listed, negative when allowlisted):
//     weights.dnsbl (negative) × the score. It is latched, not added: the
//     part is set to the source's current answer whenever the shield asks
//     (at accept and in Why, never waiting), and decays once the source
//     stops answering.
//
// The shield uses the address's score at accept:
//
//   - at or above reputation.trusted the client counts as known-good for
//     capacity (the reserved share; never evicted for a stranger);
//   - at or below reputation.untrusted, or with its network's score at or
//     below reputation.network_untrusted (and its own not trusted), the
//     client is untrusted: no reserved share, and the first evicted when
//     a full listener makes room for anyone else;
//   - at or above reputation.lockdown it is served during lockdown.
//
// The tables are bounded by table_size each; when full, the least
// significant (smallest absolute score) of the least recently used entries
// is forgotten. They are saved in the state folder (shield-reputation.json)
// every save_interval and on Close, and read back by New. A shared store
// (Options.Store) does not share them: each node keeps its own.

// ReputationConfig configures the decaying reputation score.
type ReputationConfig struct {
	HalfLife         time.Duration     `toml:"half_life" doc:"every part of a score halves in this time (exponential decay)"`
	Trusted          float64           `toml:"trusted" doc:"an address score at or above this makes the client count as known-good for capacity: the reserved share (reserved_known_good), never evicted for a stranger"`
	Lockdown         float64           `toml:"lockdown" doc:"an address score at or above this serves the client during lockdown"`
	Untrusted        float64           `toml:"untrusted" doc:"an address score at or below this makes the client untrusted: no reserved share, and the first evicted when a full listener makes room"`
	NetworkUntrusted float64           `toml:"network_untrusted" doc:"a network score (ipv4_prefix/ipv6_prefix) at or below this makes the network's clients untrusted, unless their own score is trusted"`
	Weights          ReputationWeights `toml:"weights" doc:"points one input adds to the score of the address and of its network, by input: ban (per escalation level), dnsbl (per point of the outside score) and each event by name; negative is bad"`
}

// ReputationWeights maps an input's name to its weight: "ban", "dnsbl"
// or an event's name.
type ReputationWeights map[string]float64

// Default weights of the inputs that are not events.
const (
	defaultBanWeight   = -5 // per escalation level
	defaultDNSBLWeight = -1 // per point of the outside score (listed: positive)
)

// maxWeight bounds a weight and a threshold, so a score stays finite.
const maxWeight = 1e6

func defaultReputation() ReputationConfig {
	return ReputationConfig{HalfLife: 24 * time.Hour, Trusted: 5, Lockdown: 10, Untrusted: -5, NetworkUntrusted: -20,
		Weights: defaultWeights()}
}

// defaultWeights returns the weight of every input with one.
func defaultWeights() ReputationWeights {
	w := ReputationWeights{"ban": defaultBanWeight, "dnsbl": defaultDNSBLWeight}
	for _, b := range Behaviours() {
		if b.Reputation != 0 {
			w[b.Name] = b.Reputation
		}
	}
	return w
}

// weight returns the weight of the named input: the config's, else the
// default (a behaviour registered after the config was made).
func (w ReputationWeights) weight(name string) float64 {
	if v, ok := w[name]; ok {
		return v
	}
	switch name {
	case "ban":
		return defaultBanWeight
	case "dnsbl":
		return defaultDNSBLWeight
	}
	if ev, ok := LookupEvent(name); ok {
		return ev.Behaviour().Reputation
	}
	return 0
}

// DocOf documents one weight, with its sign.
func (w ReputationWeights) DocOf(name string) string {
	switch name {
	case "ban":
		return "per escalation level of a ban (negative: a ban lowers the score)"
	case "dnsbl":
		return "per point of the outside score, the DNS lists' weighted score (negative: a listing lowers the score, an allowlisting raises it)"
	}
	if ev, ok := LookupEvent(name); ok {
		sign := "positive: raises the score"
		if ev.Behaviour().Reputation < 0 {
			sign = "negative: lowers the score"
		}
		return "per event: " + ev.Behaviour().Doc + " (" + sign + ")"
	}
	return ""
}

func (r ReputationConfig) validate(bad func(field, format string, args ...any)) {
	if r.HalfLife < time.Minute {
		bad("reputation.half_life", "must be at least 1m (e.g. \"24h\")")
	}
	finite := func(field string, v float64) bool {
		if math.IsNaN(v) || math.Abs(v) > maxWeight {
			bad(field, "must be a number between -%g and %g", maxWeight, maxWeight)
			return false
		}
		return true
	}
	if finite("reputation.trusted", r.Trusted) && r.Trusted <= 0 {
		bad("reputation.trusted", "must be > 0")
	}
	if finite("reputation.lockdown", r.Lockdown) && r.Lockdown < r.Trusted {
		bad("reputation.lockdown", "must be >= reputation.trusted")
	}
	if finite("reputation.untrusted", r.Untrusted) && r.Untrusted >= 0 {
		bad("reputation.untrusted", "must be < 0")
	}
	if finite("reputation.network_untrusted", r.NetworkUntrusted) && r.NetworkUntrusted >= 0 {
		bad("reputation.network_untrusted", "must be < 0")
	}
	names := make([]string, 0, len(r.Weights))
	for n := range r.Weights {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if _, ok := repInputNamed(n); !ok {
			bad("reputation.weights."+n, "no such input (ban, dnsbl or a registered event: %s)", registeredNames())
			continue
		}
		finite("reputation.weights."+n, r.Weights[n])
	}
}

// ScoreSource is an outside numeric opinion of addresses, such as the
// weighted score of DNS block and allow lists (agua's internal/dnsbl):
// positive is bad. The shield asks it at accept and in Why and never
// waits: PeekScore answers only from what the source already knows.
type ScoreSource interface {
	PeekScore(addr netip.Addr) (score float64, ok bool)
}

// SetScoreSource makes src's answers the "dnsbl" part of every address's
// reputation; nil removes it.
func (s *Shield) SetScoreSource(src ScoreSource) {
	if src == nil {
		s.repSrc.Store(nil)
		return
	}
	s.repSrc.Store(&src)
}

// repSource holds the ScoreSource.
type repSource = atomic.Pointer[ScoreSource]

// Standing is what a client's reputation makes of it at accept.
type Standing uint8

const (
	Neutral   Standing = iota // a stranger
	Trusted                   // counts as known-good for capacity
	Untrusted                 // no reserved share, first evicted
)

func (st Standing) String() string {
	switch st {
	case Trusted:
		return "trusted"
	case Untrusted:
		return "untrusted"
	}
	return "neutral"
}

// MarshalText writes the standing's name.
func (st Standing) MarshalText() ([]byte, error) { return []byte(st.String()), nil }

// UnmarshalText reads a standing's name.
func (st *Standing) UnmarshalText(b []byte) error {
	switch string(b) {
	case "trusted":
		*st = Trusted
	case "untrusted":
		*st = Untrusted
	case "neutral", "":
		*st = Neutral
	default:
		return fmt.Errorf("bad standing %q", b)
	}
	return nil
}

// repInput is one input of a score: an Event, or ban, or the outside score.
type repInput uint16

const (
	inBan     repInput = 256 + iota // above every Event
	inOutside                       // ScoreSource, weights.dnsbl
)

func (in repInput) String() string {
	switch in {
	case inBan:
		return "ban"
	case inOutside:
		return "dnsbl"
	}
	return Event(in).String()
}

func repInputNamed(name string) (repInput, bool) {
	switch name {
	case "ban":
		return inBan, true
	case "dnsbl":
		return inOutside, true
	}
	ev, ok := LookupEvent(name)
	return repInput(ev), ok
}

// repNegligible is the smallest part kept: decayed below it, a part is
// forgotten.
const repNegligible = 0.01

// repPart is the decayed total of one input.
type repPart struct {
	in repInput
	v  float64
}

// repRec is the score of one address or network: its parts as of at.
type repRec struct {
	at    int64 // unix nanoseconds the parts were decayed to
	parts []repPart
}

// factor is how much of a value at at is left at ns.
func decayFactor(at, ns, halfLife int64) float64 {
	if at == 0 || ns <= at || halfLife <= 0 {
		return 1
	}
	return math.Exp2(-float64(ns-at) / float64(halfLife))
}

// decay brings the parts to ns, forgetting negligible ones.
func (r *repRec) decay(ns, halfLife int64) {
	if f := decayFactor(r.at, ns, halfLife); f != 1 {
		keep := r.parts[:0]
		for _, p := range r.parts {
			if p.v *= f; math.Abs(p.v) >= repNegligible {
				keep = append(keep, p)
			}
		}
		r.parts = keep
	}
	if ns > r.at {
		r.at = ns
	}
}

// part returns in's part, appended at zero if missing.
func (r *repRec) part(in repInput) *repPart {
	for i := range r.parts {
		if r.parts[i].in == in {
			return &r.parts[i]
		}
	}
	r.parts = append(r.parts, repPart{in: in})
	return &r.parts[len(r.parts)-1]
}

// add adds v to in's part, keeping it finite.
func (r *repRec) add(in repInput, v float64) {
	p := r.part(in)
	p.v = max(-maxWeight*maxWeight, min(maxWeight*maxWeight, p.v+v))
}

func (r *repRec) sum() float64 {
	t := 0.0
	for _, p := range r.parts {
		t += p.v
	}
	return t
}

// scoreAt is the score at ns without changing r (every part decays by
// the same factor).
func (r *repRec) scoreAt(ns, halfLife int64) float64 {
	return r.sum() * decayFactor(r.at, ns, halfLife)
}

// newRepTables makes the bounded score tables; eviction forgets the least
// significant of the least recently used entries.
func (s *Shield) newRepTables(n int) {
	s.repAddrs = newLRU[netip.Addr, repRec](n, hashAddr)
	s.repNets = newLRU[netip.Prefix, repRec](n, hashPrefix)
	sig := func(r *repRec) float64 {
		return math.Abs(r.scoreAt(s.now().UnixNano(), s.cfg().Reputation.HalfLife.Nanoseconds()))
	}
	s.repAddrs.significance = sig
	s.repNets.significance = sig
}

// repAdd adds weight × amount of in to addr's score and its network's.
func (s *Shield) repAdd(addr netip.Addr, in repInput, weight, amount float64, now time.Time) {
	v := weight * amount
	if v == 0 || math.IsNaN(v) {
		return
	}
	ns, hl := now.UnixNano(), s.cfg().Reputation.HalfLife.Nanoseconds()
	s.repAddrs.do(addr, true, func(r *repRec, _ bool) { r.decay(ns, hl); r.add(in, v) })
	s.repNets.do(s.netPrefix(addr), true, func(r *repRec, _ bool) { r.decay(ns, hl); r.add(in, v) })
}

// repEvent records a reported event in the reporting address's score. A
// connection whose client thereby became untrusted is marked so.
func (s *Shield) repEvent(c *Conn, addr netip.Addr, r *eventRule, now time.Time) {
	if r.rep == 0 {
		return
	}
	s.repAdd(addr, repInput(r.ev), r.rep, 1, now)
	if r.rep < 0 && c != nil && s.standing(addr, now.UnixNano()) == Untrusted {
		c.l.markUntrusted(c)
	}
}

// repBan records a new ban: on the address (and its network) for a host
// ban, on the network for a ban of the network or inside it. Wider bans
// are not scored: they refuse every address they cover anyway.
func (s *Shield) repBan(b *ban, now time.Time) {
	w := s.cfg().Reputation.Weights.weight("ban")
	if b.prefix.IsSingleIP() {
		s.repAdd(b.prefix.Addr(), inBan, w, float64(b.count), now)
		return
	}
	net := s.netPrefix(b.prefix.Addr())
	if b.prefix.Bits() < net.Bits() || w == 0 {
		return
	}
	ns, hl := now.UnixNano(), s.cfg().Reputation.HalfLife.Nanoseconds()
	s.repNets.do(net, true, func(r *repRec, _ bool) { r.decay(ns, hl); r.add(inBan, w*float64(b.count)) })
}

// repOutside latches the ScoreSource's answer for addr, if it has one, as
// the address's "dnsbl" part; its network's part moves by the change.
func (s *Shield) repOutside(addr netip.Addr, now time.Time) {
	sp := s.repSrc.Load()
	if sp == nil {
		return
	}
	score, ok := (*sp).PeekScore(addr)
	if !ok || math.IsNaN(score) {
		return
	}
	v := s.cfg().Reputation.Weights.weight("dnsbl") * score
	ns, hl := now.UnixNano(), s.cfg().Reputation.HalfLife.Nanoseconds()
	var delta float64
	s.repAddrs.do(addr, v != 0, func(r *repRec, _ bool) {
		r.decay(ns, hl)
		p := r.part(inOutside)
		delta = v - p.v
		p.v = v
	})
	if delta != 0 {
		s.repNets.do(s.netPrefix(addr), true, func(r *repRec, _ bool) { r.decay(ns, hl); r.add(inOutside, delta) })
	}
}

// scores returns the address's and its network's scores at ns.
func (s *Shield) scores(addr netip.Addr, ns int64) (a, n float64) {
	hl := s.cfg().Reputation.HalfLife.Nanoseconds()
	s.repAddrs.do(addr, false, func(r *repRec, _ bool) { a = r.scoreAt(ns, hl) })
	s.repNets.do(s.netPrefix(addr), false, func(r *repRec, _ bool) { n = r.scoreAt(ns, hl) })
	return a, n
}

// standing is what addr's reputation makes of it at ns.
func (s *Shield) standing(addr netip.Addr, ns int64) Standing {
	a, n := s.scores(addr, ns)
	return s.cfg().Reputation.standing(a, n)
}

func (r *ReputationConfig) standing(addr, network float64) Standing {
	switch {
	case addr >= r.Trusted:
		return Trusted
	case addr <= r.Untrusted || network <= r.NetworkUntrusted:
		return Untrusted
	}
	return Neutral
}

// lockdownServed reports whether addr's score serves it during lockdown.
func (s *Shield) lockdownServed(addr netip.Addr, ns int64) bool {
	a, _ := s.scores(addr, ns)
	return a >= s.cfg().Reputation.Lockdown
}

// Score is the reputation of one address or network, with its parts.
type Score struct {
	Prefix netip.Prefix       `json:"prefix"`
	Score  float64            `json:"score"`
	Parts  map[string]float64 `json:"parts,omitempty"` // by input: ban, dnsbl, or an event's name
}

// ReputationInfo explains an address's reputation: its score and its
// network's, each with its parts, and what they make of it.
type ReputationInfo struct {
	Address          Score    `json:"address"`
	Network          Score    `json:"network"`
	Standing         Standing `json:"standing"`
	LockdownServed   bool     `json:"lockdown_served"` // the score serves it during lockdown
	HalfLife         string   `json:"half_life"`
	Trusted          float64  `json:"trusted"`
	Untrusted        float64  `json:"untrusted"`
	NetworkUntrusted float64  `json:"network_untrusted"`
	Lockdown         float64  `json:"lockdown"`
}

// scoreOf renders r at ns.
func scoreOf(p netip.Prefix, r *repRec, ns, hl int64) Score {
	f := decayFactor(r.at, ns, hl)
	sc := Score{Prefix: p}
	for _, part := range r.parts {
		v := round2(part.v * f)
		if v == 0 {
			continue
		}
		if sc.Parts == nil {
			sc.Parts = make(map[string]float64, len(r.parts))
		}
		sc.Parts[part.in.String()] += v
		sc.Score += v
	}
	sc.Score = round2(sc.Score)
	return sc
}

func round2(v float64) float64 { return math.Round(v*100) / 100 }

// Reputation explains addr's reputation now, asking the ScoreSource first
// (without waiting).
func (s *Shield) Reputation(addr netip.Addr) ReputationInfo {
	addr = unmap(addr)
	now := s.now()
	s.repOutside(addr, now)
	ns := now.UnixNano()
	r := &s.cfg().Reputation
	hl := r.HalfLife.Nanoseconds()
	info := ReputationInfo{Address: Score{Prefix: hostPrefix(addr)}, Network: Score{Prefix: s.netPrefix(addr)},
		HalfLife: r.HalfLife.String(), Trusted: r.Trusted, Untrusted: r.Untrusted, NetworkUntrusted: r.NetworkUntrusted, Lockdown: r.Lockdown}
	s.repAddrs.do(addr, false, func(v *repRec, _ bool) { info.Address = scoreOf(info.Address.Prefix, v, ns, hl) })
	s.repNets.do(info.Network.Prefix, false, func(v *repRec, _ bool) { info.Network = scoreOf(info.Network.Prefix, v, ns, hl) })
	info.Standing = r.standing(info.Address.Score, info.Network.Score)
	info.LockdownServed = info.Address.Score >= r.Lockdown
	return info
}

// WorstScores returns the n lowest-scored addresses and networks (scores
// below zero only), lowest first. It visits the whole tables: for
// dashboards and reports, not for every connection.
func (s *Shield) WorstScores(n int) (addrs, nets []Score) {
	ns := s.now().UnixNano()
	hl := s.cfg().Reputation.HalfLife.Nanoseconds()
	addrs = worst(s.repAddrs, n, ns, hl, hostPrefix)
	nets = worst(s.repNets, n, ns, hl, func(p netip.Prefix) netip.Prefix { return p })
	return addrs, nets
}

func worst[K comparable](t *lru[K, repRec], n int, ns, hl int64, prefix func(K) netip.Prefix) []Score {
	type cand struct {
		k K
		v float64
	}
	var top []cand // at most n, sorted by score
	t.each(func(k K, r *repRec) bool {
		v := r.scoreAt(ns, hl)
		if v >= 0 || n <= 0 || (len(top) == n && v >= top[n-1].v) {
			return true
		}
		i := sort.Search(len(top), func(i int) bool { return top[i].v > v })
		if len(top) < n {
			top = append(top, cand{})
		}
		copy(top[i+1:], top[i:])
		top[i] = cand{k, v}
		return true
	})
	out := make([]Score, 0, len(top))
	for _, c := range top {
		t.do(c.k, false, func(r *repRec, _ bool) { out = append(out, scoreOf(prefix(c.k), r, ns, hl)) })
	}
	return out
}

// Line renders a score and its parts on one line, worst part first:
// "-12.5 (ban -10, protocol_error -2.5)".
func (sc Score) Line() string {
	names := make([]string, 0, len(sc.Parts))
	for n := range sc.Parts {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		if sc.Parts[names[i]] != sc.Parts[names[j]] {
			return sc.Parts[names[i]] < sc.Parts[names[j]]
		}
		return names[i] < names[j]
	})
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s %+g", n, sc.Parts[n])
	}
	if len(parts) == 0 {
		return fmt.Sprintf("%g", sc.Score)
	}
	return fmt.Sprintf("%g (%s)", sc.Score, strings.Join(parts, ", "))
}
