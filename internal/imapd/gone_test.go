package imapd

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/passwd"
)

// hashedAuth checks credentials as the accounts backends do: in a slot of
// the password hasher (passwd.Hasher), honouring ctx while it queues.
type hashedAuth struct {
	fakeAuth
	h        *passwd.Hasher
	queued   chan struct{} // a check is about to wait for a slot
	verified atomic.Int64  // checks that got a slot and verified
}

func (a *hashedAuth) Authenticate(ctx context.Context, user, pass string) (string, int64, error) {
	a.queued <- struct{}{}
	release, err := a.h.Acquire(ctx, 1)
	if err != nil {
		return "", 0, err
	}
	defer release()
	return a.fakeAuth.Authenticate(ctx, user, pass)
}

// startHashed serves a hashedAuth whose one slot the test holds until it
// calls the returned release; failed logins are counted in *failed.
func startHashed(t *testing.T, mutate func(*Config)) (*testServer, *hashedAuth, func(), *atomic.Int64) {
	t.Helper()
	a := &hashedAuth{h: passwd.NewHasher(passwd.HashSlot, 1), queued: make(chan struct{}, 8)}
	a.h.Observe = func() { a.verified.Add(1) }
	failed := new(atomic.Int64)
	hooks := Hooks{Auth: func(ok bool) {
		if !ok {
			failed.Add(1)
		}
	}}
	ts := startTestAuth(t, mutate, hooks, true, a)
	release, err := a.h.Acquire(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	a.verified.Store(0)
	t.Cleanup(release) // before the server's shutdown, which waits for sessions queued for the slot
	return ts, a, release, failed
}

// dialFrom dials addr from a non-allowlisted loopback address, in TLS when
// tlsOn.
func dialFrom(t *testing.T, addr string, tlsOn bool) (*client, net.Conn) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 12, 0, 3)}, Timeout: 5 * time.Second}
	raw, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	raw.SetDeadline(time.Now().Add(20 * time.Second))
	c := raw
	if tlsOn {
		tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true})
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		c = tc
	}
	return &client{t: t, conn: c, r: bufio.NewReader(c)}, raw
}

func (a *hashedAuth) waitQueued(t *testing.T) {
	t.Helper()
	select {
	case <-a.queued:
	case <-time.After(10 * time.Second):
		t.Fatal("the login never reached the hasher")
	}
}

// A client that sends LOGIN (or AUTHENTICATE PLAIN) and leaves while the
// hasher is busy gives up its place: once the slot is free, no
// verification runs for it, it is no failed login, and it is counted as
// abandoned. In implicit TLS the TCP connection beneath is watched, and a
// client that closes properly (close_notify, then FIN) is gone too. The
// old code kept the check queued on the session's context, which ends
// only with the session, so the hasher verified for nobody.
func TestLoginAbandonedByDepartedClient(t *testing.T) {
	plainResp := base64.StdEncoding.EncodeToString([]byte("\x00" + testUser + "\x00wrong"))
	for _, tc := range []struct {
		name  string
		tls   bool
		login func(c *client)
	}{
		{"LOGIN", false, func(c *client) { c.send(`a LOGIN "` + testUser + `" "wrong"`) }},
		{"LOGIN literal", false, func(c *client) {
			c.send("a LOGIN {" + strconv.Itoa(len(testUser)) + "}")
			c.expect("+")
			c.send(testUser + " wrong")
		}},
		{"AUTHENTICATE PLAIN", false, func(c *client) {
			c.send("a AUTHENTICATE PLAIN")
			c.expect("+")
			c.send(plainResp)
		}},
		{"LOGIN in TLS", true, func(c *client) { c.send(`a LOGIN "` + testUser + `" "wrong"`) }},
		{"LOGIN in TLS, close_notify", true, func(c *client) { c.send(`a LOGIN "` + testUser + `" "wrong"`) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts, a, release, failed := startHashed(t, func(c *Config) { c.ImplicitTLS = tc.tls })
			c, raw := dialFrom(t, ts.addr, tc.tls)
			c.expect("* OK")
			tc.login(c)
			a.waitQueued(t)
			if strings.HasSuffix(tc.name, "close_notify") {
				c.conn.Close() // TLS close_notify (RFC 8446 6.1), then FIN
			} else {
				raw.Close()
			}
			// Not fatal: the old code fails here, and below.
			if !eventually(func() bool { return ts.srv.Abandoned() == 1 }) {
				t.Error("the departed client's login was not abandoned")
			}
			release()
			waitFor(t, "the session to end", func() bool { return ts.srv.Sessions() == 0 })
			if n := a.verified.Load(); n != 0 {
				t.Errorf("%d verifications ran for a client that had left", n)
			}
			if n := failed.Load(); n != 0 {
				t.Errorf("%d failed logins counted for an abandoned check", n)
			}
		})
	}
}

// A client that waits for its login is served, and a command it sends
// while it waits (pipelined after LOGIN, in the same write or later) is
// run next: the watch consumes nothing, and the session's read deadline
// is back after the check, so the session goes on.
func TestLoginWatchKeepsPipelinedCommands(t *testing.T) {
	login := `a LOGIN "` + testUser + `" "` + testPass + `"`
	for _, tc := range []struct {
		name string
		tls  bool
		send func(c *client, a *hashedAuth)
	}{
		{"same write", false, func(c *client, a *hashedAuth) {
			c.conn.Write([]byte(login + "\r\nb NOOP\r\n"))
			a.waitQueued(t)
		}},
		{"while waiting", false, func(c *client, a *hashedAuth) {
			c.send(login)
			a.waitQueued(t)
			c.send("b NOOP")
		}},
		{"while waiting in TLS", true, func(c *client, a *hashedAuth) {
			c.send(login)
			a.waitQueued(t)
			c.send("b NOOP")
		}},
		{"after the wait", false, func(c *client, a *hashedAuth) {
			c.send(login)
			a.waitQueued(t)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts, a, release, failed := startHashed(t, func(c *Config) { c.ImplicitTLS = tc.tls })
			c, _ := dialFrom(t, ts.addr, tc.tls)
			c.expect("* OK")
			tc.send(c, a)
			release()
			c.until("a OK")
			if tc.name == "after the wait" {
				c.send("b NOOP")
			}
			c.until("b OK")
			c.send("c SELECT INBOX")
			c.until("c OK")
			c.send("d LOGOUT")
			c.until("d OK")
			if ts.srv.Abandoned() != 0 || failed.Load() != 0 || a.verified.Load() != 1 {
				t.Errorf("abandoned %d, failed %d, verified %d; want 0, 0, 1", ts.srv.Abandoned(), failed.Load(), a.verified.Load())
			}
		})
	}
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
