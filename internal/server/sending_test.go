package server

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/resolver/dnstest"
)

// loginFrom opens an authenticated submission session from src.
func loginFrom(t *testing.T, ts *testServer, src string) *client {
	t.Helper()
	c := dialFrom(t, ts.srv.Addr("submission"), src)
	c.expect("220 ")
	c.cmd("EHLO laptop.example", "250")
	c.cmd("AUTH PLAIN "+plainAuth(testUser, testPass), "235")
	return c
}

// The sending limits reply at RCPT (452 4.5.3 for the recipients over the
// per-message limit, RFC 5321 4.5.3.1.10; 451 4.7.1 for a message over the
// hourly limit) and at the end of DATA when another session of the account
// used the limit up meanwhile. A refusal reaches the shield as
// outbound_abuse for the client's address. Before: every one was 250.
func TestSendingLimitReplies(t *testing.T) {
	dns := dnstest.Start(t, "127.0.0.61")
	dns.Add(t, "far.test. 300 IN MX 10 mx.far.test.", "mx.far.test. 300 IN A 127.0.0.62")
	ts := startServer(t, func(c *config.Config) {
		c.DNS.Resolver = []string{dns.Addr}
		c.Outbound.SMTPPort = freePort(t, "127.0.0.62") // nothing listens: mail stays queued
		c.Outbound.Limits.RecipientsPerMessage = 3
		c.Outbound.Limits.MessagesPerHour = 2
	})
	const src = "127.0.0.63"
	c := loginFrom(t, ts, src)
	c.cmd("MAIL FROM:<"+testUser+">", "250")
	for i := range 3 {
		c.cmd(fmt.Sprintf("RCPT TO:<r%d@far.test>", i), "250")
	}
	if got := c.cmd("RCPT TO:<r3@far.test>", "452 4.5.3"); !strings.Contains(got, "at most 3") {
		t.Errorf("4th recipient: %q", got)
	}
	c.cmd("RCPT TO:<"+testUser+">", "452 4.5.3") // local recipients count too
	c.cmd("DATA", "354")
	c.raw("Subject: one\r\n\r\nbody\r\n.\r\n")
	c.expect("250 ")

	// Two sessions start the account's second and last message of the
	// hour; the one that ends its DATA second is refused there.
	a, b := c, loginFrom(t, ts, src)
	for _, s := range []*client{a, b} {
		s.cmd("MAIL FROM:<"+testUser+">", "250")
		s.cmd("RCPT TO:<r0@far.test>", "250")
		s.cmd("DATA", "354")
		s.raw("Subject: two\r\n\r\nbody\r\n")
	}
	a.raw(".\r\n")
	a.expect("250 ")
	b.raw(".\r\n")
	if got := b.expect("451 4.7.1"); !strings.Contains(got, "at most 2 messages per hour") {
		t.Errorf("end of DATA over the hourly limit: %q", got)
	}
	// The next message is refused at its first RCPT.
	a.cmd("MAIL FROM:<"+testUser+">", "250")
	a.cmd("RCPT TO:<r0@far.test>", "451 4.7.1")
	a.cmd("QUIT", "221")
	if n := ts.srv.Shield().Why(netipAddr(src)).Counters.Events["outbound_abuse"]; n == 0 {
		t.Errorf("no outbound_abuse event for %s", src)
	}
	if ts.srv.limits.IsSuspended(testUser) {
		t.Error("suspended after two limit hits (suspend_after_hits is 5)")
	}
}

// Logins to one account from many networks within an hour suspend its
// sending; POP3 logins keep working; with notify_postmaster the postmaster
// gets a mail. Before: no such signal.
func TestLoginsFromManyNetworksSuspend(t *testing.T) {
	ts := startServer(t, func(c *config.Config) {
		c.Outbound.Limits.SuspendLoginNetworks = 3
		c.Outbound.Limits.NotifyPostmaster = true
	})
	if err := ts.dir.AddAlias(t.Context(), "postmaster@"+testDomain, testUser); err != nil {
		t.Fatal(err)
	}
	c := loginFrom(t, ts, "127.1.0.5")
	loginFrom(t, ts, "127.2.0.5").cmd("QUIT", "221")
	// A third network: the account is suspended, and its first session,
	// still open, is ended.
	d := loginFrom(t, ts, "127.3.0.5")
	waitOutbound(t, "the suspension", func() bool { return ts.srv.limits.IsSuspended(testUser) })
	c.expectClosed()
	d.expectClosed()
	e := loginFrom(t, ts, "127.3.0.6")
	if got := e.cmd("MAIL FROM:<"+testUser+">", "550 5.7.1"); !strings.Contains(got, "suspended") {
		t.Errorf("MAIL after suspension: %q", got)
	}
	p := dialPOP(t, ts.srv.Addr("pop3"), "127.3.0.7")
	p.login(testUser, testPass)
	p.do("QUIT", "+OK")
	if l := ts.srv.suspensions(); len(l) != 1 || !strings.Contains(l[0].Reason, "logins from 3 networks") {
		t.Errorf("suspensions: %+v", l)
	}
	waitOutbound(t, "the postmaster's notice", func() bool { return len(ts.messages(t, testUser)) == 1 })
	if m := ts.messages(t, testUser)[0]; !strings.Contains(m, "Subject: Sending suspended for "+testUser) || !strings.Contains(m, "agua user unsuspend "+testUser) {
		t.Errorf("notice:\n%s", m)
	}
}

// Recipients that the destination refuses for good (550 5.1.1: bounces,
// with DSNs to the sender) count in the account's bounce ratio; over the
// suspend ratio the account's sending is suspended. Before: bounces had
// no effect on the sender.
func TestBounceRatioSuspends(t *testing.T) {
	dns := dnstest.Start(t, labDNS)
	port := freePort(t, labPeer)
	dns.Add(t, "remote.test. 300 IN MX 10 mx.remote.test.", "mx.remote.test. 300 IN A "+labPeer)
	startPeer(t, port)
	sender, _ := startSender(t, dns, port, func(c *config.Config) {
		c.Outbound.Limits.BounceMinSample = 4
		c.Outbound.Limits.BounceRatio = 0.4
		c.Outbound.Limits.SuspendBounceRatio = 0.6
	})
	rcpts := []string{"bob@remote.test", "nobody1@remote.test", "nobody2@remote.test", "nobody3@remote.test"}
	if got := submit(t, sender, rcpts, "From: alice@example.test\r\nSubject: list\r\n\r\nhello\r\n"); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("submission: %q", got)
	}
	waitOutbound(t, "the suspension for 3 bounces of 4", func() bool { return sender.srv.limits.IsSuspended(testUser) })
	if l := sender.srv.suspensions(); len(l) != 1 || !strings.Contains(l[0].Reason, "bounce ratio 75%") {
		t.Errorf("suspensions: %+v", l)
	}
	tok := adminToken(t, sender)
	_, text := httpGet(t, sender, "GET", "/metrics", tok, "")
	if v := metric(t, text, "agua_outbound_deliveries_total", `domain="remote.test"`, `result="delivered"`); v != 1 {
		t.Errorf("delivered to remote.test: %v", v)
	}
	if v := metric(t, text, "agua_outbound_deliveries_total", `domain="remote.test"`, `result="bounced"`); v != 3 {
		t.Errorf("bounced at remote.test: %v", v)
	}
	if v := metric(t, text, "agua_outbound_delivery_seconds_count"); v != 1 {
		t.Errorf("delivery latency samples: %v", v)
	}
	if v := metric(t, text, "agua_accounts_suspended"); v != 1 {
		t.Errorf("suspended gauge: %v", v)
	}
}

func adminToken(t *testing.T, ts *testServer) string {
	t.Helper()
	b, err := os.ReadFile(AdminTokenFile(ts.cfg.DataDir))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func netipAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
