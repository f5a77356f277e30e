package shield

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestWhyIsJSON(t *testing.T) {
	cfg := testConfig()
	cfg.Rules = []string{"deny 192.0.2.0/24 tarpit"}
	h := newHarness(t, cfg, Options{})
	h.s.report(nil, mustAddr("192.0.2.7"), ProtocolError, h.clock.Now())
	h.s.report(nil, mustAddr("198.51.100.7"), PreGreet, h.clock.Now())

	e := h.s.Why(mustAddr("192.0.2.7"))
	if e.Rule == nil || e.Rule.Source != "config:rules[0]" || e.Rule.Text != "deny 192.0.2.0/24 tarpit" ||
		e.Decision.Action != Tarpit || e.Counters.Events["protocol_error"] != 1 || e.Counters.Prefix.String() != "192.0.2.0/24" {
		t.Fatalf("%+v", e)
	}
	b, err := json.Marshal(h.s.Why(mustAddr("198.51.100.7")))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"ban":{"prefix":"198.51.100.7/32","reason":"pregreet","action":"reject"`, `"decision":{"action":"reject"`,
		`"source":"ban:pregreet"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("missing %s in %s", want, b)
		}
	}
	if _, err := json.Marshal(h.s.Stats()); err != nil {
		t.Fatal(err)
	}
}

func TestConnsAndStats(t *testing.T) {
	h := newHarness(t, testConfig(), Options{})
	srv := startServer(t, h.s, ListenerConfig{Name: "pop3"})
	c := dialFrom(t, srv.addr, "127.91.0.1")
	c.expect("220")
	c.cmd("AUTH carol good")
	conns := h.s.Conns()
	if len(conns) != 1 || conns[0].Listener != "pop3" || conns[0].Addr != mustAddr("127.91.0.1") || !conns[0].Authenticated {
		t.Fatalf("%+v", conns)
	}
	c.cmd("QUIT")
	eventually(t, "conn gone", func() bool { return len(h.s.Conns()) == 0 })
	st := h.s.Stats()
	if st.Listeners["pop3"].Accepted != 1 || st.Listeners["pop3"].Active != 0 {
		t.Fatalf("%+v", st)
	}
}

func TestCorruptStateIsAnError(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, stateFile), []byte("{not json"), 0o600)
	if _, err := New(testConfig(), Options{StateDir: dir}); err == nil || !strings.Contains(err.Error(), stateFile) {
		t.Fatalf("want an error naming the state file, got %v", err)
	}
}

func TestRejectCallbackPanicIsContained(t *testing.T) {
	cfg := testConfig()
	cfg.Rules = []string{"deny 127.92.0.1"}
	h := newHarness(t, cfg, Options{})
	srv := startServer(t, h.s, ListenerConfig{Name: "smtp", Reject: func(net.Conn, Decision) { panic("boom") }})
	dialFrom(t, srv.addr, "127.92.0.1").expectClosed()
	dialFrom(t, srv.addr, "127.92.0.2").expect("220")
	eventually(t, "panic logged", func() bool { return strings.Contains(h.logs.String(), "shield reject callback panicked") })
}

func TestBadProxyHeaderFromTrustedProxyIsDropped(t *testing.T) {
	cfg := testConfig()
	cfg.TrustedProxies = []string{"127.93.0.1"}
	h := newHarness(t, cfg, Options{})
	srv := startServer(t, h.s, ListenerConfig{Name: "smtp", ProxyProtocol: true})
	c := dialFrom(t, srv.addr, "127.93.0.1")
	fmt.Fprintf(c.c, "PROXY TCP4 nonsense\r\n")
	c.expectClosed()
	if st := h.s.Stats().Listeners["smtp"]; st.Dropped != 1 {
		t.Fatalf("%+v", st)
	}
}

func TestIPv6Listener(t *testing.T) {
	inner, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6 loopback:", err)
	}
	inner.Close()
	cfg := testConfig()
	cfg.Rules = []string{"deny ::1/128"}
	h := newHarness(t, cfg, Options{})
	inner, err = net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := h.s.Listener(inner, ListenerConfig{Name: "smtp", Reject: replyReject})
	defer ln.Close()
	go ln.Accept()
	c, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	n, _ := c.Read(buf)
	if !strings.HasPrefix(string(buf[:n]), "554 5.7.1 access denied") {
		t.Fatalf("%q", buf[:n])
	}
}

// TestListenerCloseUnblocksAccept: closing the wrapped listener ends Accept
// with net.ErrClosed.
func TestListenerCloseUnblocksAccept(t *testing.T) {
	h := newHarness(t, testConfig(), Options{})
	inner, _ := net.Listen("tcp", "127.0.0.1:0")
	ln := h.s.Listener(inner, ListenerConfig{Name: "x"})
	errc := make(chan error)
	go func() { _, err := ln.Accept(); errc <- err }()
	ln.Close()
	if err := <-errc; err == nil {
		t.Fatal("Accept returned no error after Close")
	}
}

// TestReleaseExactlyOnce: closing twice, or closing after the shield kicked
// the connection, gives back each slot once.
func TestReleaseExactlyOnce(t *testing.T) {
	h := newHarness(t, testConfig(), Options{})
	inner, _ := net.Listen("tcp", "127.0.0.1:0")
	ln := h.s.Listener(inner, ListenerConfig{Name: "x"})
	defer ln.Close()
	accepted := acceptConns(ln, 2)
	for range 2 {
		c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.94.0.1")}}).Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	a, b := <-accepted, <-accepted
	if got := h.s.Why(mustAddr("127.94.0.1")).Counters.IPConns; got != 2 {
		t.Fatalf("ip conns %d", got)
	}
	a.Close()
	a.Close()
	h.s.Ban(mustPrefix("127.94.0.1/32"), time.Hour, "test", Drop) // kicks b
	select {
	case <-b.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed by the ban")
	}
	b.Close()
	e := h.s.Why(mustAddr("127.94.0.1"))
	if e.Counters.IPConns != 0 || e.Counters.PrefixConns != 0 || h.s.Stats().Listeners["x"].Active != 0 {
		t.Fatalf("slots not released exactly once: %+v active %d", e.Counters, h.s.Stats().Listeners["x"].Active)
	}
}

func FuzzLoadState(f *testing.F) {
	f.Add([]byte(`{"version":1,"bans":[{"prefix":"192.0.2.1/32","reason":"pregreet","action":"reject","created":"2026-01-02T03:04:05Z","expires":"2026-01-02T04:04:05Z","count":1}],"known_good":[{"addr":"192.0.2.9","until":"2027-01-01T00:00:00Z"}]}`))
	f.Add([]byte(`{"bans":[{"prefix":"::ffff:1.2.3.4/120","action":"tarpit","expires":"2099-01-01T00:00:00Z"}],"offenders":[{"prefix":"10.0.0.0/8","count":-5}]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, stateFile), data, 0o600)
		clock := newFakeClock()
		cfg := testConfig()
		cfg.TableSize = 100
		s, err := New(cfg, Options{StateDir: dir, Now: clock.Now, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			return
		}
		s.Decide(mustAddr("192.0.2.1"), "")
		s.report(nil, mustAddr("10.1.2.3"), PreGreet, clock.Now())
		s.Bans()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestReportThroughTLS: Report finds the shield conn beneath a *tls.Conn.
func TestReportThroughTLS(t *testing.T) {
	h := newHarness(t, testConfig(), Options{})
	inner, _ := net.Listen("tcp", "127.0.0.1:0")
	ln := h.s.Listener(inner, ListenerConfig{Name: "imaps"})
	defer ln.Close()
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err == nil {
			defer c.Close()
			<-finished // keep it open while the server reports
		}
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tc := tls.Server(c, &tls.Config{})
	if FromConn(tc) != c.(*Conn) {
		t.Fatal("FromConn did not unwrap *tls.Conn")
	}
	if d := Report(tc, PreGreet); d.Source != "ban:pregreet" {
		t.Fatalf("%+v", d)
	}
	if d := ReportAuth(tc, "x", true); d.Source != "ban:pregreet" {
		t.Fatalf("banned address must stay banned after auth: %+v", d)
	}
}

// OnDone: the function runs when the shield kicks the connection, runs at
// once when registered after the kick, and not at all once forgotten
// (OnDone(nil), the session ended first).
func TestOnDone(t *testing.T) {
	h := newHarness(t, testConfig(), Options{})
	inner, _ := net.Listen("tcp", "127.0.0.1:0")
	ln := h.s.Listener(inner, ListenerConfig{Name: "x"})
	defer ln.Close()
	accepted := acceptConns(ln, 3)
	dial := func(ip string) *Conn {
		c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}).Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return <-accepted
	}
	kicked, forgotten := dial("127.95.0.1"), dial("127.95.0.2")
	ran := make(chan string, 3)
	kicked.OnDone(func() { ran <- "kicked" })
	forgotten.OnDone(func() { ran <- "forgotten" })
	forgotten.OnDone(nil)
	for _, ip := range []string{"127.95.0.1/32", "127.95.0.2/32"} {
		if err := h.s.Ban(mustPrefix(ip), time.Hour, "test", Drop); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []*Conn{kicked, forgotten} {
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("Done not closed by the ban")
		}
	}
	kicked.OnDone(func() { ran <- "late" }) // after the kick: at once
	got := map[string]bool{}
	for range 2 {
		select {
		case s := <-ran:
			got[s] = true
		case <-time.After(5 * time.Second):
			t.Fatalf("OnDone functions run: %v, want kicked and late", got)
		}
	}
	if !got["kicked"] || !got["late"] {
		t.Fatalf("OnDone functions run: %v, want kicked and late", got)
	}
	select {
	case s := <-ran:
		t.Fatalf("%s ran too", s)
	default:
	}
}

// acceptConns accepts on ln until it is closed, handing each connection
// over on the channel it returns (buffered for n).
func acceptConns(ln net.Listener, n int) <-chan *Conn {
	accepted := make(chan *Conn, n)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c.(*Conn)
		}
	}()
	return accepted
}
