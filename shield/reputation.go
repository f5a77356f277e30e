package shield

import (
	"net/netip"
	"sync/atomic"
)

// Reputation is an outside source of verdicts on client addresses, such as
// DNS blocklists (agua's internal/dnsbl). The shield asks it at accept and
// never waits: Peek answers only from what the source already knows.
type Reputation interface {
	// Peek returns the verdict on a client of the named listener from addr
	// if one is known now; ok is false when none is.
	Peek(addr netip.Addr, listener string) (v Verdict, ok bool)
}

// Verdict is a Reputation's judgement of one address.
type Verdict struct {
	Refuse bool   // refuse the connection (Reject, permanent)
	Reason string // client-safe text of the refusal
	Source string // for logs and reports, e.g. "dnsbl:zen.example"
	// Untrusted, without Refuse, serves the client as a stranger even if
	// it is known-good: no reserved capacity, evicted first like any
	// unknown client.
	Untrusted bool
}

// reputation holds the Reputation set by SetReputation.
type reputation struct{ r atomic.Pointer[Reputation] }

// SetReputation makes the shield refuse, at accept, the addresses r says
// to refuse; nil removes it. Trusted proxies and allowlisted addresses
// are never asked about, and bans and rules are decided first.
func (s *Shield) SetReputation(r Reputation) {
	if r == nil {
		s.rep.r.Store(nil)
		return
	}
	s.rep.r.Store(&r)
}

// repRefusal is the reputation's refusal of addr on l, if any.
func (s *Shield) repRefusal(addr netip.Addr, l *listener) (Decision, bool) {
	rp := s.rep.r.Load()
	if rp == nil || l == nil {
		return allow, false
	}
	v, ok := (*rp).Peek(addr, l.lc.Name)
	if !ok || !v.Refuse {
		return allow, false
	}
	return Decision{Action: Reject, Reason: v.Reason, Source: v.Source}, true
}

// repUntrusted reports whether the reputation asks to serve addr on l as
// an untrusted stranger.
func (s *Shield) repUntrusted(addr netip.Addr, l *listener) bool {
	rp := s.rep.r.Load()
	if rp == nil || l == nil {
		return false
	}
	v, ok := (*rp).Peek(addr, l.lc.Name)
	return ok && v.Untrusted
}
