package pop3d

import (
	"bufio"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/passwd"
	"github.com/agua-mail/agua/shield"
)

// hashedBackend checks credentials as the accounts backends do: in a slot
// of the password hasher (passwd.Hasher), honouring ctx while it queues.
// A check that cannot get a slot is a temporary failure, as storeBackend
// makes it.
type hashedBackend struct {
	*fakeBackend
	h        *passwd.Hasher
	queued   chan struct{} // a check is about to wait for a slot
	verified atomic.Int64  // checks that got a slot and verified
}

func newHashedBackend(b *fakeBackend) *hashedBackend {
	hb := &hashedBackend{fakeBackend: b, h: passwd.NewHasher(passwd.HashSlot, 1), queued: make(chan struct{}, 8)}
	hb.h.Observe = func() { hb.verified.Add(1) }
	return hb
}

func (b *hashedBackend) Authenticate(ctx context.Context, s *Session, user, pass string) (string, error) {
	b.queued <- struct{}{}
	release, err := b.h.Acquire(ctx, 1)
	if err != nil {
		e := *errTempAuth
		e.Cause = err
		return "", &e
	}
	defer release()
	return b.fakeBackend.Authenticate(ctx, s, user, pass)
}

// startHashed serves a hashedBackend whose one slot the test holds until
// it calls the returned release; failed logins are counted in *failed.
func startHashed(t *testing.T) (*testServer, *hashedBackend, func(), *atomic.Int64) {
	t.Helper()
	var hb *hashedBackend
	failed := new(atomic.Int64)
	hooks := Hooks{Auth: func(_ *Session, ok bool) {
		if !ok {
			failed.Add(1)
		}
	}}
	ts := startTestBackend(t, nil, hooks, func(b *fakeBackend) Backend { hb = newHashedBackend(b); return hb })
	release, err := hb.h.Acquire(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	hb.verified.Store(0)
	t.Cleanup(release) // before the server's shutdown, which waits for sessions queued for the slot
	return ts, hb, release, failed
}

// dialFrom dials addr from a non-allowlisted loopback address.
func dialFrom(t *testing.T, addr string) *client {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 11, 0, 2)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	cl := &client{t: t, conn: c}
	cl.r = bufio.NewReader(c)
	return cl
}

// waitQueued waits for a check to queue for the hasher.
func waitQueued(t *testing.T, hb *hashedBackend) {
	t.Helper()
	select {
	case <-hb.queued:
	case <-time.After(10 * time.Second):
		t.Fatal("the login never reached the hasher")
	}
}

// A client that sends USER and PASS and leaves while the hasher is busy
// gives up its place: once the slot is free, no verification runs for
// it, it is no failed login, and it is counted as abandoned. The old code
// kept the check queued on the session's context, which ends only with
// the session, so the hasher verified for nobody.
func TestLoginAbandonedByDepartedClient(t *testing.T) {
	for _, tc := range []struct {
		name  string
		login func(c *client)
	}{
		{"USER/PASS", func(c *client) { c.cmd("USER "+testUser, "+OK"); c.send("PASS wrong") }},
		{"AUTH PLAIN", func(c *client) { c.send("AUTH PLAIN " + plain(testUser, "wrong")) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts, hb, release, failed := startHashed(t)
			c := dialFrom(t, ts.addr)
			c.expect("+OK")
			tc.login(c)
			waitQueued(t, hb)
			c.conn.Close()
			// Not fatal: the old code fails here, and below.
			if !eventually(func() bool { return ts.srv.Abandoned() == 1 }) {
				t.Error("the departed client's login was not abandoned")
			}
			release()
			waitFor(t, "the session to end", func() bool { return ts.srv.Sessions() == 0 })
			if n := hb.verified.Load(); n != 0 {
				t.Errorf("%d verifications ran for a client that had left", n)
			}
			if n := failed.Load(); n != 0 {
				t.Errorf("%d failed logins counted for an abandoned check", n)
			}
		})
	}
}

// A client that waits for its login is served, and what it sends while
// it waits (a command pipelined after PASS, in the same write or later)
// is read as its next command: the watch consumes nothing, and the
// session's read deadline is back after the check.
func TestLoginWatchKeepsPipelinedCommands(t *testing.T) {
	for _, tc := range []struct {
		name string
		send func(c *client, hb *hashedBackend)
	}{
		{"same write", func(c *client, hb *hashedBackend) {
			c.raw("PASS " + testPass + "\r\nSTAT\r\n")
			waitQueued(t, hb)
		}},
		{"while waiting", func(c *client, hb *hashedBackend) {
			c.send("PASS " + testPass)
			waitQueued(t, hb)
			c.send("STAT")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts, hb, release, failed := startHashed(t)
			c := dialFrom(t, ts.addr)
			c.expect("+OK")
			c.cmd("USER "+testUser, "+OK")
			tc.send(c, hb)
			release()
			c.expect("+OK Logged in")
			c.expect("+OK 3 ")
			c.send("LIST")
			c.expect("+OK")
			if n := len(c.multi()); n != 3 {
				t.Errorf("LIST: %d messages, want 3", n)
			}
			c.cmd("QUIT", "+OK")
			if ts.srv.Abandoned() != 0 || failed.Load() != 0 || hb.verified.Load() != 1 {
				t.Errorf("abandoned %d, failed %d, verified %d; want 0, 0, 1", ts.srv.Abandoned(), failed.Load(), hb.verified.Load())
			}
		})
	}
}

// A login that waits for the hasher and succeeds leaves a session that
// goes on with its commands under its own timeouts: no read deadline in
// the past is left from the watch.
func TestLoginAfterWaitGoesOn(t *testing.T) {
	ts, hb, release, _ := startHashed(t)
	c := dialFrom(t, ts.addr)
	c.expect("+OK")
	c.cmd("USER "+testUser, "+OK")
	c.send("PASS " + testPass)
	waitQueued(t, hb)
	release()
	c.expect("+OK Logged in")
	for range 3 {
		c.cmd("NOOP", "+OK")
	}
	c.cmd("STAT", "+OK 3 ")
	c.cmd("QUIT", "+OK")
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

// A login waiting for the hasher when the shield closes its session (a
// ban issued meanwhile, here as another node's ban arrives) ends quietly:
// no reply, no failed login, no verification, not counted as abandoned,
// and no warning. The old code answered the cancelled check as a failure
// of the server and logged it at warn, "pop3 command failed" with the
// cancelled query's error, which with the accounts on PostgreSQL read
// "postgresql unavailable: ... context canceled" while the database was
// fine.
func TestLoginCutShortByShieldKick(t *testing.T) {
	ts, hb, release, failed := startHashed(t)
	sh, err := shield.New(shield.DefaultConfig(), shield.Options{Logger: slog.New(slog.DiscardHandler), StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sh.Close() })
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := sh.Listener(inner, shield.ListenerConfig{Name: "pop3"})
	go ts.srv.Serve(ln)
	t.Cleanup(func() { ln.Close() })

	c := dialFrom(t, ln.Addr().String())
	c.expect("+OK")
	c.cmd("USER "+testUser, "+OK")
	c.send("PASS wrong")
	waitQueued(t, hb)
	if err := sh.Ban(netip.MustParsePrefix("127.11.0.2/32"), time.Hour, "test", shield.Reject); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the session to end", func() bool { return ts.srv.Sessions() == 0 })
	release()
	if line, err := c.r.ReadString('\n'); err == nil {
		t.Errorf("the kicked session answered %q", line)
	}
	if n := hb.verified.Load(); n != 0 {
		t.Errorf("%d verifications ran for a session the shield had closed", n)
	}
	if n := failed.Load(); n != 0 {
		t.Errorf("%d failed logins counted for a session the shield had closed", n)
	}
	if n := ts.srv.Abandoned(); n != 0 {
		t.Errorf("%d logins counted as abandoned; the client did not leave, the shield closed it", n)
	}
	if logs := ts.logs.String(); strings.Contains(logs, "level=WARN") || !strings.Contains(logs, "login cut short") {
		t.Errorf("want no warning and a debug line \"login cut short\"; log:\n%s", logs)
	}
}
