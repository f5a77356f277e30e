package connsrv

import (
	"context"
	"log/slog"
	"net"
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
