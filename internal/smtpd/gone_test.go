package smtpd

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/passwd"
	"github.com/agua-mail/agua/internal/smtptest"
	"github.com/agua-mail/agua/shield"
)

// hashedSubmission serves submission behind a shield with a backend that
// checks credentials in a slot of the password hasher (passwd.Hasher),
// honouring ctx while it queues, as the accounts backends do. The test
// holds the one slot until it calls release.
type hashedSubmission struct {
	srv      *Server
	sh       *shield.Shield
	addr     string
	queued   chan struct{} // a check is about to wait for a slot
	verified atomic.Int64  // checks that got a slot
	failed   atomic.Int64  // failed logins (Hooks.Auth)
	release  func()
}

func startHashedSubmission(t *testing.T) *hashedSubmission {
	t.Helper()
	sh, err := shield.New(shield.DefaultConfig(), shield.Options{Logger: slog.New(slog.DiscardHandler), StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sh.Close() })
	hs := &hashedSubmission{sh: sh, queued: make(chan struct{}, 8)}
	h := passwd.NewHasher(passwd.HashSlot, 1)
	h.Observe = func() { hs.verified.Add(1) }
	b := &memBackend{onAuth: func(ctx context.Context) error {
		hs.queued <- struct{}{}
		release, err := h.Acquire(ctx, 1)
		if err != nil {
			return ErrTempAuth.WithCause(err) // as the router makes it
		}
		release()
		return nil
	}}
	hooks := Hooks{Auth: func(_ *Session, ok bool) {
		if !ok {
			hs.failed.Add(1)
		}
	}}
	ts := startServersHooks(t, b, nil, hooks)
	// The shield's listener in front of the submission server.
	hs.srv = ts.servers[1]
	inner := listenLoopback(t)
	ln := sh.Listener(inner, shield.ListenerConfig{Name: "submission"})
	go hs.srv.Serve(ln)
	t.Cleanup(func() { ln.Close() })
	hs.addr = ln.Addr().String()
	if hs.release, err = h.Acquire(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	hs.verified.Store(0)
	t.Cleanup(hs.release) // before the servers' shutdown, which waits for sessions queued for the slot
	return hs
}

func (hs *hashedSubmission) waitQueued(t *testing.T) {
	t.Helper()
	select {
	case <-hs.queued:
	case <-time.After(10 * time.Second):
		t.Fatal("the login never reached the hasher")
	}
}

// authFailures is what the shield counted against addr.
func (hs *hashedSubmission) authFailures(addr string) uint64 {
	want := netip.PrefixFrom(netip.MustParseAddr(addr), 32)
	for _, a := range hs.sh.History(time.Time{}) {
		if a.Addr == want {
			return a.Events["auth_failure"]
		}
	}
	return 0
}

// A submission client that sends AUTH (PLAIN, or LOGIN's two answers) and
// leaves while the hasher is busy gives up its place: once the slot is
// free, no verification runs for it, and neither agua nor the shield
// counts a failed login for it, while a client that stays for its wrong
// password is counted. The old code kept the check queued on the
// session's context, which ends only with the session.
func TestAuthAbandonedByDepartedClient(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for i, tc := range []struct {
		name string
		auth func(c *smtptest.Client)
	}{
		{"PLAIN", func(c *smtptest.Client) { c.Send("AUTH PLAIN " + plainResp("u@example.test", "wrong")) }},
		{"LOGIN", func(c *smtptest.Client) {
			c.Cmd("AUTH LOGIN", "334 ")
			c.Cmd(b64("u@example.test"), "334 ")
			c.Send(b64("wrong"))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hs := startHashedSubmission(t)
			gone := fmt.Sprintf("127.62.0.%d", i+1)
			c := smtptest.DialFrom(t, hs.addr, gone)
			c.Expect("220 ")
			c.Cmd("EHLO client.example", "250")
			tc.auth(c)
			hs.waitQueued(t)
			c.Conn.Close()
			// Not fatal: the old code fails here, and below.
			if !eventually(func() bool { return hs.srv.Abandoned() == 1 }) {
				t.Error("the departed client's login was not abandoned")
			}
			hs.release()
			if !eventually(func() bool { return hs.srv.Sessions() == 0 }) {
				t.Fatal("the departed client's session did not end")
			}
			// A client that stays for its answer is verified and counted.
			const stays = "127.62.1.1"
			c2 := smtptest.DialFrom(t, hs.addr, stays)
			c2.Expect("220 ")
			c2.Cmd("EHLO client.example", "250")
			c2.Cmd("AUTH PLAIN "+plainResp("u@example.test", "wrong"), "535 5.7.8")
			<-hs.queued
			if n := hs.verified.Load(); n != 1 {
				t.Errorf("%d verifications, want 1 (the client that stayed)", n)
			}
			if n := hs.failed.Load(); n != 1 {
				t.Errorf("%d failed logins counted, want 1 (the client that stayed)", n)
			}
			if n := hs.authFailures(gone); n != 0 {
				t.Errorf("the shield counted %d auth failures against the departed client", n)
			}
			if n := hs.authFailures(stays); n != 1 {
				t.Errorf("the shield counted %d auth failures against the client that stayed, want 1", n)
			}
		})
	}
}

// A client that waits for its AUTH is served, and a command it sends
// while it waits (pipelined in the same write, or later) is answered
// next: the watch consumes nothing, and the session goes on after the
// wait under its own timeouts.
func TestAuthWatchKeepsPipelinedCommands(t *testing.T) {
	auth := "AUTH PLAIN " + plainResp("u@example.test", "p")
	for _, tc := range []struct {
		name string
		send func(c *smtptest.Client, hs *hashedSubmission)
	}{
		{"same write", func(c *smtptest.Client, hs *hashedSubmission) {
			c.Raw(auth + "\r\nNOOP\r\n")
			hs.waitQueued(t)
		}},
		{"while waiting", func(c *smtptest.Client, hs *hashedSubmission) {
			c.Send(auth)
			hs.waitQueued(t)
			c.Send("NOOP")
		}},
		{"after the wait", func(c *smtptest.Client, hs *hashedSubmission) {
			c.Send(auth)
			hs.waitQueued(t)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hs := startHashedSubmission(t)
			c := smtptest.DialFrom(t, hs.addr, "127.62.2.1")
			c.Expect("220 ")
			c.Cmd("EHLO client.example", "250")
			tc.send(c, hs)
			hs.release()
			c.Expect("235 2.7.0")
			if tc.name == "after the wait" {
				c.Send("NOOP")
			}
			c.Expect("250")
			c.Cmd("MAIL FROM:<u@example.test>", "250")
			c.Cmd("RCPT TO:<alice@example.test>", "250")
			c.Cmd("QUIT", "221")
			if hs.srv.Abandoned() != 0 || hs.failed.Load() != 0 || hs.verified.Load() != 1 {
				t.Errorf("abandoned %d, failed %d, verified %d; want 0, 0, 1", hs.srv.Abandoned(), hs.failed.Load(), hs.verified.Load())
			}
		})
	}
}

func listenLoopback(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// eventually polls cond (state changed by another goroutine) for up to
// 10 s and reports whether it came true.
func eventually(cond func() bool) bool {
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}
