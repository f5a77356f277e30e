package shield

import (
	"fmt"
	"testing"
	"time"
)

// TestGuessingIPv6Network: failed logins spread over many /64s of one /48
// (each address failing once) ban the /48, counted over guessing.ipv6_prefix
// and not the /64 of ipv6_prefix; the ban spares an address of the /48 that
// logged in before, and the account's owner network never waits.
func TestGuessingIPv6Network(t *testing.T) {
	h := newHarness(t, testConfig(), Options{})
	s := h.s
	owner := mustAddr("2001:db8:7:1::10")
	s.report(nil, owner, AuthSuccess, h.clock.Now())
	s.markOwner("carol@example.org", owner, h.clock.Now())

	for i := range 30 {
		a := mustAddr(fmt.Sprintf("2001:db8:7:%x::1", 0x100+i)) // 30 different /64s
		s.reportAccount("carol@example.org", a, h.clock.Now())
		d := s.report(nil, a, AuthFailure, h.clock.Now())
		if i < 29 && d.Action != Allow {
			t.Fatalf("failure %d refused: %+v", i+1, d)
		}
		h.clock.Advance(100 * time.Millisecond)
	}
	var found bool
	for _, b := range s.Bans() {
		if b.Prefix == mustPrefix("2001:db8:7::/48") && b.Reason == "network_auth_failure" {
			found = true
		}
	}
	if !found {
		t.Fatalf("bans %+v: want 2001:db8:7::/48 for network_auth_failure", s.Bans())
	}
	if d := s.Decide(mustAddr("2001:db8:7:ffff::9"), ""); d.Action == Allow {
		t.Fatal("a fresh address of the banned /48 is served")
	}
	if d := s.Decide(owner, ""); d.Action != Allow {
		t.Fatalf("the known-good owner inside the banned /48 is refused: %+v", d)
	}
	if d := s.Decide(mustAddr("2001:db8:8::1"), ""); d.Action != Allow {
		t.Fatalf("an address of another /48 is refused: %+v", d)
	}
	// The owner's network never waits; anyone else waits the doubling
	// delay, capped after 30 failures.
	if d := s.AccountDelayFrom("carol@example.org", owner); d != 0 {
		t.Fatalf("owner's delay %v", d)
	}
	if d := s.AccountDelayFrom("carol@example.org", mustAddr("2001:db8:9::1")); d != s.cfg().AccountDelayMax {
		t.Fatalf("stranger's delay %v after 30 failures, want the cap", d)
	}
}
