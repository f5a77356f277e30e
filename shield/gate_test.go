package shield

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
)

// addrConn is a net.Conn that only has a remote address, for the Gate.
type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.remote }

func connFrom(a string) net.Conn {
	return addrConn{remote: &net.TCPAddr{IP: net.ParseIP(a), Port: 25}}
}

// TestGateFairOrder: a flood of 300 deliveries from one /16, a third of
// its addresses known-good, waits for a one-slot gate; legitimate clients
// from other networks (strangers and known-good) queue behind all of it.
// Every legitimate client is served within the first few grants (one turn
// per network, and a stranger every gateFirstBurst+1 grants), not after
// the flood as first come first served would have it.
func TestGateFairOrder(t *testing.T) {
	h := newHarness(t, testConfig(), Options{})
	g := h.s.Gate(1)
	ctx := context.Background()
	hold, err := g.Acquire(ctx, connFrom("127.99.0.1"))
	if err != nil {
		t.Fatal(err)
	}

	grants := newGrantLog(t, g)
	wait := func(name, addr string) { grants.wait(name, connFrom(addr)) }
	const flood = 300
	for i := range flood {
		addr := fmt.Sprintf("127.30.%d.%d", i/50, i%50+1)
		if i%3 == 0 {
			h.s.report(nil, mustAddr(addr), AuthSuccess, h.clock.Now()) // known-good
		}
		wait("flood", addr)
	}
	eventually(t, "the flood waiting", func() bool { return g.Stats().Waiting == flood })
	legit := map[string]string{
		"stranger-1": "127.1.0.5", "stranger-2": "127.2.0.5", "stranger-3": "127.3.0.5",
		"known-good-1": "127.4.0.5", "known-good-2": "127.5.0.5",
	}
	for name, addr := range legit {
		if name[0] == 'k' {
			h.s.report(nil, mustAddr(addr), AuthSuccess, h.clock.Now())
		}
		wait(name, addr)
	}
	eventually(t, "everyone waiting", func() bool { return g.Stats().Waiting == flood+len(legit) })
	hold()
	order := grants.done()

	if len(order) != flood+len(legit) {
		t.Fatalf("%d grants, want %d", len(order), flood+len(legit))
	}
	// Four stranger networks take turns, each turn after at most
	// gateFirstBurst first-class grants.
	bound := 4 * (gateFirstBurst + 1)
	for pos, name := range order {
		if name != "flood" {
			delete(legit, name)
			if pos >= bound {
				t.Errorf("%s served at position %d, want < %d (behind %d flood messages)", name, pos, bound, pos)
			}
		}
	}
	if len(legit) != 0 {
		t.Fatalf("never served: %v", legit)
	}
	st := g.Stats()
	if st.Busy != 0 || st.Waiting != 0 || st.Waited != flood+5 || st.GrantedRest == 0 || st.GrantedFirst == 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestGateCancel: a waiter whose context ends leaves the queue; the slot
// goes to the next one.
func TestGateCancel(t *testing.T) {
	h := newHarness(t, testConfig(), Options{})
	g := h.s.Gate(1)
	hold, _ := g.Acquire(context.Background(), connFrom("127.1.0.1"))
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := g.Acquire(ctx, connFrom("127.2.0.1"))
		errc <- err
	}()
	eventually(t, "waiting", func() bool { return g.Stats().Waiting == 1 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
	if st := g.Stats(); st.Waiting != 0 || st.Canceled != 1 {
		t.Fatalf("stats %+v", st)
	}
	hold()
	hold() // a second release gives nothing back
	r, err := g.Acquire(context.Background(), connFrom("127.3.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	if st := g.Stats(); st.Busy != 1 {
		t.Fatalf("busy %d", st.Busy)
	}
	r()
}

// shieldConn is a connection as a shield listener admits it, from a.
func shieldConn(h *harness, a string) *Conn {
	return &Conn{Conn: connFrom(a), s: h.s, addr: mustAddr(a)}
}

// TestGateRepeatsWaitBehindFirstMessages (issue 13, botnet message floods):
// a botnet of 200 addresses over 64 /16s, each connection sending message
// after message, gets at most RepeatSlots places for its further messages
// however many slots are free, and the rest of its connections wait; a
// stranger's first message, or a known-good sender's, goes in at once. With
// every slot taken, every first message queued behind 100 waiting repeats
// is served before any of them. Before, a connection's further messages
// were judged like its first (and the flood, known-good after one accepted
// message, went first): all 200 got a slot and shared the CPU with every
// legitimate sender.
func TestGateRepeatsWaitBehindFirstMessages(t *testing.T) {
	h := newHarness(t, testConfig(), Options{})
	g := h.s.Gate(64)
	ctx := context.Background()
	if st := g.Stats(); st.RepeatSlots != 64/gateRepeatShare {
		t.Fatalf("repeat slots %d", st.RepeatSlots)
	}
	const bots = 200
	botConns := make([]*Conn, bots)
	for i := range botConns {
		// 127.64.0.0/10: consecutive bots in different /16s and /24s.
		botConns[i] = shieldConn(h, fmt.Sprintf("127.%d.%d.%d", 64+i%64, i/64, 1+i%7))
		// Each bot's first message: a stranger's, served at once; then it
		// becomes known-good, as an accepted message makes it.
		release, err := g.Acquire(ctx, botConns[i])
		if err != nil {
			t.Fatal(err)
		}
		release()
		h.s.report(nil, botConns[i].addr, AuthSuccess, h.clock.Now()) // known-good now
		botConns[i].knownGood.Store(true)
	}
	if st := g.Stats(); st.GrantedRest != bots || st.Waited != 0 {
		t.Fatalf("first messages: %+v", st)
	}
	var inside sync.WaitGroup
	held := make(chan func(), bots)
	for _, c := range botConns {
		inside.Go(func() {
			release, err := g.Acquire(ctx, c)
			if err != nil {
				t.Error(err)
				return
			}
			held <- release
		})
	}
	eventually(t, "the flood's further messages waiting", func() bool {
		st := g.Stats()
		return st.RepeatBusy == g.repeatSlots && st.Waiting == bots-g.repeatSlots
	})
	if st := g.Stats(); st.Busy != g.repeatSlots {
		t.Fatalf("%d slots busy with %d repeats inside: %+v", st.Busy, g.repeatSlots, st)
	}
	// A never-seen stranger and a known-good sender go in at once.
	for _, a := range []string{"127.200.1.1", "127.201.1.1"} {
		if a == "127.201.1.1" {
			h.s.report(nil, mustAddr(a), AuthSuccess, h.clock.Now())
		}
		release, err := g.Acquire(ctx, shieldConn(h, a))
		if err != nil {
			t.Fatal(err)
		}
		release()
	}
	if st := g.Stats(); st.Waiting != bots-g.repeatSlots || st.GrantedRep != uint64(g.repeatSlots) {
		t.Fatalf("after the strangers: %+v", st)
	}
	for range g.repeatSlots {
		(<-held)()
	}
	for range bots - g.repeatSlots {
		(<-held)()
	}
	inside.Wait()
	if st := g.Stats(); st.Busy != 0 || st.Waiting != 0 || st.RepeatBusy != 0 || st.GrantedRep != bots {
		t.Fatalf("at the end: %+v", st)
	}
}

// TestGateRepeatOrder: with one slot, first messages of strangers and of a
// known-good sender queued behind 100 waiting repeats are all served before
// any repeat; a repeat is still served after gateRepeatEvery other grants
// (repeats never starve); an authenticated session's further messages and
// an allowlisted client's stay first.
func TestGateRepeatOrder(t *testing.T) {
	cfg := testConfig()
	cfg.Allow = []string{"127.250.0.0/16"}
	h := newHarness(t, cfg, Options{})
	g := h.s.Gate(1)
	ctx := context.Background()
	repeatOf := func(a string) *Conn {
		c := shieldConn(h, a)
		c.gateTurns.Store(1) // had a slot before
		return c
	}
	hold, err := g.Acquire(ctx, repeatOf("127.30.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	grants := newGrantLog(t, g)
	wait := grants.wait
	const flood = 100
	for i := range flood {
		wait("repeat", repeatOf(fmt.Sprintf("127.%d.%d.9", 64+i%64, i/64)))
	}
	eventually(t, "the repeats waiting", func() bool { return g.Stats().Waiting == flood })
	h.s.report(nil, mustAddr("127.5.0.5"), AuthSuccess, h.clock.Now())
	authed := repeatOf("127.6.0.6")
	authed.authed.Store(true)
	legit := []struct {
		name string
		c    net.Conn
	}{
		{"stranger-1", shieldConn(h, "127.1.0.5")}, {"stranger-2", shieldConn(h, "127.2.0.5")},
		{"stranger-3", shieldConn(h, "127.3.0.5")}, {"known-good", shieldConn(h, "127.5.0.5")},
		{"authenticated-repeat", authed}, {"allowlisted-repeat", repeatOf("127.250.0.7")},
	}
	for _, l := range legit {
		wait(l.name, l.c)
	}
	eventually(t, "everyone waiting", func() bool { return g.Stats().Waiting == flood+len(legit) })
	hold()
	order := grants.done()
	for pos, name := range order[:len(legit)] {
		if name == "repeat" {
			t.Fatalf("a repeat served at position %d, before first messages: %v", pos, order[:len(legit)+1])
		}
	}

	// Starvation: one repeat waits while strangers keep coming.
	hold, _ = g.Acquire(ctx, shieldConn(h, "127.7.0.1"))
	grants = newGrantLog(t, g)
	wait = grants.wait
	wait("repeat", repeatOf("127.31.0.1"))
	eventually(t, "the repeat waiting", func() bool { return g.Stats().Waiting == 1 })
	for i := range 3 * gateRepeatEvery {
		wait("stranger", shieldConn(h, fmt.Sprintf("127.8.%d.1", i)))
	}
	eventually(t, "the strangers waiting", func() bool { return g.Stats().Waiting == 1+3*gateRepeatEvery })
	hold()
	for pos, name := range grants.done() {
		if name == "repeat" {
			if pos > gateRepeatEvery {
				t.Fatalf("the repeat served at position %d, want <= %d", pos, gateRepeatEvery)
			}
			return
		}
	}
	t.Fatal("the repeat was never served")
}

// grantLog records the order in which waiting clients got a slot.
type grantLog struct {
	t     *testing.T
	g     *Gate
	mu    sync.Mutex
	order []string
	wg    sync.WaitGroup
}

func newGrantLog(t *testing.T, g *Gate) *grantLog { return &grantLog{t: t, g: g} }

// wait has c wait for a slot in its own goroutine; once granted, its name
// is recorded and the slot released.
func (l *grantLog) wait(name string, c net.Conn) {
	l.wg.Go(func() {
		release, err := l.g.Acquire(context.Background(), c)
		if err != nil {
			l.t.Error(err)
			return
		}
		l.mu.Lock()
		l.order = append(l.order, name)
		l.mu.Unlock()
		release()
	})
}

// done waits for every waiter and returns the order of their grants.
func (l *grantLog) done() []string {
	l.wg.Wait()
	return l.order
}
