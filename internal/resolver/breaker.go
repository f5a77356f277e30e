package resolver

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"time"
)

// ErrCircuitOpen is the cause of a lookup a Breaker did not send: the
// upstreams stopped answering. It matches ErrTemporary too (the *Error's
// kind): a caller treats it as any DNS timeout, a temporary failure.
var ErrCircuitOpen = errors.New("resolver: lookups suspended, the DNS servers did not answer the last queries")

// Breaker is a circuit breaker for lookups on a path that must not wait
// on a dead DNS (mail being accepted): after Failures consecutive lookups
// got no answer at all (timeouts, network errors; a SERVFAIL is an
// answer), lookups that the cache cannot answer fail at once with
// ErrCircuitOpen for Cooldown. Then one lookup at a time probes the
// upstreams: an answer closes the circuit, silence opens it again.
//
// A Breaker is safe for concurrent use.
type Breaker struct {
	Failures int           // default 5
	Cooldown time.Duration // default 30s
	Now      func() time.Time

	mu       sync.Mutex
	failures int       // consecutive lookups without an answer
	until    time.Time // open until
	probing  bool      // a probe is out
	skipped  uint64    // lookups not sent
}

// BreakerStats is what a Breaker did.
type BreakerStats struct {
	Open    bool   `json:"open"`
	Skipped uint64 `json:"skipped"` // lookups answered ErrCircuitOpen
}

func (b *Breaker) now() time.Time {
	if b.Now != nil {
		return b.Now()
	}
	return time.Now()
}

// allow reports whether a lookup may be sent, and whether it is the probe.
func (b *Breaker) allow() (ok, probe bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failures < b.threshold() {
		return true, false
	}
	if b.probing || b.now().Before(b.until) {
		b.skipped++
		return false, false
	}
	b.probing = true
	return true, true
}

// record takes the outcome of a sent lookup: answered or not. A lookup
// whose caller gave up (context cancelled) tells nothing.
func (b *Breaker) record(probe, answered bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if probe {
		b.probing = false
	}
	if answered {
		b.failures = 0
		return
	}
	b.failures++
	if b.failures >= b.threshold() {
		cd := b.Cooldown
		if cd <= 0 {
			cd = 30 * time.Second
		}
		b.until = b.now().Add(cd)
	}
}

// Stats returns the breaker's state.
func (b *Breaker) Stats() BreakerStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return BreakerStats{Open: b.failures >= b.threshold() && b.now().Before(b.until), Skipped: b.skipped}
}

func (b *Breaker) threshold() int {
	if b.Failures <= 0 {
		return 5
	}
	return b.Failures
}

// abandon ends a lookup whose caller gave up before any answer.
func (b *Breaker) abandon(probe bool) {
	if probe {
		b.mu.Lock()
		b.probing = false
		b.mu.Unlock()
	}
}

type breakerKey struct{}

// Guarded is a Resolver whose lookups go through a Breaker; answers still
// come from, and go to, the Resolver's cache.
type Guarded struct {
	R *Resolver
	B *Breaker
}

func (g Guarded) ctx(ctx context.Context) context.Context {
	return context.WithValue(ctx, breakerKey{}, g.B)
}

// A is Resolver.A through the breaker.
func (g Guarded) A(ctx context.Context, host string) ([]netip.Addr, Info, error) {
	return g.R.A(g.ctx(ctx), host)
}

// TXT is Resolver.TXT through the breaker.
func (g Guarded) TXT(ctx context.Context, name string) ([]string, Info, error) {
	return g.R.TXT(g.ctx(ctx), name)
}

// MX is Resolver.MX through the breaker.
func (g Guarded) MX(ctx context.Context, domain string) ([]MX, Info, error) {
	return g.R.MX(g.ctx(ctx), domain)
}

// IP is Resolver.IP through the breaker.
func (g Guarded) IP(ctx context.Context, host string) ([]netip.Addr, Info, error) {
	return g.R.IP(g.ctx(ctx), host)
}

// PTR is Resolver.PTR through the breaker.
func (g Guarded) PTR(ctx context.Context, addr netip.Addr) ([]string, Info, error) {
	return g.R.PTR(g.ctx(ctx), addr)
}

func breakerOf(ctx context.Context) *Breaker {
	b, _ := ctx.Value(breakerKey{}).(*Breaker)
	return b
}
