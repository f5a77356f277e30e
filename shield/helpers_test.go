package shield

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakeClock is a settable clock for limiters, windows and bans.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// harness is a shield with a fake clock and captured logs.
type harness struct {
	t     *testing.T
	s     *Shield
	clock *fakeClock
	logs  *syncBuffer
}

func newHarness(t *testing.T, cfg Config, opts Options) *harness {
	t.Helper()
	h := &harness{t: t, clock: newFakeClock(), logs: new(syncBuffer)}
	opts.Now = h.clock.Now
	opts.Logger = slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := New(cfg, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h.s = s
	t.Cleanup(func() { s.Close() })
	return h
}

// testConfig is DefaultConfig with limits loose enough that tests which are
// not about limits never hit them.
func testConfig() Config {
	c := DefaultConfig()
	c.Limits.PerIPRate = 1000
	c.Limits.PerIPBurst = 1000
	c.Limits.PerPrefixRate = 10000
	c.Limits.PerPrefixBurst = 10000
	c.Limits.PerPrefixConns = 1000
	return c
}

// replyReject is a minimal SMTP-style Reject callback.
func replyReject(c net.Conn, d Decision) {
	if d.Temporary {
		fmt.Fprintf(c, "421 4.7.0 %s\r\n", d.Reason)
		return
	}
	fmt.Fprintf(c, "554 5.7.1 %s\r\n", d.Reason)
}

// server is a tiny line protocol on a shield listener, enough to speak to
// the shield the way agua's protocol packages do:
//
//	AUTH user pass   -> ReportAuth (pass "good" succeeds)
//	RCPT bad|good    -> UnknownRecipient | RecipientAccepted
//	MSG              -> MessageAccepted
//	anything else    -> ProtocolError; NOOP -> 250
type server struct {
	ln   net.Listener
	addr string
	mu   sync.Mutex
	seen []net.Addr // RemoteAddr of admitted connections
}

func startServer(t *testing.T, s *Shield, lc ListenerConfig) *server {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if lc.Name == "" {
		lc.Name = "test"
	}
	if lc.Reject == nil {
		lc.Reject = replyReject
	}
	srv := &server{ln: s.Listener(inner, lc), addr: inner.Addr().String()}
	t.Cleanup(func() { srv.ln.Close() })
	go func() {
		for {
			c, err := srv.ln.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			srv.mu.Lock()
			srv.seen = append(srv.seen, c.RemoteAddr())
			srv.mu.Unlock()
			go serve(c)
		}
	}()
	return srv
}

func (srv *server) remotes() []net.Addr {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return append([]net.Addr(nil), srv.seen...)
}

func serve(c net.Conn) {
	defer c.Close()
	fmt.Fprintf(c, "220 ready\r\n")
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		f := strings.Fields(line)
		var d Decision
		switch {
		case len(f) == 0:
			d = Report(c, ProtocolError)
		case f[0] == "NOOP":
		case f[0] == "TRUSTED":
			fmt.Fprintf(c, "250 %v\r\n", Allowlisted(c))
			continue
		case f[0] == "KNOWNGOOD":
			fmt.Fprintf(c, "250 %v\r\n", KnownGood(c))
			continue
		case f[0] == "QUIT":
			fmt.Fprintf(c, "221 bye\r\n")
			return
		case f[0] == "AUTH" && len(f) == 3:
			d = ReportAuth(c, f[1], f[2] == "good")
		case f[0] == "RCPT" && len(f) == 2 && f[1] == "bad":
			d = Report(c, UnknownRecipient)
		case f[0] == "RCPT":
			d = Report(c, RecipientAccepted)
		case f[0] == "MSG":
			d = Report(c, MessageAccepted)
		default:
			d = Report(c, ProtocolError)
		}
		if d.Action != Allow {
			replyReject(c, d)
			return
		}
		fmt.Fprintf(c, "250 ok\r\n")
	}
}

// client is one connection from a chosen loopback source address.
type client struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

// dialFrom connects to addr from the loopback source src (e.g. "127.0.3.4").
func dialFrom(t *testing.T, addr, src string) *client {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", src, err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{t: t, c: c, br: bufio.NewReader(c)}
}

// line reads one reply line, or returns the error (io.EOF, reset, timeout).
func (cl *client) line(timeout time.Duration) (string, error) {
	cl.c.SetReadDeadline(time.Now().Add(timeout))
	s, err := cl.br.ReadString('\n')
	if err != nil {
		return s, err
	}
	return strings.TrimRight(s, "\r\n"), nil
}

// expect reads a line and fails unless it starts with prefix.
func (cl *client) expect(prefix string) string {
	cl.t.Helper()
	l, err := cl.line(5 * time.Second)
	if err != nil || !strings.HasPrefix(l, prefix) {
		cl.t.Fatalf("want %q..., got %q, %v", prefix, l, err)
	}
	return l
}

// cmd sends a command and returns the reply line.
func (cl *client) cmd(s string) string {
	cl.t.Helper()
	if _, err := fmt.Fprintf(cl.c, "%s\r\n", s); err != nil {
		cl.t.Fatalf("send %q: %v", s, err)
	}
	l, err := cl.line(5 * time.Second)
	if err != nil {
		cl.t.Fatalf("reply to %q: %v", s, err)
	}
	return l
}

// expectClosed fails unless the server closed without sending anything.
func (cl *client) expectClosed() {
	cl.t.Helper()
	l, err := cl.line(5 * time.Second)
	if l != "" || err == nil || isTimeout(err) {
		cl.t.Fatalf("want close with no data, got %q, %v", l, err)
	}
}

// expectSilence fails unless nothing arrives and the connection stays open
// for a short while (a tarpit).
func (cl *client) expectSilence() {
	cl.t.Helper()
	l, err := cl.line(300 * time.Millisecond)
	if !isTimeout(err) {
		cl.t.Fatalf("want silence, got %q, %v", l, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// eventually polls cond until it holds or a generous limit passes (it does
// not assert a duration: the limit only keeps a broken test from hanging).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for i := 0; i < 1000; i++ {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("never happened: %s", what)
}

func mustAddr(s string) netip.Addr     { return netip.MustParseAddr(s) }
func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func writeFile(t *testing.T, name, data string) {
	t.Helper()
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, name); err != nil {
		t.Fatal(err)
	}
}

// expectDropped dials from src and fails unless the connection is closed
// with nothing written. A drop resets the connection, which the client may
// already see while connecting.
func expectDropped(t *testing.T, addr, src string) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.ECONNRESET) {
			return
		}
		t.Fatalf("dial from %s: %v", src, err)
	}
	t.Cleanup(func() { c.Close() })
	cl := &client{t: t, c: c, br: bufio.NewReader(c)}
	cl.expectClosed()
}
