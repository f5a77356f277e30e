package connsrv

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

// A failed-login delay (Frame.Wait) ends when the server shuts down: a
// session waiting an hour lets Shutdown return long before.
func TestWaitEndsAtShutdown(t *testing.T) {
	tr := New("test", slog.New(slog.DiscardHandler))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	waiting, waited := make(chan struct{}), make(chan bool, 1)
	go tr.Serve(ln, func(c net.Conn) {
		fr := tr.Open(c, "test", time.Hour)
		defer fr.End()
		close(waiting)
		waited <- fr.Wait(time.Hour)
	})
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case <-waiting:
	case <-time.After(20 * time.Second):
		t.Fatal("the session never started")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- tr.Shutdown(ctx) }()
	select {
	case full := <-waited:
		if full {
			t.Fatal("Wait reported the whole hour")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Wait did not end at Shutdown")
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// Sanitize keeps printable ASCII and cuts at its limit.
func TestSanitize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want string
	}{{"alice", 32, "alice"}, {"a\r\nb\x00é", 32, "a??b??"}, {"abcdef", 3, "abc"}} {
		if got := Sanitize(tc.in, tc.max); got != tc.want {
			t.Errorf("Sanitize(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
	}
}

// A session's log lines carry its connection's attributes, though they
// are bound only when the first line is logged (issue 15): every line,
// those of loggers derived with With too, and none for a level the
// server's handler leaves out.
func TestSessionLogAttributes(t *testing.T) {
	var out bytes.Buffer
	tr := New("smtp-in", slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelInfo})))
	server, client := net.Pipe()
	defer server.Close()
	defer client.Close()
	fr := tr.Open(server, "smtp", time.Hour)
	defer fr.End()
	fr.Log.Debug("not logged")
	fr.Log.Info("first", "n", 1)
	fr.Log.With("user", "alice").Warn("second")
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("logged %d lines, want 2:\n%s", len(lines), out.String())
	}
	common := "conn=" + fr.ID + " remote=" + server.RemoteAddr().String() + " proto=smtp listener=smtp-in"
	for i, want := range []string{"msg=first " + common + " n=1", "msg=second " + common + " user=alice"} {
		if !strings.Contains(lines[i], want) {
			t.Errorf("line %d = %q, want it to contain %q", i, lines[i], want)
		}
	}
}

// addrString writes a TCP address as net.TCPAddr's String does.
func TestAddrString(t *testing.T) {
	for _, a := range []net.Addr{
		&net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 25},
		&net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 65535}, // 16-byte IPv4
		&net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 587},
		&net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 993, Zone: "eth0"},
		&net.TCPAddr{IP: net.ParseIP("::ffff:198.51.100.1"), Port: 110},
		&net.UnixAddr{Name: "/run/agua.sock", Net: "unix"},
	} {
		if got, want := addrString(a), a.String(); got != want {
			t.Errorf("addrString(%v) = %q, want %q", a, got, want)
		}
	}
}

// IP reads a TCP address's IP unmapped, as parsing its text did.
func TestIP(t *testing.T) {
	for _, tc := range []struct {
		a    net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 25}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:198.51.100.1"), Port: 25}, "198.51.100.1"},
		{&net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 25, Zone: "eth0"}, "fe80::1%eth0"},
		{&net.UDPAddr{IP: net.ParseIP("2001:db8::2"), Port: 53}, "2001:db8::2"},
		{&net.UnixAddr{Name: "/run/agua.sock", Net: "unix"}, "invalid IP"},
		{nil, "invalid IP"},
	} {
		if got := IP(tc.a); got.String() != tc.want {
			t.Errorf("IP(%v) = %s, want %s", tc.a, got, tc.want)
		}
	}
}

// A session's frame costs a fixed handful of allocations when the session
// logs nothing (issue 15: its logger formatted the connection's attributes
// up front, twelve allocations with the context): the frame, its id, its
// context and the logger.
func TestOpenAllocations(t *testing.T) {
	tr := New("smtp", slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn})))
	server, client := net.Pipe()
	defer server.Close()
	defer client.Close()
	n := testing.AllocsPerRun(100, func() {
		fr := tr.Open(server, "smtp", time.Hour)
		fr.Log.Info("below the level: not bound")
		fr.End()
	})
	if n > openAllocs {
		t.Errorf("%v allocations to open and end a frame, want at most %d", n, openAllocs)
	}
}

// openAllocs: the Frame, its id, context.WithCancel's two, the Logger.
const openAllocs = 5

// BenchmarkOpen: a session's frame opened and ended, logging nothing.
func BenchmarkOpen(b *testing.B) {
	tr := New("smtp", slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn})))
	server, client := net.Pipe()
	defer server.Close()
	defer client.Close()
	b.ReportAllocs()
	for b.Loop() {
		tr.Open(server, "smtp", time.Hour).End()
	}
}
