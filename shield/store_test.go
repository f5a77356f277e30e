package shield

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// twoNodes is two Shields sharing one state through two LocalStore
// handles on the same folder, as two nodes share a Redis.
func twoNodes(t *testing.T) (*harness, *harness) { return twoNodesOf(t, 1000) }

// twoNodesOf is twoNodes with a store of the given capacity.
func twoNodesOf(t *testing.T, capacity int) (*harness, *harness) {
	dir := t.TempDir()
	var hs [2]*harness
	clock := newFakeClock()
	for i := range hs {
		st, err := OpenLocalStore(dir, LocalStoreOptions{Capacity: capacity, Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		hs[i] = newHarness(t, testConfig(), Options{Store: st, Node: fmt.Sprintf("node%d", i+1)})
	}
	for _, h := range hs { // one clock for both nodes and the store
		h.clock = clock
		h.s.now = clock.Now
	}
	return hs[0], hs[1]
}

// TestSharedStoreBans: a ban, an unban, a behaviour ban with its
// escalation, known-good status and lockdown made on one node are enforced
// on the other, and a ban closes the other node's open connections.
func TestSharedStoreBans(t *testing.T) {
	n1, n2 := twoNodes(t)
	srv := startServer(t, n2.s, ListenerConfig{Name: "smtp"})
	cl := dialFrom(t, srv.addr, "127.61.0.1")
	cl.expect("220")
	conns := n2.s.Conns()
	if len(conns) != 1 {
		t.Fatalf("conns %+v", conns)
	}

	if err := n1.s.Ban(mustPrefix("127.61.0.0/24"), time.Hour, "scanner", Drop); err != nil {
		t.Fatal(err)
	}
	eventually(t, "ban on node 2", func() bool { return n2.s.Decide(mustAddr("127.61.0.9"), "").Action == Drop })
	if _, err := cl.line(5 * time.Second); err == nil {
		t.Fatal("node 2 kept serving a connection node 1 banned")
	}
	if !n2.s.Unban(mustPrefix("127.61.0.0/24")) {
		t.Fatal("node 2 did not have the ban")
	}
	eventually(t, "unban on node 1", func() bool { return n1.s.Decide(mustAddr("127.61.0.9"), "").Action == Allow })

	// A behaviour ban and its escalation: the second offence on the other
	// node is the second level.
	addr := mustAddr("192.0.2.150")
	n1.s.report(nil, addr, PreGreet, n1.clock.Now())
	eventually(t, "behaviour ban on node 2", func() bool { return n2.s.Decide(addr, "").Source == "ban:pregreet" })
	n1.clock.Advance(11 * time.Minute)
	n2.s.report(nil, addr, PreGreet, n2.clock.Now())
	var b BanInfo
	for _, x := range n2.s.Bans() {
		if x.Prefix == hostPrefix(addr) {
			b = x
		}
	}
	if b.Count != 2 || b.Expires.Sub(b.Created) != 20*time.Minute {
		t.Fatalf("not escalated across nodes: %+v", b)
	}

	good := mustAddr("192.0.2.151")
	n1.s.report(nil, good, AuthSuccess, n1.clock.Now())
	eventually(t, "known-good on node 2", func() bool { return n2.s.Why(good).KnownGood })

	n1.s.SetLockdown(true)
	eventually(t, "lockdown on node 2", n2.s.Lockdown)
	if d := n2.s.Decide(mustAddr("192.0.2.152"), ""); d.Source != "lockdown" {
		t.Fatalf("node 2 in lockdown: %+v", d)
	}
	if d := n2.s.Decide(good, ""); d.Action != Allow {
		t.Fatalf("known-good refused under lockdown: %+v", d)
	}
	n2.s.SetLockdown(false)
	eventually(t, "lockdown off on node 1", func() bool { return !n1.s.Lockdown() })

	// Failed logins on one account add up across nodes.
	for range 3 {
		n1.s.reportAccount("Carol@example.org", netip.Addr{}, n1.clock.Now())
	}
	eventually(t, "account failures on node 2", func() bool { return n2.s.AccountDelay("carol@example.org") == 400*time.Millisecond })
	n2.s.reportAccount("carol@example.org", netip.Addr{}, n2.clock.Now())
	eventually(t, "account failures back on node 1", func() bool { return n1.s.AccountDelay("carol@example.org") == 800*time.Millisecond })
}

// stuckStore is a store whose writes hang until released (a slow or
// unreachable Redis).
type stuckStore struct {
	*LocalStore
	release chan struct{}
	mu      sync.Mutex
	puts    int
}

func (s *stuckStore) PutBan(ctx context.Context, b BanRecord) error {
	select {
	case <-s.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	s.mu.Lock()
	s.puts++
	s.mu.Unlock()
	return s.LocalStore.PutBan(ctx, b)
}

// TestStuckStoreNeverBlocksDecisions: with every store write hanging,
// reports still ban, decisions still refuse, and a full queue drops writes
// (counted) instead of making a session wait.
func TestStuckStoreNeverBlocksDecisions(t *testing.T) {
	ls, err := OpenLocalStore("", LocalStoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	st := &stuckStore{LocalStore: ls, release: make(chan struct{})}
	h := newHarness(t, testConfig(), Options{Store: st})
	addr := mustAddr("192.0.2.160")
	if d := h.s.report(nil, addr, PreGreet, h.clock.Now()); d.Source != "ban:pregreet" {
		t.Fatalf("no ban while the store hangs: %+v", d)
	}
	if d := h.s.Decide(addr, ""); d.Action != Reject {
		t.Fatalf("ban not enforced while the store hangs: %+v", d)
	}
	for i := range storeQueue + 100 {
		h.s.Ban(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32), time.Hour, "flood", Drop)
	}
	if h.s.Stats().StoreDropped == 0 {
		t.Fatal("a full queue did not drop")
	}
	close(st.release)
	eventually(t, "writes resume", func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.puts > 0
	})
}

// resyncStore answers Load with an empty state, as a Redis restarted
// without its data would.
type resyncStore struct{ *LocalStore }

func (resyncStore) Load(context.Context) (State, error) { return State{}, nil }

// TestResyncRepublishesBans: after a resync that finds the store empty,
// the node writes its active bans back.
func TestResyncRepublishesBans(t *testing.T) {
	clock := newFakeClock()
	ls, err := OpenLocalStore("", LocalStoreOptions{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	h := newHarness(t, testConfig(), Options{Store: resyncStore{ls}})
	h.clock, h.s.now = clock, clock.Now
	if err := h.s.Ban(mustPrefix("198.51.100.0/24"), time.Hour, "scanner", Drop); err != nil {
		t.Fatal(err)
	}
	eventually(t, "ban written", func() bool { b, _ := ls.Bans(context.Background()); return len(b) == 1 })
	ls.DeleteBan(context.Background(), mustPrefix("198.51.100.0/24")) // the store lost it
	h.s.applyChange(Change{Kind: ChangeResync})
	eventually(t, "ban republished", func() bool { b, _ := ls.Bans(context.Background()); return len(b) == 1 })
	if d := h.s.Decide(mustAddr("198.51.100.7"), ""); d.Action != Drop {
		t.Fatalf("ban lost locally: %+v", d)
	}
}

// TestCountersAddUpAcrossNodes: failed logins from one address spread
// over two nodes, each seeing fewer than the threshold, ban the address
// on both at the cluster-wide threshold: the node whose flush crosses it
// bans, and a node that knows the total bans at once on the next event.
func TestCountersAddUpAcrossNodes(t *testing.T) {
	n1, n2 := twoNodes(t)
	th := n1.s.cfg().Thresholds["auth_failure"].Count
	nodes := []*harness{n1, n2}
	spread := func(addr netip.Addr, events int) {
		for i := range events {
			n := nodes[i%2]
			if d := n.s.report(nil, addr, AuthFailure, n.clock.Now()); d.Denied() {
				t.Fatalf("event %d of %d refused on node %d: %+v", i+1, events, i%2+1, d)
			}
			n.s.flushCounts()
		}
	}
	// Threshold-1 failures over both nodes: no one bans.
	a := mustAddr("192.0.2.170")
	spread(a, th-1)
	for i, n := range nodes {
		if d := n.s.Decide(a, ""); d.Denied() {
			t.Fatalf("node %d refused below the cluster threshold: %+v", i+1, d)
		}
	}
	// The threshold-th failure lands on the node that did not flush last:
	// its flush crosses the cluster total and it bans; the other node
	// hears of the ban.
	last := nodes[(th-1)%2]
	last.s.report(nil, a, AuthFailure, last.clock.Now())
	last.s.flushCounts()
	for i, n := range nodes {
		eventually(t, fmt.Sprintf("node %d refuses at the cluster threshold", i+1), func() bool {
			return n.s.Decide(a, "").Source == "ban:auth_failure"
		})
	}
	if c := last.s.Stats().Counters; c.Crossed != 1 || c.Sent == 0 {
		t.Errorf("counter stats of the crossing node: %+v", c)
	}
	// The node that flushed last knows the total: the threshold-th event
	// on it is refused at once, no flush needed.
	b := mustAddr("192.0.2.171")
	spread(b, th-1)
	knows := nodes[(th-2)%2]
	if d := knows.s.report(nil, b, AuthFailure, knows.clock.Now()); d.Source != "ban:auth_failure" {
		t.Fatalf("node that knew the cluster total served the threshold-th failure: %+v", d)
	}
	other := nodes[(th-1)%2]
	eventually(t, "other node refuses", func() bool { return other.s.Decide(b, "").Source == "ban:auth_failure" })
	// Each address was banned once, at the first escalation level, by
	// the node that crossed, and both nodes say which one.
	for i, n := range nodes {
		for _, bi := range n.s.Bans() {
			if bi.Count != 1 {
				t.Errorf("node %d: ban escalated twice: %+v", i+1, bi)
			}
			if want := fmt.Sprintf("node%d", (th-1)%2+1); bi.Prefix == hostPrefix(a) && bi.Node != want {
				t.Errorf("node %d: ban of %s issued by %q, want %q", i+1, a, bi.Node, want)
			}
		}
	}
}

// TestCountersAloneWithoutSharedStore: the same spread over two nodes
// that do not share a store bans no one (each sees fewer than the
// threshold): what the cluster counters fix.
func TestCountersAloneWithoutSharedStore(t *testing.T) {
	n1, n2 := newHarness(t, testConfig(), Options{}), newHarness(t, testConfig(), Options{})
	th := n1.s.cfg().Thresholds["auth_failure"].Count
	a := mustAddr("192.0.2.172")
	for i := range th + th/2 {
		n := []*harness{n1, n2}[i%2]
		n.s.report(nil, a, AuthFailure, n.clock.Now())
	}
	if n1.s.Decide(a, "").Denied() || n2.s.Decide(a, "").Denied() {
		t.Fatal("nodes without a shared store banned below their own threshold")
	}
	if n1.s.counts != nil {
		t.Fatal("a Shield's own store counts as shared")
	}
}

// TestMergeClusterBans: a report made on node 2 covers node 1's bans
// (from the store's ban log), each once, with the node that issued it.
func TestMergeClusterBans(t *testing.T) {
	n1, n2 := twoNodes(t)
	since := n1.clock.Now().Add(-time.Minute)
	if err := n1.s.Ban(mustPrefix("198.51.100.0/24"), time.Hour, "scanner", Drop); err != nil {
		t.Fatal(err)
	}
	if err := n2.s.Ban(mustPrefix("203.0.113.9/32"), time.Hour, "spam", Reject); err != nil {
		t.Fatal(err)
	}
	eventually(t, "node 1's ban logged", func() bool {
		log, _ := n2.s.store.BanLog(context.Background(), since)
		return len(log) == 2
	})
	snap := n2.s.HistorySnapshot(since, time.Minute)
	if len(snap.Bans) != 1 {
		t.Fatalf("node 2's own history: %+v", snap.Bans)
	}
	if err := n2.s.MergeClusterBans(context.Background(), &snap); err != nil {
		t.Fatal(err)
	}
	nodes := map[string]string{}
	for _, e := range snap.Bans {
		nodes[e.Prefix.String()] = e.Node
	}
	if len(snap.Bans) != 2 || nodes["198.51.100.0/24"] != "node1" || nodes["203.0.113.9/32"] != "node2" {
		t.Fatalf("merged bans: %+v", snap.Bans)
	}
	found := false
	for _, a := range snap.Addrs {
		if a.Addr == mustPrefix("198.51.100.0/24") {
			found = len(a.Bans) == 1 && a.Offending()
		}
	}
	if !found {
		t.Fatalf("node 1's banned network not in node 2's report: %+v", snap.Addrs)
	}
	var bans uint64
	for _, p := range snap.Timeline {
		bans += p.Bans
	}
	if bans != 2 {
		t.Errorf("timeline counts %d bans, want 2", bans)
	}
}

// TestNetworkBansDoNotWalkKnownGood: an IPv6 botnet in one /48 gets its
// /64s banned in a burst. Each ban takes known-good status from the
// addresses of its /64 in three tables (the banning node's, the store's,
// the other node's through the store change) without walking any of them:
// a walk per ban over up to table_size addresses, under the locks the
// accept path takes, stalled every client for seconds. The revoked
// addresses are gone everywhere; the others stay.
func TestNetworkBansDoNotWalkKnownGood(t *testing.T) {
	n1, n2 := twoNodesOf(t, 10_000)
	store := n1.s.store.(*LocalStore).st.knownGood
	const nets = 300
	var banned, kept []netip.Addr
	for i := range nets {
		for _, host := range []string{":5", "ffff::1"} {
			banned = append(banned, mustAddr(fmt.Sprintf("2001:db8:7:%x:%s", i, host)))
		}
		kept = append(kept, mustAddr(fmt.Sprintf("2001:db8:8:%x::5", i)), // another /48
			mustAddr(fmt.Sprintf("192.0.%d.%d", i/250, i%250+1)))
	}
	ns := n1.clock.Now().UnixNano()
	for _, a := range append(append([]netip.Addr(nil), banned...), kept...) {
		n1.s.markKnownGood(a, ns)
	}
	total := len(banned) + len(kept)
	eventually(t, "known-good in the store and on node 2", func() bool {
		return store.len() == total && n2.s.knownGood.len() == total
	})
	walks := map[string]int64{"node 1": n1.s.knownGood.walks.Load(), "node 2": n2.s.knownGood.walks.Load(),
		"store": store.walks.Load()}

	for i := range nets {
		if err := n1.s.Ban(mustPrefix(fmt.Sprintf("2001:db8:7:%x::/64", i)), time.Hour, "botnet", Drop); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "revocations reach the store and node 2", func() bool {
		return store.len() == len(kept) && n2.s.knownGood.len() == len(kept)
	})
	after := map[string]int64{"node 1": n1.s.knownGood.walks.Load(), "node 2": n2.s.knownGood.walks.Load(),
		"store": store.walks.Load()}
	for name, w := range walks {
		if after[name] != w {
			t.Errorf("%s: %d walks of the known-good table for %d network bans, want none", name, after[name]-w, nets)
		}
	}
	now := n1.clock.Now()
	for _, a := range banned {
		if n1.s.isKnownGood(a, now.UnixNano()) || n2.s.isKnownGood(a, now.UnixNano()) {
			t.Fatalf("%s: still known-good on a node after its /64 was banned", a)
		}
		if _, good, _ := n1.s.store.KnownGood(context.Background(), a); good {
			t.Fatalf("%s: still known-good in the store after its /64 was banned", a)
		}
	}
	for _, a := range kept {
		if !n1.s.isKnownGood(a, now.UnixNano()) || !n2.s.isKnownGood(a, now.UnixNano()) {
			t.Fatalf("%s: lost known-good status, outside every banned network", a)
		}
	}
}
