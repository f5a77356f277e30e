package resolver

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// A dead upstream: after Failures lookups without an answer, the breaker
// sends nothing more (ErrCircuitOpen, a temporary failure) until the
// cool-down ends; cached answers are still served; then one probe goes
// out, and an answer closes the circuit.
func TestBreakerDeadUpstream(t *testing.T) {
	r, srv, clk := newTest(t, Config{Timeout: 100 * time.Millisecond, Attempts: 1})
	srv.Add(t, "cached.test. 300 IN TXT \"v=spf1 -all\"", "alive.test. 300 IN TXT \"ok\"")
	b := &Breaker{Failures: 3, Cooldown: time.Minute, Now: clk.Now}
	g := Guarded{R: r, B: b}
	ctx := context.Background()
	if _, _, err := g.TXT(ctx, "cached.test"); err != nil {
		t.Fatal(err)
	}
	srv.SilentAll(true)
	for i := range 3 {
		_, _, err := g.TXT(ctx, "dead.test")
		if !errors.Is(err, ErrTemporary) || errors.Is(err, ErrCircuitOpen) {
			t.Fatalf("lookup %d: %v, want a timeout", i, err)
		}
	}
	sent := srv.Queries("dead.test", dns.TypeTXT)
	if sent != 3 {
		t.Fatalf("%d queries sent, want 3", sent)
	}
	_, _, err := g.TXT(ctx, "dead.test")
	if !errors.Is(err, ErrCircuitOpen) || !errors.Is(err, ErrTemporary) {
		t.Fatalf("open circuit: %v, want ErrCircuitOpen and ErrTemporary", err)
	}
	if _, _, err := g.TXT(ctx, "cached.test"); err != nil {
		t.Fatalf("cached answer while open: %v", err)
	}
	// Lookups without the breaker (outbound delivery) are not affected.
	if _, _, err := r.TXT(ctx, "dead.test"); errors.Is(err, ErrCircuitOpen) {
		t.Fatalf("unguarded lookup: %v", err)
	}
	if n := srv.Queries("dead.test", dns.TypeTXT); n != sent+1 {
		t.Fatalf("queries %d, want %d (only the unguarded one sent)", n, sent+1)
	}
	if st := b.Stats(); !st.Open || st.Skipped != 1 {
		t.Fatalf("stats %+v", st)
	}
	// After the cool-down: one probe, which times out and reopens.
	clk.Add(time.Minute)
	if _, _, err := g.TXT(ctx, "dead.test"); errors.Is(err, ErrCircuitOpen) {
		t.Fatalf("probe after the cool-down not sent: %v", err)
	}
	if _, _, err := g.TXT(ctx, "dead.test"); !errors.Is(err, ErrCircuitOpen) {
		t.Fatalf("after a failed probe: %v, want the circuit open again", err)
	}
	// The upstream comes back: the next probe closes the circuit.
	srv.SilentAll(false)
	clk.Add(time.Minute)
	if _, _, err := g.TXT(ctx, "alive.test"); err != nil {
		t.Fatalf("probe: %v", err)
	}
	if _, _, err := g.TXT(ctx, "dead.test"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("closed circuit: %v, want an answer (no such name)", err)
	}
	// SERVFAIL is an answer: it never opens the circuit.
	srv.Rcode("fail.test", dns.TypeTXT, dns.RcodeServerFailure)
	for range 5 {
		if _, _, err := g.TXT(ctx, "fail.test"); errors.Is(err, ErrCircuitOpen) || !errors.Is(err, ErrTemporary) {
			t.Fatalf("SERVFAIL: %v", err)
		}
	}
}
