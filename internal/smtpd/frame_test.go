package smtpd

import (
	"context"
	"encoding/base64"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/smtptest"
	"github.com/agua-mail/agua/shield"
)

// The session frame (connsrv.Frame) is shared with pop3d and imapd; these
// tests pin the three ways smtpd's own copy of it had drifted.

// A panic in a session is answered with a 421 the client actually reads
// (the old handler wrote it into the buffer and never flushed it, so the
// client saw nothing after the banner), and the server goes on.
func TestPanicIsAnswered(t *testing.T) {
	b := &memBackend{onRcpt: func(_ context.Context, rcpt string) {
		if rcpt == "boom@example.test" {
			panic("test panic in the backend")
		}
	}}
	ts := startServers(t, b, nil)
	c := smtptest.Dial(t, ts.addrs["smtp"])
	c.Expect("220 ")
	c.Cmd("EHLO client.example", "250")
	c.Cmd("MAIL FROM:<s@elsewhere.example>", "250")
	c.Cmd("RCPT TO:<boom@example.test>", "421 4.3.0 Internal error")
	c.ExpectClosed()
	if n := ts.servers[0].Panics(); n != 1 {
		t.Errorf("panics counted: %d, want 1", n)
	}
	if _, aborted := waitOpen(t, b); aborted != 1 {
		t.Errorf("the panicked session's transaction: %d aborts, want 1", aborted)
	}
	// The server still serves.
	c = smtptest.Dial(t, ts.addrs["smtp"])
	c.Expect("220 ")
	c.Cmd("EHLO client.example", "250")
}

// Shutdown cuts a failed login's delay short: the client gets its 535 and
// the 421 of the shutdown, and Shutdown returns, long before the delay (an
// hour) would have passed. The old code slept the delay out with
// time.Sleep, so Shutdown waited for it.
func TestShutdownCutsAuthDelay(t *testing.T) {
	failed := make(chan struct{}, 1)
	hooks := Hooks{Auth: func(_ *Session, ok bool) {
		if !ok {
			failed <- struct{}{}
		}
	}}
	ts := startServersHooks(t, &memBackend{}, func(c *Config) { c.AuthFailureDelay = time.Hour }, hooks)
	srv := ts.servers[1] // submission
	c := smtptest.Dial(t, ts.addrs["submission"])
	c.Expect("220 ")
	c.Cmd("EHLO client.example", "250")
	c.Send("AUTH PLAIN " + plainResp("u@example.test", "wrong"))
	select {
	case <-failed: // the session is in its delay (or about to enter it)
	case <-time.After(20 * time.Second):
		t.Fatal("the failed login was never reported")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(ctx) }()
	c.Expect("535 5.7.8")
	c.Expect("421 4.3.2")
	c.ExpectClosed()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v (the session outlived its context)", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("Shutdown did not return")
	}
}

// A shield kick (here a ban of the client's address) cancels the session
// context, so that backend work in progress for it stops. The old code
// only closed the socket; a backend waiting on the context waited on.
func TestShieldKickCancelsContext(t *testing.T) {
	cfg := shield.DefaultConfig()
	sh, err := shield.New(cfg, shield.Options{Logger: slog.New(slog.DiscardHandler), StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sh.Close() })
	entered, cancelled := make(chan struct{}), make(chan struct{})
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	b := &memBackend{onRcpt: func(ctx context.Context, _ string) {
		close(entered)
		select {
		case <-ctx.Done():
			close(cancelled)
		case <-release:
		}
	}}
	srv, err := NewServer(ModeMX, Config{Hostname: "mx.example.test", SpoolDir: t.TempDir()}, b, Hooks{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := sh.Listener(inner, shield.ListenerConfig{Name: "smtp"})
	go srv.Serve(ln)
	t.Cleanup(func() { ln.Close() })

	const client = "127.61.0.7"
	c := smtptest.DialFrom(t, ln.Addr().String(), client)
	c.Expect("220 ")
	c.Cmd("EHLO client.example", "250")
	c.Cmd("MAIL FROM:<s@elsewhere.example>", "250")
	c.Send("RCPT TO:<alice@example.test>")
	select {
	case <-entered:
	case <-time.After(20 * time.Second):
		t.Fatal("RCPT never reached the backend")
	}
	if err := sh.Ban(netip.MustParsePrefix(client+"/32"), time.Hour, "test", shield.Drop); err != nil {
		t.Fatal(err)
	}
	select {
	case <-cancelled:
	case <-time.After(30 * time.Second):
		t.Fatal("the shield kicked the connection but the session context was not cancelled")
	}
}

// plainResp is an AUTH PLAIN response (RFC 4616).
func plainResp(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
}
