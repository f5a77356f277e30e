package shield

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestActionsAsSeenByClient: reject answers and closes, drop closes with
// nothing written, tarpit holds the connection silently.
func TestActionsAsSeenByClient(t *testing.T) {
	cfg := testConfig()
	cfg.Rules = []string{"deny 127.0.4.1 reject", "deny 127.0.4.2 drop", "deny 127.0.4.3 tarpit", "127.0.4.4"}
	cfg.DefaultAction = Drop
	h := newHarness(t, cfg, Options{})
	srv := startServer(t, h.s, ListenerConfig{Name: "smtp"})

	r := dialFrom(t, srv.addr, "127.0.4.1")
	if l := r.expect("554 5.7.1"); l != "554 5.7.1 access denied" {
		t.Fatal(l)
	}
	r.expectClosed()

	expectDropped(t, srv.addr, "127.0.4.2")
	expectDropped(t, srv.addr, "127.0.4.4") // bare address: default action

	tp := dialFrom(t, srv.addr, "127.0.4.3")
	fmt.Fprintf(tp.c, "EHLO spam\r\n") // read and discarded
	tp.expectSilence()
	eventually(t, "tarpit counted", func() bool { return h.s.Stats().TarpitHeld == 1 })

	ok := dialFrom(t, srv.addr, "127.0.4.5")
	ok.expect("220")

	st := h.s.Stats().Listeners["smtp"]
	if st.Rejected != 1 || st.Dropped != 2 || st.Tarpitted != 1 || st.Accepted != 1 {
		t.Fatalf("stats %+v", st)
	}
	h.s.agg.flush(h.s.log, time.Minute)
	if !strings.Contains(h.logs.String(), `msg="shield denied" addr=127.0.4.2 count=1 source=config:rules[1] action=drop interval=1m0s`) {
		t.Errorf("no aggregated denial line in:\n%s", h.logs)
	}
}

func TestTarpitCapBecomesDrop(t *testing.T) {
	cfg := testConfig()
	cfg.Rules = []string{"deny 127.0.5.0/24 tarpit"}
	cfg.TarpitMaxHeld = 2
	h := newHarness(t, cfg, Options{})
	srv := startServer(t, h.s, ListenerConfig{Name: "smtp"})
	a := dialFrom(t, srv.addr, "127.0.5.1")
	b := dialFrom(t, srv.addr, "127.0.5.2")
	eventually(t, "two held", func() bool { return h.s.Stats().TarpitHeld == 2 })
	expectDropped(t, srv.addr, "127.0.5.3")
	a.expectSilence()
	b.expectSilence()
}

func TestPerIPConnsLimit(t *testing.T) {
	cfg := testConfig()
	cfg.Limits.PerIPConns = 3
	h := newHarness(t, cfg, Options{})
	srv := startServer(t, h.s, ListenerConfig{Name: "smtp"})
	var open []*client
	for range 3 {
		c := dialFrom(t, srv.addr, "127.0.6.1")
		c.expect("220")
		open = append(open, c)
	}
	c := dialFrom(t, srv.addr, "127.0.6.1")
	if l := c.expect("421"); !strings.Contains(l, "too many connections from your address") {
		t.Fatal(l)
	}
	dialFrom(t, srv.addr, "127.0.6.2").expect("220") // another address is fine
	open[0].cmd("QUIT")
	eventually(t, "slot released", func() bool { return h.s.Decide(mustAddr("127.0.6.1"), "smtp").Action == Allow })
	dialFrom(t, srv.addr, "127.0.6.1").expect("220")
}

func TestPerPrefixConnsLimit(t *testing.T) {
	cfg := testConfig()
	cfg.Limits.PerPrefixConns = 5
	h := newHarness(t, cfg, Options{})
	srv := startServer(t, h.s, ListenerConfig{Name: "smtp"})
	for i := 1; i <= 5; i++ {
		dialFrom(t, srv.addr, fmt.Sprintf("127.0.7.%d", i)).expect("220")
	}
	if l := dialFrom(t, srv.addr, "127.0.7.6").expect("421"); !strings.Contains(l, "your network") {
		t.Fatal(l)
	}
	dialFrom(t, srv.addr, "127.0.8.1").expect("220") // another /24
	if d := h.s.Decide(mustAddr("127.0.7.99"), "smtp"); d.Source != "limit:per_prefix_conns" || !d.Temporary {
		t.Fatalf("%+v", d)
	}
}

func TestConnRateLimit(t *testing.T) {
	cfg := testConfig()
	cfg.Limits.PerIPRate = 1
	cfg.Limits.PerIPBurst = 3
	h := newHarness(t, cfg, Options{})
	srv := startServer(t, h.s, ListenerConfig{Name: "smtp"})
	for range 3 {
		c := dialFrom(t, srv.addr, "127.0.9.1")
		c.expect("220")
		c.cmd("QUIT")
	}
	if l := dialFrom(t, srv.addr, "127.0.9.1").expect("421"); !strings.Contains(l, "rate") {
		t.Fatal(l)
	}
	h.clock.Advance(2 * time.Second) // two tokens back
	dialFrom(t, srv.addr, "127.0.9.1").expect("220")
}

// TestBotnet: 1,020 addresses from four /24s hold connections open on a
// listener with room for 200. Per-prefix caps and the listener ceiling hold,
// and a known-good client still gets in through the reserved share.
func TestBotnet(t *testing.T) {
	cfg := testConfig()
	cfg.Limits.PerPrefixConns = 100
	cfg.ReservedKnownGood = 0.2
	h := newHarness(t, cfg, Options{})
	srv := startServer(t, h.s, ListenerConfig{Name: "smtp", MaxConns: 200})

	// The good client authenticated earlier.
	g := dialFrom(t, srv.addr, "127.20.0.1")
	g.expect("220")
	if r := g.cmd("AUTH alice good"); r != "250 ok" {
		t.Fatal(r)
	}
	g.cmd("QUIT")

	var mu sync.Mutex
	admitted, refused := 0, 0
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	var bots []net.Conn
	for n := range 4 {
		for host := 1; host <= 255; host++ {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 10, byte(n), byte(host))}}
				c, err := d.Dial("tcp", srv.addr)
				if err != nil {
					t.Error(err)
					return
				}
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				buf := make([]byte, 64)
				k, _ := c.Read(buf)
				mu.Lock()
				defer mu.Unlock()
				bots = append(bots, c)
				switch {
				case strings.HasPrefix(string(buf[:k]), "220"):
					admitted++
				case strings.HasPrefix(string(buf[:k]), "421"):
					refused++
				default:
					t.Errorf("bot got %q", buf[:k])
				}
			}()
		}
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range bots {
			c.Close()
		}
	})
	if admitted != 160 || refused != 1020-160 {
		t.Fatalf("admitted %d refused %d; want 160 (200 minus 20%% reserved)", admitted, refused)
	}
	kg := dialFrom(t, srv.addr, "127.20.0.1")
	kg.expect("220")
	if r := kg.cmd("NOOP"); r != "250 ok" {
		t.Fatal(r)
	}
	dialFrom(t, srv.addr, "127.21.0.1").expect("421 4.7.0 server busy")
	if a := h.s.Stats().Listeners["smtp"].Active; a != 161 {
		t.Fatalf("active %d", a)
	}
}

// TestEvictionForKnownGood: when the listener is completely full, the
// oldest idle unauthenticated connection makes room for a known-good client.
// A stranger from the /24 that holds the contested connections gets no
// eviction: it would only evict its own kind (fair.go).
func TestEvictionForKnownGood(t *testing.T) {
	cfg := testConfig()
	cfg.ReservedKnownGood = 0
	h := newHarness(t, cfg, Options{})
	srv := startServer(t, h.s, ListenerConfig{Name: "imap", MaxConns: 3})

	good := mustAddr("127.30.0.1")
	h.s.report(nil, good, AuthSuccess, h.clock.Now())

	idle := dialFrom(t, srv.addr, "127.30.1.1")
	idle.expect("220")
	h.clock.Advance(time.Second)
	busy := dialFrom(t, srv.addr, "127.30.1.2")
	busy.expect("220")
	authed := dialFrom(t, srv.addr, "127.30.1.3")
	authed.expect("220")
	authed.cmd("AUTH bob good")

	h.clock.Advance(10 * time.Second)
	busy.cmd("NOOP") // activity keeps it

	dialFrom(t, srv.addr, "127.30.1.4").expect("421 4.7.0 server busy")
	kg := dialFrom(t, srv.addr, "127.30.0.1")
	kg.expect("220")
	idle.expectClosed()
	if r := busy.cmd("NOOP"); r != "250 ok" {
		t.Fatal(r)
	}
	if r := authed.cmd("NOOP"); r != "250 ok" {
		t.Fatal(r)
	}
	if ev := h.s.Stats().Listeners["imap"].Evicted; ev != 1 {
		t.Fatalf("evicted %d", ev)
	}
}

// Allowlisted tells a service that its client is allowlisted (agua's MX
// trusts such relays); a net.Conn not from a shield listener is not.
func TestAllowlisted(t *testing.T) {
	cfg := testConfig()
	cfg.Allow = []string{"127.41.9.9"}
	h := newHarness(t, cfg, Options{})
	srv := startServer(t, h.s, ListenerConfig{Name: "smtp"})
	for src, want := range map[string]string{"127.41.9.9": "250 true", "127.41.1.1": "250 false"} {
		c := dialFrom(t, srv.addr, src)
		c.expect("220")
		if got := c.cmd("TRUSTED"); got != want {
			t.Errorf("from %s: %q, want %q", src, got, want)
		}
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if Allowlisted(a) {
		t.Error("a plain net.Conn is allowlisted")
	}
}

func TestLockdown(t *testing.T) {
	cfg := testConfig()
	cfg.Allow = []string{"127.40.9.9"}
	h := newHarness(t, cfg, Options{})
	srv := startServer(t, h.s, ListenerConfig{Name: "smtp"})
	h.s.report(nil, mustAddr("127.40.0.1"), MessageAccepted, h.clock.Now())

	stranger := dialFrom(t, srv.addr, "127.40.1.1")
	stranger.expect("220")
	friend := dialFrom(t, srv.addr, "127.40.0.1")
	friend.expect("220")
	eventually(t, "registered", func() bool { return len(h.s.Conns()) == 2 })

	h.s.SetLockdown(true)
	if !h.s.Lockdown() {
		t.Fatal("lockdown off")
	}
	stranger.expectClosed()
	if r := friend.cmd("NOOP"); r != "250 ok" {
		t.Fatal(r)
	}
	expectDropped(t, srv.addr, "127.40.1.2") // dropped: nothing written
	dialFrom(t, srv.addr, "127.40.0.1").expect("220")
	dialFrom(t, srv.addr, "127.40.9.9").expect("220")
	if d := h.s.Decide(mustAddr("127.40.1.2"), "smtp"); d.Action != Drop || d.Source != "lockdown" {
		t.Fatalf("%+v", d)
	}
	h.s.SetLockdown(false)
	dialFrom(t, srv.addr, "127.40.1.2").expect("220")
}

func TestDryRunRule(t *testing.T) {
	cfg := testConfig()
	cfg.Rules = []string{"deny 127.50.0.0/24 drop dry-run"}
	h := newHarness(t, cfg, Options{})
	srv := startServer(t, h.s, ListenerConfig{Name: "smtp"})
	for range 3 {
		c := dialFrom(t, srv.addr, "127.50.0.1")
		c.expect("220")
		c.cmd("QUIT")
	}
	d := h.s.Decide(mustAddr("127.50.0.1"), "smtp")
	if d.Action != Allow || !d.DryRun || d.Source != "config:rules[0]" {
		t.Fatalf("%+v", d)
	}
	h.s.agg.flush(h.s.log, time.Minute)
	if !strings.Contains(h.logs.String(), `msg="shield would block" addr=127.50.0.1 count=3 source=config:rules[0] action=drop`) {
		t.Fatalf("logs:\n%s", h.logs)
	}
}

func TestGlobalDryRun(t *testing.T) {
	cfg := testConfig()
	cfg.DryRun = true
	cfg.Rules = []string{"deny 127.51.0.1"}
	cfg.Limits.PerIPConns = 1
	h := newHarness(t, cfg, Options{})
	srv := startServer(t, h.s, ListenerConfig{Name: "smtp"})
	dialFrom(t, srv.addr, "127.51.0.1").expect("220")
	dialFrom(t, srv.addr, "127.51.0.2").expect("220")
	dialFrom(t, srv.addr, "127.51.0.2").expect("220") // over per_ip_conns, logged only
}

// TestDenialLogsStaySmall: a flood from one address is one log line.
func TestDenialLogsStaySmall(t *testing.T) {
	cfg := testConfig()
	cfg.Rules = []string{"deny 127.52.0.1 drop"}
	h := newHarness(t, cfg, Options{})
	srv := startServer(t, h.s, ListenerConfig{Name: "smtp"})
	for range 50 {
		expectDropped(t, srv.addr, "127.52.0.1")
	}
	h.s.agg.flush(h.s.log, time.Minute)
	logs := h.logs.String()
	if n := strings.Count(logs, "shield denied"); n != 1 {
		t.Fatalf("%d denial lines:\n%s", n, logs)
	}
	if !strings.Contains(logs, "count=50 source=config:rules[0] action=drop") {
		t.Fatal(logs)
	}
}

func TestReportThroughWrappers(t *testing.T) {
	if d := Report(nil, AuthFailure); d.Action != Allow {
		t.Fatal(d)
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if FromConn(a) != nil || Report(a, ProtocolError).Action != Allow {
		t.Fatal("plain conn must be a no-op")
	}
}

// TestFloodDoesNotStarveGoodClient: while thousands of connections from
// denied, rate-limited and banned addresses hammer the listener, a good
// client's session goes on and new good clients get in.
func TestFloodDoesNotStarveGoodClient(t *testing.T) {
	cfg := testConfig()
	cfg.Rules = []string{"deny 127.95.1.0/24 drop", "deny 127.95.2.0/24 reject"}
	cfg.Limits.PerIPRate = 1
	cfg.Limits.PerIPBurst = 1
	cfg.Limits.PerPrefixRate = 1000
	cfg.Limits.PerPrefixBurst = 1000
	h := newHarness(t, cfg, Options{})
	h.s.Ban(mustPrefix("127.95.3.0/24"), time.Hour, "flood", Tarpit)
	srv := startServer(t, h.s, ListenerConfig{Name: "smtp"})

	good := dialFrom(t, srv.addr, "127.95.0.1")
	good.expect("220")

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var attempts atomic.Int64
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			net3 := byte(1 + w%4) // 1: drop, 2: reject, 3: banned (tarpit, capped), 4: rate-limited
			for i := 0; i < 500; i++ {
				select {
				case <-stop:
					return
				default:
				}
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 95, net3, byte(1+i%200))}, Timeout: 5 * time.Second}
				c, err := d.Dial("tcp", srv.addr)
				if err != nil {
					continue // reset by a drop
				}
				c.SetDeadline(time.Now().Add(50 * time.Millisecond))
				c.Read(make([]byte, 64))
				c.Close()
				attempts.Add(1)
			}
		}()
	}
	eventually(t, "flood under way", func() bool { return attempts.Load() > 300 })
	for i := range 50 {
		if r := good.cmd("NOOP"); r != "250 ok" {
			t.Fatalf("good session broken at %d: %q", i, r)
		}
	}
	dialFrom(t, srv.addr, "127.95.0.2").expect("220")
	close(stop)
	wg.Wait()
	st := h.s.Stats().Listeners["smtp"]
	if st.Dropped == 0 || st.Rejected == 0 || st.Tarpitted == 0 {
		t.Fatalf("flood not refused: %+v", st)
	}
}

// TestRejectReachesEagerClient: a client that talks before reading still
// gets the refusal, not a reset (the shield half-closes and drains instead
// of closing with unread data).
func TestRejectReachesEagerClient(t *testing.T) {
	cfg := testConfig()
	cfg.Rules = []string{"deny 127.96.0.0/24"}
	h := newHarness(t, cfg, Options{})
	srv := startServer(t, h.s, ListenerConfig{Name: "smtp"})
	for i := range 20 {
		c := dialFrom(t, srv.addr, fmt.Sprintf("127.96.0.%d", i+1))
		fmt.Fprintf(c.c, "EHLO eager.example\r\nMAIL FROM:<a@b>\r\n")
		time.Sleep(5 * time.Millisecond) // let the data arrive before the refusal is written
		if l := c.expect("554"); !strings.Contains(l, "access denied") {
			t.Fatal(l)
		}
	}
}

// TestBotnetLogsRollUp: a botnet of 300 addresses in one /24, all denied,
// is one log line for the network, not 300 lines.
func TestBotnetLogsRollUp(t *testing.T) {
	cfg := testConfig()
	cfg.Rules = []string{"deny 127.53.0.0/16 drop"}
	h := newHarness(t, cfg, Options{})
	srv := startServer(t, h.s, ListenerConfig{Name: "smtp"})
	for i := range 300 {
		expectDropped(t, srv.addr, fmt.Sprintf("127.53.%d.%d", 7, 1+i%250))
	}
	for i := range 5 { // a few from another network stay per address
		expectDropped(t, srv.addr, fmt.Sprintf("127.53.9.%d", 1+i))
	}
	h.s.agg.flush(h.s.log, time.Minute)
	logs := h.logs.String()
	lines := strings.Count(logs, `msg="shield denied"`)
	if !strings.Contains(logs, `addr=127.53.7.0/24 count=300 source=config:rules[0] action=drop interval=1m0s addresses=250`) || lines != 6 {
		t.Fatalf("%d lines:\n%s", lines, logs)
	}
}
