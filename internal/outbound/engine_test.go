package outbound

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/queue"
	"github.com/agua-mail/agua/internal/resolver"
)

const msg1 = "From: a@agua.test\r\nTo: b@dest.test\r\nSubject: hello\r\n\r\nHello.\r\n.leading dot\r\n"

// TestPipelinedDeliveryReusesConnection: several messages to one
// destination go over one connection, commands pipelined (RFC 2920), the
// body dot-stuffed, and each message leaves the queue once delivered.
func TestPipelinedDeliveryReusesConnection(t *testing.T) {
	port, lns := listenSamePort(t, "127.0.0.61")
	p := newPeer(t, lns[0])
	startPeers(p)
	ev := newEnvStopped(t, port, func(o *Options) { o.InitialConcurrency, o.MaxConcurrency = 1, 1 })
	ev.dns.Add(t, "dest.test. 300 IN MX 10 mx.dest.test.", "mx.dest.test. 300 IN A 127.0.0.61")
	var ids []string
	for i := range 3 {
		ids = append(ids, ev.enqueue("a@agua.test", []string{fmt.Sprintf("b%d@dest.test", i), fmt.Sprintf("c%d@Dest.TEST", i)}, msg1))
	}
	ev.start() // all three are queued before the engine looks
	for _, id := range ids {
		ev.waitGone(id)
	}
	got := p.received()
	if len(got) != 3 {
		t.Fatalf("peer received %d messages, want 3", len(got))
	}
	for _, r := range got {
		if r.from != "a@agua.test" || len(r.rcpts) != 2 || r.data != msg1 || !strings.Contains(r.params, "SIZE=") {
			t.Errorf("received %+v", r)
		}
	}
	if n := p.connections(); n != 1 {
		t.Errorf("%d connections for 3 messages, want 1", n)
	}
	p.mu.Lock()
	pipelined := p.pipelined
	p.mu.Unlock()
	if !pipelined {
		t.Error("commands were not pipelined")
	}
	if len(ev.dsnList()) != 0 {
		t.Error("DSN for delivered mail")
	}
}

// TestMXPreferenceAndFallback: the best MX first; an MX that refuses the
// connection is skipped for the next (RFC 5321 5.1).
func TestMXPreferenceAndFallback(t *testing.T) {
	port, lns := listenSamePort(t, "127.0.0.62", "127.0.0.63", "127.0.0.64")
	lns[0].Close() // .62 refuses connections
	best := newPeer(t, lns[1])
	worst := newPeer(t, lns[2])
	startPeers(best, worst)
	ev := newEnv(t, port, nil)
	ev.dns.Add(t,
		"pref.test. 300 IN MX 30 c.pref.test.",
		"pref.test. 300 IN MX 5 a.pref.test.",
		"pref.test. 300 IN MX 10 b.pref.test.",
		"a.pref.test. 300 IN A 127.0.0.62",
		"b.pref.test. 300 IN A 127.0.0.63",
		"c.pref.test. 300 IN A 127.0.0.64",
	)
	id := ev.enqueue("a@agua.test", []string{"x@pref.test"}, msg1)
	ev.waitGone(id)
	if len(best.received()) != 1 || len(worst.received()) != 0 {
		t.Fatalf("preference 10 got %d, preference 30 got %d; want 1 and 0", len(best.received()), len(worst.received()))
	}
}

// TestImplicitMX: no MX record, the domain's own address (RFC 5321 5.1).
func TestImplicitMX(t *testing.T) {
	port, lns := listenSamePort(t, "127.0.0.65")
	p := newPeer(t, lns[0])
	startPeers(p)
	ev := newEnv(t, port, nil)
	ev.dns.Add(t, "bare.test. 300 IN A 127.0.0.65")
	id := ev.enqueue("a@agua.test", []string{"x@bare.test"}, msg1)
	ev.waitGone(id)
	if len(p.received()) != 1 {
		t.Fatal("not delivered to the implicit MX")
	}
}

// TestNullMXBouncesAtOnce: RFC 7505: no connection, one attempt, a DSN
// with 5.1.10.
func TestNullMXBouncesAtOnce(t *testing.T) {
	ev := newEnv(t, 1, nil)
	ev.dns.Add(t, "nomail.test. 300 IN MX 0 .")
	id := ev.enqueue("sender@agua.test", []string{"x@nomail.test"}, msg1)
	ev.waitGone(id)
	d := ev.waitDSN(1)
	if d[0].to != "sender@agua.test" || !strings.Contains(d[0].body, "Status: 5.1.10") || !strings.Contains(d[0].body, "null MX") {
		t.Fatalf("DSN to %s:\n%s", d[0].to, d[0].body)
	}
}

func TestNXDomainBounces(t *testing.T) {
	ev := newEnv(t, 1, nil)
	id := ev.enqueue("sender@agua.test", []string{"x@nowhere.test"}, msg1)
	ev.waitGone(id)
	if d := ev.waitDSN(1); !strings.Contains(d[0].body, "Status: 5.1.2") {
		t.Fatalf("DSN:\n%s", d[0].body)
	}
}

// TestPermanentRecipientFailure: a 550 for one recipient bounces it at
// once with the remote reply in the DSN; the other is delivered.
func TestPermanentRecipientFailure(t *testing.T) {
	port, lns := listenSamePort(t, "127.0.0.66")
	p := newPeer(t, lns[0])
	p.rcptReply = func(r string) string {
		if strings.HasPrefix(r, "nobody@") {
			return "550 5.1.1 <nobody@dest.test>: Recipient address rejected: User unknown"
		}
		return "250 2.1.5 ok"
	}
	startPeers(p)
	ev := newEnv(t, port, nil)
	ev.dns.Add(t, "dest.test. 300 IN MX 10 mx.dest.test.", "mx.dest.test. 300 IN A 127.0.0.66")
	id := ev.enqueue("sender@agua.test", []string{"nobody@dest.test", "someone@dest.test"}, msg1)
	ev.waitGone(id)
	if r := p.received(); len(r) != 1 || len(r[0].rcpts) != 1 || r[0].rcpts[0] != "someone@dest.test" {
		t.Fatalf("received %+v", r)
	}
	d := ev.waitDSN(1)
	for _, want := range []string{
		"Final-Recipient: rfc822; nobody@dest.test", "Action: failed", "Status: 5.1.1",
		"Diagnostic-Code: smtp; 550 5.1.1 <nobody@dest.test>: Recipient address rejected: User unknown",
		"Remote-MTA: dns; mx.dest.test", "Subject: hello",
	} {
		if !strings.Contains(d[0].body, want) {
			t.Errorf("DSN lacks %q", want)
		}
	}
	if strings.Contains(d[0].body, "someone@dest.test") {
		t.Error("DSN names the delivered recipient")
	}
}

// TestTemporaryFailureRetriesThenExpires: a 451 defers with backoff; past
// the queue lifetime the next failure bounces with 4.4.7.
func TestTemporaryFailureRetriesThenExpires(t *testing.T) {
	port, lns := listenSamePort(t, "127.0.0.67")
	p := newPeer(t, lns[0])
	p.rcptReply = func(string) string { return "451 4.7.1 greylisted, try later" }
	startPeers(p)
	ev := newEnv(t, port, nil)
	ev.dns.Add(t, "dest.test. 300 IN MX 10 mx.dest.test.", "mx.dest.test. 300 IN A 127.0.0.67")
	start := ev.clk.Now()
	id := ev.enqueue("sender@agua.test", []string{"x@dest.test"}, msg1)
	m := ev.waitState(id, queue.Deferred)
	r := m.Rcpts[0]
	if r.Attempts != 1 || r.Reply != "451 4.7.1 greylisted, try later" {
		t.Fatalf("after one attempt: %+v", r)
	}
	if wait := r.Next.Sub(start); wait < 4*time.Minute+30*time.Second || wait > 5*time.Minute+30*time.Second {
		t.Fatalf("first retry after %v, want 5m ± 10%%", wait)
	}
	// The second attempt comes when due, and doubles the wait.
	ev.clk.Add(6 * time.Minute)
	ev.q.Retry(id, ev.clk.Now()) // wakes the engine
	ev.waitFor("second attempt", func() bool { m, _ := ev.q.Get(id); return m.Rcpts[0].Attempts == 2 })
	m, _ = ev.q.Get(id)
	if wait := m.Rcpts[0].Next.Sub(ev.clk.Now()); wait < 9*time.Minute || wait > 11*time.Minute {
		t.Fatalf("second retry after %v, want 10m ± 10%%", wait)
	}
	if len(ev.dsnList()) != 0 {
		t.Fatal("DSN before the lifetime ran out")
	}
	ev.clk.Add(DefaultLifetime)
	ev.q.Retry(id, ev.clk.Now())
	ev.waitGone(id)
	d := ev.waitDSN(1)
	if !strings.Contains(d[0].body, "Status: 4.4.7") || !strings.Contains(d[0].body, "greylisted") {
		t.Fatalf("expiry DSN:\n%s", d[0].body)
	}
}

// TestNullSenderNeverBounced: RFC 3464/5321 6.1: a bounce of a bounce
// would loop.
func TestNullSenderNeverBounced(t *testing.T) {
	port, lns := listenSamePort(t, "127.0.0.68")
	p := newPeer(t, lns[0])
	p.rcptReply = func(string) string { return "550 5.1.1 no" }
	startPeers(p)
	ev := newEnv(t, port, nil)
	ev.dns.Add(t, "dest.test. 300 IN MX 10 mx.dest.test.", "mx.dest.test. 300 IN A 127.0.0.68")
	id := ev.enqueue("", []string{"x@dest.test"}, msg1)
	ev.waitGone(id)
	// A second message, with a sender, bounces: once its DSN is there, the
	// first one's would have been too.
	id2 := ev.enqueue("s@agua.test", []string{"y@dest.test"}, msg1)
	ev.waitGone(id2)
	if d := ev.waitDSN(1); len(d) != 1 || d[0].to != "s@agua.test" {
		t.Fatalf("DSNs: %+v", d)
	}
}

// TestSourceIP: outbound.source_ip is the connection's local address.
func TestSourceIP(t *testing.T) {
	port, lns := listenSamePort(t, "127.0.0.69")
	p := newPeer(t, lns[0])
	startPeers(p)
	ev := newEnv(t, port, func(o *Options) { o.SourceIP = mustAddr("127.0.0.77") })
	ev.dns.Add(t, "dest.test. 300 IN MX 10 mx.dest.test.", "mx.dest.test. 300 IN A 127.0.0.69")
	id := ev.enqueue("s@agua.test", []string{"y@dest.test"}, msg1)
	ev.waitGone(id)
	if r := p.received(); len(r) != 1 || !strings.HasPrefix(r[0].remote, "127.0.0.77:") {
		t.Fatalf("received %+v", r)
	}
}

// TestConcurrencyAdapts: successes raise a destination's limit up to the
// maximum; a 421/451 or failed connection lowers it, never below 1.
func TestConcurrencyAdapts(t *testing.T) {
	e, err := New(Options{Queue: nopQueue{}, Resolver: nil, RelayHost: "127.0.0.1:25", Bounce: nopBounce, InitialConcurrency: 5, MaxConcurrency: 7})
	if err != nil {
		t.Fatal(err)
	}
	d := &dest{name: "x", limit: 5}
	for range 5 {
		e.adapt(d, true, false)
	}
	if d.limit != 6 {
		t.Fatalf("after 5 successes limit = %d, want 6", d.limit)
	}
	for range 100 {
		e.adapt(d, true, false)
	}
	if d.limit != 7 {
		t.Fatalf("limit = %d, want the maximum 7", d.limit)
	}
	for range 10 {
		e.adapt(d, false, true)
	}
	if d.limit != 1 {
		t.Fatalf("limit = %d, want 1", d.limit)
	}
}

func TestNewChecksOptions(t *testing.T) {
	for name, o := range map[string]Options{
		"no queue":               {Resolver: nopResolver{}, Bounce: nopBounce},
		"no bounce":              {Queue: nopQueue{}, Resolver: nopResolver{}},
		"no resolver":            {Queue: nopQueue{}, Bounce: nopBounce},
		"relay by name, no DNS":  {Queue: nopQueue{}, Bounce: nopBounce, RelayHost: "smtp.example.com:587"},
		"relay port":             {Queue: nopQueue{}, Bounce: nopBounce, RelayHost: "127.0.0.1:99999"},
		"TLS required, disabled": {Queue: nopQueue{}, Bounce: nopBounce, RelayHost: "127.0.0.1", RelayRequireTLS: true, DisableTLS: true},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := New(Options{Queue: nopQueue{}, Bounce: nopBounce, RelayHost: "[::1]:2525"}); err != nil {
		t.Errorf("relay by address without DNS: %v", err)
	}
}

func TestBackoff(t *testing.T) {
	e, _ := New(Options{Queue: nopQueue{}, RelayHost: "127.0.0.1", Bounce: nopBounce})
	for n, want := range []time.Duration{5 * time.Minute, 10 * time.Minute, 20 * time.Minute, 40 * time.Minute, 80 * time.Minute, 160 * time.Minute, 4 * time.Hour, 4 * time.Hour} {
		for range 20 {
			got := e.backoff(n)
			if got < want-want/10 || got > want+want/10 {
				t.Fatalf("backoff(%d) = %v, want %v ± 10%%", n, got, want)
			}
		}
	}
}

// TestConnectionRefusedDefersAll: an unreachable destination defers every
// waiting message with the connection error, in one attempt.
func TestConnectionRefusedDefersAll(t *testing.T) {
	port, lns := listenSamePort(t, "127.0.0.70")
	lns[0].Close()
	ev := newEnv(t, port, nil)
	ev.dns.Add(t, "down.test. 300 IN MX 10 mx.down.test.", "mx.down.test. 300 IN A 127.0.0.70")
	var ids []string
	for i := range 4 {
		ids = append(ids, ev.enqueue("s@agua.test", []string{fmt.Sprintf("u%d@down.test", i)}, msg1))
	}
	for _, id := range ids {
		m := ev.waitState(id, queue.Deferred)
		if r := m.Rcpts[0]; r.Attempts != 1 || !strings.Contains(r.Reply, "4.4.1") || !strings.Contains(r.Reply, "refused") {
			t.Fatalf("%s: %+v", id, r)
		}
	}
	// Failures of a whole destination are logged once per attempt, with
	// the count, not once per recipient.
	logs := ev.logs.String()
	if n := strings.Count(logs, `level=INFO msg="outbound delivery" destination=down.test`); n == 0 || n > 4 {
		t.Fatalf("%d destination failure lines:\n%s", n, logs)
	}
	if strings.Contains(logs, `level=INFO msg="outbound delivery" id=`) {
		t.Fatalf("per-recipient info lines for a destination failure:\n%s", logs)
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

type nopQueue struct{}

func (nopQueue) Claim(time.Time, int) ([]queue.Job, error)            { return nil, nil }
func (nopQueue) Open(string) (io.ReadCloser, error)                   { return nil, queue.ErrNotFound }
func (nopQueue) Update(context.Context, string, []queue.Result) error { return nil }
func (nopQueue) Unclaim(string, []string)                             {}
func (nopQueue) Wake() <-chan struct{}                                { return nil }

type nopResolver struct{}

func (nopResolver) MX(context.Context, string) ([]resolver.MX, resolver.Info, error) {
	return nil, resolver.Info{}, nil
}
func (nopResolver) IP(context.Context, string) ([]netip.Addr, resolver.Info, error) {
	return nil, resolver.Info{}, nil
}
func (nopResolver) TLSA(context.Context, int, string) ([]resolver.TLSA, resolver.Info, error) {
	return nil, resolver.Info{}, nil
}

func nopBounce(context.Context, string, []byte) error { return nil }

// TestMXLoopsBackToMyself: RFC 5321 5.1: MX hosts no better than this
// server are dropped; when none is left the mail bounces (5.4.6).
func TestMXLoopsBackToMyself(t *testing.T) {
	port, lns := listenSamePort(t, "127.0.0.81")
	p := newPeer(t, lns[0])
	startPeers(p)
	ev := newEnv(t, port, nil) // Hostname "agua.test"
	ev.dns.Add(t,
		"backup.test. 300 IN MX 10 primary.backup.test.", "primary.backup.test. 300 IN A 127.0.0.81",
		"backup.test. 300 IN MX 20 agua.test.", "backup.test. 300 IN MX 30 worse.backup.test.",
		"self.test. 300 IN MX 10 AGUA.test.", "agua.test. 300 IN A 127.0.0.81",
	)
	id := ev.enqueue("s@agua.test", []string{"x@backup.test"}, msg1)
	ev.waitGone(id)
	if len(p.received()) != 1 {
		t.Fatal("not delivered to the better MX")
	}
	id = ev.enqueue("s@agua.test", []string{"x@self.test"}, msg1)
	ev.waitGone(id)
	if d := ev.waitDSN(1); !strings.Contains(d[0].body, "Status: 5.4.6") || !strings.Contains(d[0].body, "loops back") {
		t.Fatalf("DSN:\n%s", d[0].body)
	}
	if len(p.received()) != 1 {
		t.Fatal("delivered to itself")
	}
}

// TestDestinationConcurrency: a destination gets up to its limit of
// parallel connections, and never more. The peer holds every session at
// the greeting until the limit is reached, so the test needs no timing.
func TestDestinationConcurrency(t *testing.T) {
	const limit = 3
	port, lns := listenSamePort(t, "127.0.0.83")
	p := newPeer(t, lns[0])
	var mu sync.Mutex
	active, most := 0, 0
	reached := make(chan struct{})
	p.fault = func(stage string, c net.Conn) bool {
		if stage != "greeting" {
			return false
		}
		mu.Lock()
		active++
		most = max(most, active)
		if active == limit {
			close(reached)
		}
		mu.Unlock()
		select {
		case <-reached:
		case <-time.After(15 * time.Second):
		}
		return false
	}
	p.onEnd = func() {
		mu.Lock()
		active--
		mu.Unlock()
	}
	startPeers(p)
	ev := newEnv(t, port, func(o *Options) { o.InitialConcurrency, o.MaxConcurrency = limit, limit })
	ev.dns.Add(t, "dest.test. 300 IN MX 10 mx.dest.test.", "mx.dest.test. 300 IN A 127.0.0.83")
	var ids []string
	for i := range 12 {
		ids = append(ids, ev.enqueue("s@agua.test", []string{fmt.Sprintf("u%d@dest.test", i)}, msg1))
	}
	for _, id := range ids {
		ev.waitGone(id)
	}
	mu.Lock()
	defer mu.Unlock()
	if most != limit {
		t.Fatalf("at most %d parallel sessions, want %d", most, limit)
	}
	if len(p.received()) != 12 {
		t.Fatalf("received %d", len(p.received()))
	}
}

// TestStopInterruptsSessions: stopping the engine ends a session stuck
// with a silent peer at once, whatever the RFC timeouts, and the message
// goes back to the queue as it was (no attempt counted).
func TestStopInterruptsSessions(t *testing.T) {
	port, lns := listenSamePort(t, "127.0.0.84")
	p := newPeer(t, lns[0])
	inData := make(chan struct{})
	p.fault = func(stage string, c net.Conn) bool {
		if stage == "data" {
			close(inData)
			io.Copy(io.Discard, c) // says nothing after the data
			return true
		}
		return false
	}
	startPeers(p)
	ev := newEnv(t, port, func(o *Options) { o.Timeouts = DefaultTimeouts() })
	ev.dns.Add(t, "dest.test. 300 IN MX 10 mx.dest.test.", "mx.dest.test. 300 IN A 127.0.0.84")
	id := ev.enqueue("s@agua.test", []string{"x@dest.test"}, msg1)
	select {
	case <-inData:
	case <-time.After(20 * time.Second):
		t.Fatal("the peer never got the data")
	}
	ev.stop()
	m, err := ev.q.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	if r := m.Rcpts[0]; r.Status != queue.Pending || r.Attempts != 0 {
		t.Fatalf("after stop: %+v", r)
	}
	if jobs, _ := ev.q.Claim(ev.clk.Now(), 10); len(jobs) != 1 {
		t.Fatal("the message was not given back to the queue")
	}
}
