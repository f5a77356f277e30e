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
