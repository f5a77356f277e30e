package shield

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestBanKinds: each threshold bans at its count, with its reason and the
// right kind of refusal.
func TestBanKinds(t *testing.T) {
	tests := []struct {
		ev        Event
		count     int
		temporary bool
		reason    string
	}{
		{AuthFailure, 10, false, "banned for repeated authentication failures"},
		{UnknownRecipient, 20, false, "banned for too many unknown recipients"},
		{ProtocolError, 10, false, "banned for repeated protocol errors"},
		{PreGreet, 1, false, "banned for talking before the greeting"},
		{MessageAccepted, 500, true, "too many messages, slow down"},
		{RecipientAccepted, 2000, true, "too many recipients, slow down"},
	}
	for i, tt := range tests {
		t.Run(tt.ev.String(), func(t *testing.T) {
			h := newHarness(t, testConfig(), Options{})
			addr := mustAddr(fmt.Sprintf("192.0.2.%d", i+1))
			for n := 1; n < tt.count; n++ {
				if d := h.s.report(nil, addr, tt.ev, h.clock.Now()); d.Action != Allow {
					t.Fatalf("banned after %d: %+v", n, d)
				}
			}
			d := h.s.report(nil, addr, tt.ev, h.clock.Now())
			want := Decision{Action: Reject, Temporary: tt.temporary, Reason: tt.reason, Source: "ban:" + tt.ev.String()}
			if d != want {
				t.Fatalf("got %+v, want %+v", d, want)
			}
			if got := h.s.Decide(addr, ""); got != want {
				t.Fatalf("Decide %+v", got)
			}
			if !strings.Contains(h.logs.String(), fmt.Sprintf(`msg="shield ban" addr=%s/32 reason=%s ttl=10m0s action=reject`, addr, tt.ev)) {
				t.Fatalf("no ban line:\n%s", h.logs)
			}
			h.clock.Advance(10*time.Minute + time.Second)
			if got := h.s.Decide(addr, ""); got.Action != Allow {
				t.Fatalf("ban did not expire: %+v", got)
			}
		})
	}
}

func TestWindowForgetsOldEvents(t *testing.T) {
	h := newHarness(t, testConfig(), Options{})
	addr := mustAddr("192.0.2.50")
	for range 9 {
		h.s.report(nil, addr, AuthFailure, h.clock.Now())
	}
	h.clock.Advance(11 * time.Minute)
	for range 9 {
		if d := h.s.report(nil, addr, AuthFailure, h.clock.Now()); d.Action != Allow {
			t.Fatal("old failures still counted")
		}
	}
}

func TestAuthSuccessResetsOnlyAuthFailures(t *testing.T) {
	h := newHarness(t, testConfig(), Options{})
	addr := mustAddr("192.0.2.60")
	now := h.clock.Now()
	for range 9 {
		h.s.report(nil, addr, AuthFailure, now)
		h.s.report(nil, addr, ProtocolError, now)
	}
	h.s.report(nil, addr, AuthSuccess, now)
	if d := h.s.report(nil, addr, AuthFailure, now); d.Action != Allow {
		t.Fatalf("auth failures not reset: %+v", d)
	}
	if d := h.s.report(nil, addr, ProtocolError, now); d.Source != "ban:protocol_error" {
		t.Fatalf("AuthSuccess must not be a free pass for other thresholds: %+v", d)
	}
}

// TestAuthBanOverSocket: the session that crosses the threshold is told why
// and closed; new connections are refused; another open session of the same
// address is closed.
func TestAuthBanOverSocket(t *testing.T) {
	cfg := testConfig()
	cfg.Thresholds.SetCount("auth_failure", 3)
	h := newHarness(t, cfg, Options{})
	srv := startServer(t, h.s, ListenerConfig{Name: "submission"})
	other := dialFrom(t, srv.addr, "127.60.0.1")
	other.expect("220")
	c := dialFrom(t, srv.addr, "127.60.0.1")
	c.expect("220")
	c.cmd("AUTH root x")
	c.cmd("AUTH root y")
	if r := c.cmd("AUTH root z"); r != "554 5.7.1 banned for repeated authentication failures" {
		t.Fatal(r)
	}
	c.expectClosed()
	other.expectClosed()
	if l := dialFrom(t, srv.addr, "127.60.0.1").expect("554"); !strings.Contains(l, "authentication failures") {
		t.Fatal(l)
	}
	bans := h.s.Bans()
	if len(bans) != 1 || bans[0].Prefix != mustPrefix("127.60.0.1/32") || bans[0].Hits != 1 || bans[0].Reason != "auth_failure" {
		t.Fatalf("%+v", bans)
	}
	if h.s.AccountDelay("ROOT") == 0 {
		t.Fatal("account failures not tracked")
	}
}

func TestEscalation(t *testing.T) {
	cfg := testConfig()
	cfg.BanMaxTTL = 35 * time.Minute
	h := newHarness(t, cfg, Options{})
	addr := mustAddr("192.0.2.70")
	for _, want := range []time.Duration{10 * time.Minute, 20 * time.Minute, 35 * time.Minute, 35 * time.Minute} {
		h.s.report(nil, addr, PreGreet, h.clock.Now())
		b := h.s.Bans()
		if len(b) != 1 || b[0].Expires.Sub(b[0].Created) != want {
			t.Fatalf("want ttl %v, got %+v", want, b)
		}
		h.clock.Advance(want + time.Second)
	}
	// After the offender history expires, the next ban is a first one again.
	h.clock.Advance(cfg.OffenderTTL + time.Hour)
	h.s.report(nil, addr, PreGreet, h.clock.Now())
	if b := h.s.Bans(); b[0].Count != 1 || b[0].Expires.Sub(b[0].Created) != 10*time.Minute {
		t.Fatalf("%+v", b)
	}
}

func TestPrefixBan(t *testing.T) {
	h := newHarness(t, testConfig(), Options{})
	for i := 1; i <= 5; i++ {
		h.s.report(nil, mustAddr(fmt.Sprintf("198.51.100.%d", i)), PreGreet, h.clock.Now())
	}
	d := h.s.Decide(mustAddr("198.51.100.200"), "")
	if d.Action != Reject || d.Source != "ban:pregreet" {
		t.Fatalf("prefix not banned: %+v", d)
	}
	found := false
	for _, b := range h.s.Bans() {
		found = found || b.Prefix == mustPrefix("198.51.100.0/24")
	}
	if !found {
		t.Fatal("no /24 ban listed")
	}
	if d := h.s.Decide(mustAddr("198.51.101.1"), ""); d.Action != Allow {
		t.Fatalf("neighbour prefix banned: %+v", d)
	}
	// IPv6 groups by /64.
	for i := 1; i <= 5; i++ {
		h.s.report(nil, mustAddr(fmt.Sprintf("2001:db8:0:1::%d", i)), PreGreet, h.clock.Now())
	}
	if d := h.s.Decide(mustAddr("2001:db8:0:1:ffff::1"), ""); d.Action != Reject {
		t.Fatalf("/64 not banned: %+v", d)
	}
}

func TestAllowlistedNeverBanned(t *testing.T) {
	cfg := testConfig()
	cfg.Allow = []string{"192.0.2.0/28"}
	cfg.TrustedProxies = []string{"10.9.9.9"}
	h := newHarness(t, cfg, Options{})
	for _, a := range []string{"192.0.2.1", "10.9.9.9"} {
		for range 100 {
			if d := h.s.report(nil, mustAddr(a), ProtocolError, h.clock.Now()); d.Action != Allow {
				t.Fatalf("%s banned: %+v", a, d)
			}
		}
	}
	if err := h.s.Ban(mustPrefix("192.0.2.1/32"), time.Hour, "x", Drop); err == nil {
		t.Fatal("manual ban of an allowlisted address accepted")
	}
	if err := h.s.Ban(mustPrefix("10.9.9.9/32"), time.Hour, "x", Drop); err == nil {
		t.Fatal("manual ban of a trusted proxy accepted")
	}
}

func TestThresholdDryRun(t *testing.T) {
	cfg := testConfig()
	cfg.Thresholds.SetDryRun("pregreet", true)
	h := newHarness(t, cfg, Options{})
	d := h.s.report(nil, mustAddr("192.0.2.80"), PreGreet, h.clock.Now())
	if d.Action != Allow || !d.DryRun || d.Source != "ban:pregreet" {
		t.Fatalf("%+v", d)
	}
	if len(h.s.Bans()) != 0 {
		t.Fatal("dry-run threshold banned")
	}
	if !strings.Contains(h.logs.String(), `msg="shield would ban" addr=192.0.2.80 reason=pregreet`) {
		t.Fatal(h.logs)
	}
}

func TestManualBansAndUnban(t *testing.T) {
	h := newHarness(t, testConfig(), Options{})
	if err := h.s.Ban(mustPrefix("203.0.113.0/24"), time.Hour, "spam wave", Tarpit); err != nil {
		t.Fatal(err)
	}
	h.s.Ban(mustPrefix("203.0.114.1/32"), 0, "spam wave", Allow)
	h.s.report(nil, mustAddr("192.0.2.90"), PreGreet, h.clock.Now())
	d := h.s.Decide(mustAddr("203.0.113.9"), "")
	if d.Action != Tarpit || d.Reason != "access denied" || d.Source != "ban:spam wave" {
		t.Fatalf("%+v", d)
	}
	if d := h.s.Decide(mustAddr("203.0.114.1"), ""); d.Action != Reject {
		t.Fatalf("default ban action: %+v", d)
	}
	if !h.s.Unban(mustPrefix("203.0.113.0/24")) || h.s.Unban(mustPrefix("203.0.113.0/24")) {
		t.Fatal("Unban")
	}
	if n := h.s.UnbanReason("spam wave"); n != 1 {
		t.Fatalf("UnbanReason %d", n)
	}
	if n := h.s.UnbanAll(); n != 1 {
		t.Fatalf("UnbanAll %d", n)
	}
	if len(h.s.Bans()) != 0 {
		t.Fatal("bans left")
	}
	if !strings.Contains(h.logs.String(), `msg="shield unban" addr=203.0.113.0/24`) {
		t.Fatal(h.logs)
	}
}

func TestStateSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock()
	cfg := testConfig()
	s1, err := New(cfg, Options{StateDir: dir, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	s1.report(nil, mustAddr("192.0.2.100"), PreGreet, clock.Now())
	s1.report(nil, mustAddr("192.0.2.101"), AuthSuccess, clock.Now())
	s1.Ban(mustPrefix("2001:db8::/48"), 2*time.Hour, "manual", Drop)
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}

	clock.Advance(5 * time.Minute)
	s2, err := New(cfg, Options{StateDir: dir, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if d := s2.Decide(mustAddr("192.0.2.100"), ""); d.Source != "ban:pregreet" {
		t.Fatalf("ban lost: %+v", d)
	}
	if d := s2.Decide(mustAddr("2001:db8::1"), ""); d.Action != Drop {
		t.Fatalf("manual ban lost: %+v", d)
	}
	if !s2.Why(mustAddr("192.0.2.101")).KnownGood {
		t.Fatal("known-good lost")
	}
	// The offender history survives too: the next ban escalates.
	clock.Advance(10 * time.Minute)
	s2.report(nil, mustAddr("192.0.2.100"), PreGreet, clock.Now())
	for _, b := range s2.Bans() {
		if b.Prefix == mustPrefix("192.0.2.100/32") && (b.Count != 2 || b.Expires.Sub(b.Created) != 20*time.Minute) {
			t.Fatalf("not escalated after restart: %+v", b)
		}
	}
}

func TestAccountDelay(t *testing.T) {
	h := newHarness(t, testConfig(), Options{})
	if d := h.s.AccountDelay("alice@example.org"); d != 0 {
		t.Fatal(d)
	}
	var last time.Duration
	for i := range 20 {
		// Failures from many addresses all count against the account.
		a := netip.AddrFrom4([4]byte{198, 18, 0, byte(i)})
		h.s.reportAccount("alice@example.org", netip.Addr{}, h.clock.Now())
		h.s.report(nil, a, AuthFailure, h.clock.Now())
		d := h.s.AccountDelay("Alice@Example.org")
		if d < last || d > 5*time.Second || d == 0 {
			t.Fatalf("after %d failures: %v (last %v)", i+1, d, last)
		}
		last = d
	}
	if last != 5*time.Second {
		t.Fatalf("cap %v", last)
	}
	h.clock.Advance(16 * time.Minute)
	if d := h.s.AccountDelay("alice@example.org"); d != 0 {
		t.Fatalf("delay did not decay: %v", d)
	}
}

// TestTablesBounded: a million distinct addresses (and accounts) leave every
// table at its configured size (200,000 under the race detector).
func TestTablesBounded(t *testing.T) {
	cfg := testConfig()
	cfg.TableSize = 1000
	cfg.Thresholds.SetCount("protocol_error", 2)
	h := newHarness(t, cfg, Options{})
	l := h.s.Listener(dummyListener{}, ListenerConfig{Name: "smtp"}).(*listener)
	now := h.clock.Now()
	n := 1_000_000
	if raceEnabled {
		n = 200_000 // still 200 times the table size
	}
	for i := range n {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if i%2 == 0 { // the accept path: per-address and per-prefix state
			if d, release, _ := h.s.admit(l, a, now); release != nil {
				release()
			} else if d.Action == Allow {
				t.Fatal("allowed without a release")
			}
		}
		h.s.report(nil, a, ProtocolError, now)
		h.s.report(nil, a, ProtocolError, now)
		if i%100 == 0 {
			h.s.report(nil, a, AuthSuccess, now)
			h.s.reportAccount(a.String(), netip.Addr{}, now)
		}
	}
	limit := 1000 + lruShards // per-shard rounding
	for name, n := range map[string]int{"ips": h.s.ips.len(), "known-good": h.s.knownGood.len(),
		"accounts": h.s.accounts.len(), "offenders": h.s.offenders.len(), "prefixes": h.s.prefixes.len()} {
		if n > limit {
			t.Errorf("%s table has %d entries", name, n)
		}
	}
	if n := h.s.bans.Load().Size(); n > 1000 {
		t.Errorf("ban table has %d entries", n)
	}
	// Half the addresses crossed the threshold, yet bans were capped.
	if st := h.s.Stats(); st.BansDropped == 0 {
		t.Errorf("expected dropped bans at the cap: %+v", st)
	}
}

// TestNetworkFlood: a message flood spread over many addresses of one
// network, each far under the per-address threshold, bans the network
// with a temporary refusal; other networks are not touched.
func TestNetworkFlood(t *testing.T) {
	cfg := testConfig()
	cfg.Thresholds["network_message"] = Threshold{Count: 300, Window: time.Minute}
	h := newHarness(t, cfg, Options{})
	var d Decision
	for i := range 300 {
		addr := mustAddr(fmt.Sprintf("198.51.100.%d", 1+i%100)) // 3 messages each
		d = h.s.report(nil, addr, MessageAccepted, h.clock.Now())
		if i < 299 && d.Action != Allow {
			t.Fatalf("banned after %d messages: %+v", i+1, d)
		}
	}
	want := Decision{Action: Reject, Temporary: true, Reason: "too many messages from your network, slow down", Source: "ban:network_message"}
	if d != want {
		t.Fatalf("got %+v, want %+v", d, want)
	}
	if got := h.s.Decide(mustAddr("198.51.100.200"), ""); got != want {
		t.Fatalf("another address of the network: %+v", got)
	}
	if got := h.s.Decide(mustAddr("198.51.101.1"), ""); got.Action != Allow {
		t.Fatalf("the next network: %+v", got)
	}
	if !strings.Contains(h.logs.String(), `msg="shield ban" addr=198.51.100.0/24 reason=network_message`) {
		t.Fatalf("no ban line:\n%s", h.logs)
	}
}

// A ban takes known-good status away: an address that delivered accepted
// mail and then flooded is not served under lockdown after its ban.
func TestBanRevokesKnownGood(t *testing.T) {
	cfg := testConfig()
	cfg.Thresholds["message"] = Threshold{Count: 5, Window: time.Minute}
	h := newHarness(t, cfg, Options{})
	addr := mustAddr("192.0.2.77")
	h.s.report(nil, addr, MessageAccepted, h.clock.Now())
	if !h.s.isKnownGood(addr, h.clock.Now().UnixNano()) {
		t.Fatal("accepted mail did not make the address known-good")
	}
	for range 4 {
		h.s.report(nil, addr, MessageAccepted, h.clock.Now())
	}
	if d := h.s.Decide(addr, ""); d.Source != "ban:message" {
		t.Fatalf("not banned: %+v", d)
	}
	if h.s.isKnownGood(addr, h.clock.Now().UnixNano()) {
		t.Fatal("still known-good after its ban")
	}
	h.clock.Advance(11 * time.Minute)
	h.s.SetLockdown(true)
	if d := h.s.Decide(addr, ""); d.Action != Drop || d.Source != "lockdown" {
		t.Fatalf("under lockdown after the ban: %+v", d)
	}
}
