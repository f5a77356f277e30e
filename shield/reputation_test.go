package shield

import (
	"net/netip"
	"testing"
)

// fakeRep refuses the addresses in listed on the listener named mx.
type fakeRep struct {
	mx     string
	listed map[netip.Addr]bool
}

func (f fakeRep) Peek(addr netip.Addr, listener string) (Verdict, bool) {
	if listener != f.mx || !f.listed[addr] {
		return Verdict{}, false
	}
	return Verdict{Refuse: true, Reason: "listed by bl.test", Source: "dnsbl:bl.test"}, true
}

func TestReputationRefusesAtAccept(t *testing.T) {
	cfg := testConfig()
	cfg.Allow = []string{"127.0.0.1/32", "127.0.4.4/32"}
	h := newHarness(t, cfg, Options{})
	mx := startServer(t, h.s, ListenerConfig{Name: "mx"})
	other := startServer(t, h.s, ListenerConfig{Name: "imap"})
	h.s.SetReputation(fakeRep{mx: "mx", listed: map[netip.Addr]bool{mustAddr("127.0.4.3"): true, mustAddr("127.0.4.4"): true}})

	dialFrom(t, mx.addr, "127.0.4.3").expect("554 5.7.1 listed by bl.test")
	dialFrom(t, mx.addr, "127.0.4.5").expect("220 ")
	dialFrom(t, other.addr, "127.0.4.3").expect("220 ") // only where the reputation applies
	dialFrom(t, mx.addr, "127.0.4.4").expect("220 ")    // allowlisted: never asked
	if d := h.s.Decide(mustAddr("127.0.4.3"), "mx"); d.Source != "dnsbl:bl.test" || d.Action != Reject {
		t.Errorf("Decide: %+v", d)
	}
	h.s.SetReputation(nil)
	dialFrom(t, mx.addr, "127.0.4.3").expect("220 ")
}

// untrustRep serves the addresses in bad as untrusted strangers.
type untrustRep map[netip.Addr]bool

func (u untrustRep) Peek(addr netip.Addr, _ string) (Verdict, bool) {
	if !u[addr] {
		return Verdict{}, false
	}
	return Verdict{Untrusted: true, Source: "dnsbl:bl.test"}, true
}

// An untrusted verdict takes a known-good client's reserved capacity away:
// it is admitted as a stranger, and KnownGood says so to the service.
func TestReputationUntrusted(t *testing.T) {
	h := newHarness(t, testConfig(), Options{})
	srv := startServer(t, h.s, ListenerConfig{Name: "mx"})
	good, other := mustAddr("127.0.5.1"), mustAddr("127.0.5.2")
	h.s.report(nil, good, MessageAccepted, h.clock.Now())
	h.s.report(nil, other, MessageAccepted, h.clock.Now())
	h.s.SetReputation(untrustRep{good: true})
	for src, want := range map[string]string{"127.0.5.1": "250 false", "127.0.5.2": "250 true", "127.0.5.3": "250 false"} {
		c := dialFrom(t, srv.addr, src)
		c.expect("220")
		if got := c.cmd("KNOWNGOOD"); got != want {
			t.Errorf("from %s: %q, want %q", src, got, want)
		}
	}
}
