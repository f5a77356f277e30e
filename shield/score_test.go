package shield

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeScores is a ScoreSource answering from a map.
type fakeScores struct {
	mu sync.Mutex
	m  map[netip.Addr]float64
}

func (f *fakeScores) PeekScore(a netip.Addr) (float64, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.m[a]
	return v, ok
}

func near(a, b float64) bool { return math.Abs(a-b) < 0.011 }

func repConfig() Config {
	c := testConfig()
	c.Reputation.HalfLife = time.Hour
	return c
}

// TestReputationBansErrorsAndDecay: protocol errors and the bans they lead
// to lower the address's score and its network's, each kept as its own
// part; an escalated ban weighs its level; everything halves in one
// half-life.
func TestReputationBansErrorsAndDecay(t *testing.T) {
	cfg := repConfig()
	cfg.Thresholds.SetCount("protocol_error", 3)
	h := newHarness(t, cfg, Options{})
	bad := mustAddr("127.70.0.1")
	neighbour := mustAddr("127.70.0.2")

	for range 3 { // the third is a ban, level 1
		h.s.report(nil, bad, ProtocolError, h.clock.Now())
	}
	r := h.s.Reputation(bad)
	if !near(r.Address.Parts["protocol_error"], -3) || !near(r.Address.Parts["ban"], -5) || !near(r.Address.Score, -8) {
		t.Fatalf("after 3 errors and a ban: %+v", r.Address)
	}
	if r.Network.Prefix != mustPrefix("127.70.0.0/24") || !near(r.Network.Score, -8) {
		t.Fatalf("network: %+v", r.Network)
	}
	if r.Standing != Untrusted {
		t.Fatalf("standing %v at score %v", r.Standing, r.Address.Score)
	}
	// A neighbour with no record of its own is neutral: the network is not
	// yet bad enough (network_untrusted -20).
	if n := h.s.Reputation(neighbour); n.Address.Score != 0 || n.Standing != Neutral {
		t.Fatalf("neighbour: %+v", n)
	}

	// One half-life later: halved. The ban has expired (10m); three more
	// errors ban again at level 2 (-10).
	h.clock.Advance(time.Hour)
	if r := h.s.Reputation(bad); !near(r.Address.Score, -4) || !near(r.Address.Parts["ban"], -2.5) {
		t.Fatalf("one half-life later: %+v", r.Address)
	}
	for range 3 {
		h.s.report(nil, bad, ProtocolError, h.clock.Now())
	}
	if b := h.s.Bans(); len(b) != 1 || b[0].Count != 2 {
		t.Fatalf("bans: %+v", b)
	}
	r = h.s.Reputation(bad)
	if !near(r.Address.Parts["ban"], -12.5) || !near(r.Address.Parts["protocol_error"], -4.5) || !near(r.Address.Score, -17) {
		t.Fatalf("after the level-2 ban: %+v", r.Address)
	}
	// The network is now bad enough that a neighbour is untrusted too.
	h.s.report(nil, neighbour, ProtocolError, h.clock.Now())
	h.s.report(nil, neighbour, ProtocolError, h.clock.Now())
	h.s.report(nil, neighbour, ProtocolError, h.clock.Now()) // and banned
	other := mustAddr("127.70.0.3")
	if o := h.s.Reputation(other); o.Address.Score != 0 || o.Network.Score > -20 || o.Standing != Untrusted {
		t.Fatalf("a fresh address of a bad network: %+v", o)
	}
	// Many half-lives later nothing is left.
	h.clock.Advance(20 * time.Hour)
	if r := h.s.Reputation(bad); r.Address.Score != 0 || r.Standing != Neutral {
		t.Fatalf("after 20 half-lives: %+v", r)
	}
}

// TestReputationTableEvictsLeastSignificant: the score tables hold
// table_size entries; when full, a decayed or trivial score goes before a
// heavy one, however long ago the heavy one was touched (a plain LRU
// would forget the banned address first).
func TestReputationTableEvictsLeastSignificant(t *testing.T) {
	cfg := repConfig()
	cfg.TableSize = 64
	h := newHarness(t, cfg, Options{})
	banned := mustAddr("127.71.0.1")
	if err := h.s.Ban(hostPrefix(banned), time.Minute, "test", Reject); err != nil {
		t.Fatal(err)
	}
	for i := range 500 {
		h.s.report(nil, netip.AddrFrom4([4]byte{127, 72, byte(i / 250), byte(i%250 + 1)}), ProtocolError, h.clock.Now())
	}
	if n := h.s.repAddrs.len(); n > 64 {
		t.Fatalf("address table holds %d, bound 64", n)
	}
	if n := h.s.repNets.len(); n > 64 {
		t.Fatalf("network table holds %d, bound 64", n)
	}
	if r := h.s.Reputation(banned); !near(r.Address.Score, -5) {
		t.Fatalf("the banned address was forgotten: %+v", r.Address)
	}
}

// TestUntrustedEvictedFirstAndNoReserve: a client whose score is
// untrusted gets no reserved share, and when a full listener makes room
// for a stranger its idle connection goes first, even though another
// network holds the largest share; a client trusted by its score uses the
// reserve like a known-good one.
func TestUntrustedEvictedFirstAndNoReserve(t *testing.T) {
	cfg := repConfig()
	cfg.Thresholds.SetCount("protocol_error", 100)
	h := newHarness(t, cfg, Options{})
	src := &fakeScores{m: map[netip.Addr]float64{mustAddr("127.63.0.1"): -6}} // an allowlisting: +6, trusted
	h.s.SetScoreSource(src)
	srv := startServer(t, h.s, ListenerConfig{Name: "smtp", MaxConns: 10}) // 8 for strangers
	untrusted := mustAddr("127.60.0.1")
	for range 5 {
		h.s.report(nil, untrusted, ProtocolError, h.clock.Now())
	}
	if st := h.s.Reputation(untrusted).Standing; st != Untrusted {
		t.Fatalf("standing %v", st)
	}

	bad := dialFrom(t, srv.addr, "127.60.0.1")
	bad.expect("220")
	var strangers []*client
	for i := range 7 { // one /16 holds the largest share
		c := dialFrom(t, srv.addr, fmt.Sprintf("127.61.0.%d", i+1))
		c.expect("220")
		strangers = append(strangers, c)
	}
	// The strangers' share is full and nobody is idle: an untrusted
	// newcomer gets no reserved slot.
	for range 5 {
		h.s.report(nil, mustAddr("127.60.0.2"), ProtocolError, h.clock.Now())
	}
	dialFrom(t, srv.addr, "127.60.0.2").expect("421 4.7.0 server busy")
	// A client trusted by its score (+6 from the outside source) uses the
	// reserve like a known-good one.
	trusted := dialFrom(t, srv.addr, "127.63.0.1") // score +6: the reserve
	trusted.expect("220")
	if r := trusted.cmd("NOOP"); r != "250 ok" {
		t.Fatal(r)
	}

	h.clock.Advance(time.Minute) // everyone idle
	stranger := dialFrom(t, srv.addr, "127.62.0.1")
	stranger.expect("220")
	bad.expectClosed()
	for _, c := range strangers {
		if r := c.cmd("NOOP"); r != "250 ok" {
			t.Fatalf("a stranger was evicted before the untrusted client: %q", r)
		}
	}
}

// TestGoodScoreServedInLockdown: during lockdown an address whose score
// reaches reputation.lockdown is served (and its open connection is kept
// when lockdown starts); a merely trusted one and a stranger are dropped.
func TestGoodScoreServedInLockdown(t *testing.T) {
	h := newHarness(t, repConfig(), Options{})
	h.s.SetScoreSource(&fakeScores{m: map[netip.Addr]float64{
		mustAddr("127.64.0.1"): -12, // +12: served in lockdown
		mustAddr("127.64.0.2"): -6,  // +6: trusted, not enough for lockdown
	}})
	srv := startServer(t, h.s, ListenerConfig{Name: "smtp"})
	open := dialFrom(t, srv.addr, "127.64.0.1")
	open.expect("220")
	stranger := dialFrom(t, srv.addr, "127.64.0.3")
	stranger.expect("220")

	h.s.SetLockdown(true)
	stranger.expectClosed()
	if r := open.cmd("NOOP"); r != "250 ok" {
		t.Fatalf("the well-scored client lost its connection to lockdown: %q", r)
	}
	dialFrom(t, srv.addr, "127.64.0.1").expect("220")
	expectDropped(t, srv.addr, "127.64.0.2")
	expectDropped(t, srv.addr, "127.64.0.4")
	if r := h.s.Why(mustAddr("127.64.0.1")); !r.Reputation.LockdownServed || !near(r.Reputation.Address.Parts["dnsbl"], 12) {
		t.Fatalf("why: %+v", r.Reputation)
	}
}

// TestReputationSurvivesRestart: the score tables are saved in the state
// folder and read back, parts by name, decaying from when they were saved.
func TestReputationSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := repConfig()
	clock := newFakeClock()
	s, err := New(cfg, Options{StateDir: dir, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	a := mustAddr("127.73.0.1")
	for range 4 {
		s.report(nil, a, ProtocolError, clock.Now())
	}
	if err := s.Ban(mustPrefix("127.74.0.0/24"), time.Minute, "test", Reject); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	s2, err := New(cfg, Options{StateDir: dir, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if r := s2.Reputation(a); !near(r.Address.Parts["protocol_error"], -2) || !near(r.Network.Score, -2) {
		t.Fatalf("after a restart one half-life later: %+v", r)
	}
	if r := s2.Reputation(mustAddr("127.74.0.9")); !near(r.Network.Parts["ban"], -2.5) {
		t.Fatalf("network ban after a restart: %+v", r.Network)
	}
	addrs, nets := s2.WorstScores(10)
	if len(addrs) != 1 || addrs[0].Prefix != hostPrefix(a) || len(nets) != 2 || nets[0].Prefix != mustPrefix("127.74.0.0/24") {
		t.Fatalf("worst: %+v %+v", addrs, nets)
	}
}

// TestReputationReconfigure: [reputation] thresholds and weights apply to
// the running shield; a bad value is refused, naming its key, and changes
// nothing.
func TestReputationReconfigure(t *testing.T) {
	cfg := repConfig()
	h := newHarness(t, cfg, Options{})
	a := mustAddr("127.75.0.1")
	for range 3 {
		h.s.report(nil, a, ProtocolError, h.clock.Now())
	}
	if st := h.s.Reputation(a).Standing; st != Neutral {
		t.Fatalf("standing %v at -3 with untrusted -5", st)
	}
	next := cfg
	next.Reputation.Untrusted = -3
	next.Reputation.Weights = ReputationWeights{"protocol_error": -2}
	if err := h.s.Reconfigure(next); err != nil {
		t.Fatal(err)
	}
	if st := h.s.Reputation(a).Standing; st != Untrusted {
		t.Fatalf("standing %v at -3 with untrusted -3", st)
	}
	h.s.report(nil, a, ProtocolError, h.clock.Now())
	if r := h.s.Reputation(a); !near(r.Address.Score, -5) {
		t.Fatalf("the new weight -2 did not apply: %+v", r.Address)
	}

	bad := next
	bad.Reputation.Untrusted = 1
	bad.Reputation.HalfLife = time.Second
	bad.Reputation.Weights = ReputationWeights{"no_such_event": -1}
	err := h.s.Reconfigure(bad)
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("bad reputation config accepted: %v", err)
	}
	for _, want := range []string{"reputation.untrusted: must be < 0", "reputation.half_life: must be at least 1m", "reputation.weights.no_such_event: no such input"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
	if h.s.cfg().Reputation.Untrusted != -3 {
		t.Fatal("a refused config changed the thresholds")
	}
}

// A damaged reputation file costs the scores, never the start: New logs it
// and starts from nothing; absurd values are bounded.
func TestReputationFileDamaged(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir+"/"+reputationFile, `{"version":1,"addresses":[{"prefix":"127.76.0.1/32","at":`)
	h := newHarness(t, repConfig(), Options{StateDir: dir})
	if !strings.Contains(h.logs.String(), "shield reputation not loaded") {
		t.Fatalf("no log line for the damaged file:\n%s", h.logs.String())
	}
	h.s.Close()

	writeFile(t, dir+"/"+reputationFile, `{"version":1,"addresses":[
		{"prefix":"127.76.0.1/32","at":-5,"parts":{"protocol_error":-1e300,"no_such_input":-4}},
		{"prefix":"127.76.0.2/32","at":1,"parts":{}}],
		"networks":[{"prefix":"127.76.0.0/24","at":4000000000000000000,"parts":{"ban":-5}}]}`)
	h2 := newHarness(t, repConfig(), Options{StateDir: dir})
	r := h2.s.Reputation(mustAddr("127.76.0.1"))
	if math.IsInf(r.Address.Score, 0) || r.Address.Score > -1e6 || len(r.Address.Parts) != 1 || !near(r.Network.Score, -5) {
		t.Fatalf("loaded: %+v", r)
	}
}
