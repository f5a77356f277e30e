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

	var mu sync.Mutex
	var order []string
	var wg sync.WaitGroup
	wait := func(name, addr string) {
		wg.Go(func() {
			release, err := g.Acquire(ctx, connFrom(addr))
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, name)
			mu.Unlock()
			release()
		})
	}
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
	wg.Wait()

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
