package server

import (
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/resolver/dnstest"
)

// labForwarder is the MX address of the forwarding agua in these tests.
const labForwarder = "127.0.0.97"

// forwardLab is two aguas on the same SMTP port of two loopback
// addresses, each the other's mail exchanger through the test's DNS: the
// forwarder (example.test, user alice, DKIM keys) and the peer
// (remote.test with bob, origin.test with carol).
type forwardLab struct {
	dns         *dnstest.Server
	fwd, peer   *testServer
	fwdMX       string // host:port of the forwarder's MX listener
	peerMX      string
	fwdKeysTest func(msg string) []string
}

func startForwardLab(t *testing.T) *forwardLab {
	t.Helper()
	dns := dnstest.Start(t, labDNS)
	var port int
	for try := 0; ; try++ {
		port = freePort(t, labPeer)
		if ln, err := net.Listen("tcp", net.JoinHostPort(labForwarder, strconv.Itoa(port))); err == nil {
			ln.Close()
			break
		}
		if try > 20 {
			t.Fatal("no port free on both addresses")
		}
	}
	dns.Add(t,
		"remote.test. 300 IN MX 10 mx.remote.test.", "origin.test. 300 IN MX 10 mx.remote.test.",
		"mx.remote.test. 300 IN A "+labPeer,
		"example.test. 300 IN MX 10 mail.example.test.", "mail.example.test. 300 IN A "+labForwarder)
	lab := &forwardLab{dns: dns}
	lab.peer = startServer(t, func(c *config.Config) {
		c.Hostname = "mx.remote.test"
		c.SMTP.Listen = []string{net.JoinHostPort(labPeer, strconv.Itoa(port))}
		c.DNS.Resolver = []string{dns.Addr}
		c.Outbound.SMTPPort = port
		c.Outbound.RetryMin = 100 * time.Millisecond
		c.Outbound.RetryMax = 200 * time.Millisecond
	})
	ctx := t.Context()
	for _, d := range []string{"remote.test", "origin.test"} {
		if err := lab.peer.dir.AddDomain(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range []string{"bob@remote.test", "carol@origin.test"} {
		if err := lab.peer.dir.AddUser(ctx, u, "a password", 0); err != nil {
			t.Fatal(err)
		}
	}
	fwd, dkimKeys := startSender(t, dns, port, func(c *config.Config) {
		c.SMTP.Listen = []string{net.JoinHostPort(labForwarder, strconv.Itoa(port))}
	})
	lab.fwd = fwd
	lab.fwdKeysTest = func(msg string) []string { return verifyDKIM(t, dkimKeys, msg) }
	lab.fwdMX = fwd.srv.Addr("smtp")
	lab.peerMX = lab.peer.srv.Addr("smtp")
	if err := fwd.dir.AddAlias(ctx, "fwd@example.test", "bob@remote.test"); err != nil {
		t.Fatal(err)
	}
	return lab
}

// mx opens an SMTP session with an MX listener from labClient.
func mx(t *testing.T, addr string) *client {
	t.Helper()
	c := dialFrom(t, addr, labClient)
	t.Cleanup(func() { c.conn.Close() })
	c.expect("220 ")
	c.cmd("EHLO client.origin.test", "250")
	return c
}

var srs0 = regexp.MustCompile(`Return-Path: <(SRS0=[a-z2-7]{6}=[a-z2-7]{2}=origin\.test=carol@example\.test)>`)

// TestForwardingWithSRS: issue 12 item 5. Mail to an alias of an external
// address, arriving on the MX port, is forwarded through the queue to the
// external domain's MX (a second agua) with its envelope sender rewritten
// by SRS in the alias's domain; a bounce to that address comes back
// through the MX port, is verified and reversed, and reaches the original
// sender. Forged, tampered and routing-trick addresses are refused.
// Before: the alias could not be created ("forwarding to external
// addresses needs the outbound queue").
func TestForwardingWithSRS(t *testing.T) {
	lab := startForwardLab(t)
	c := mx(t, lab.fwdMX)
	body := "From: Carol <carol@origin.test>\r\nTo: fwd@example.test\r\nSubject: via the alias\r\n\r\nforward me\r\n"
	if got := c.deliver("carol@origin.test", []string{"fwd@example.test"}, body); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("MX delivery to the forwarding alias: %q", got)
	}
	waitOutbound(t, "the forwarded message at bob's", func() bool { return len(lab.peer.messages(t, "bob@remote.test")) == 1 })
	msg := lab.peer.messages(t, "bob@remote.test")[0]
	m := srs0.FindStringSubmatch(msg)
	if m == nil || !strings.Contains(msg, "forward me") {
		t.Fatalf("forwarded message without an SRS0 envelope sender:\n%s", msg)
	}
	srsAddr := m[1]

	t.Run("bounce to the SRS address goes to the original sender", func(t *testing.T) {
		c := mx(t, lab.fwdMX)
		dsn := "From: MAILER-DAEMON@mx.remote.test\r\nSubject: Undelivered Mail\r\n\r\nbob is gone\r\n"
		if got := c.deliver("", []string{srsAddr}, dsn); !strings.HasPrefix(got, "250 ") {
			t.Fatalf("bounce to %s: %q", srsAddr, got)
		}
		waitOutbound(t, "the bounce at carol's", func() bool { return len(lab.peer.messages(t, "carol@origin.test")) == 1 })
		if got := lab.peer.messages(t, "carol@origin.test")[0]; !strings.Contains(got, "Return-Path: <>") || !strings.Contains(got, "bob is gone") {
			t.Fatalf("bounce as delivered:\n%s", got)
		}
	})

	t.Run("forged and routing tricks refused", func(t *testing.T) {
		c := mx(t, lab.fwdMX)
		c.cmd("MAIL FROM:<spammer@evil.test>", "250")
		tampered := strings.Replace(srsAddr, "=carol@", "=mallory@", 1)
		for rcpt, want := range map[string]string{
			"SRS0=aaaaaa=aa=victim.test=anyone@example.test": "550 5.1.1",
			tampered: "550 5.1.1",
			strings.Replace(srsAddr, "=origin.test=", "=victim.test=", 1): "550 5.1.1",
			"bob%remote.test@example.test":                                "550 5.1.1",
			"remote.test!bob@example.test":                                "550 5.1.1",
			"@example.test:bob@remote.test":                               "550 5.7.1",
			"bob@remote.test":                                             "550 5.7.1",
			`"bob@remote.test"@example.test`:                              "5",
			"bob@remote.test@example.test":                                "5",
		} {
			c.cmd("RCPT TO:<"+rcpt+">", want)
		}
		c.cmd("QUIT", "221")
	})

	t.Run("mail from a local domain is DKIM-signed", func(t *testing.T) {
		body := "From: Alice <alice@example.test>\r\nTo: fwd@example.test\r\nSubject: signed\r\n\r\nfrom alice\r\n"
		if got := submit(t, lab.fwd, []string{"fwd@example.test"}, body); !strings.HasPrefix(got, "250 ") {
			t.Fatalf("submission: %q", got)
		}
		waitOutbound(t, "alice's message at bob's", func() bool { return len(lab.peer.messages(t, "bob@remote.test")) == 2 })
		var got string
		for _, m := range lab.peer.messages(t, "bob@remote.test") {
			if strings.Contains(m, "from alice") {
				got = m
			}
		}
		if !strings.Contains(got, "Return-Path: <SRS0=") || !strings.Contains(got, "=example.test=alice@example.test>") {
			t.Fatalf("envelope sender not rewritten:\n%s", got)
		}
		res := lab.fwdKeysTest(got)
		if len(res) != 2 || !strings.Contains(res[0], "pass d=example.test") || !strings.Contains(res[1], "pass d=example.test") {
			t.Fatalf("dkimpy: %q", res)
		}
	})
}

// TestForwardingLoopBounces: an alias forwarding to an alias on another
// server that forwards back loops; every pass adds a Received field, and
// at 30 (RFC 5321 6.3) the receiving server refuses it with 554 5.4.6, so
// the original sender gets a bounce instead of an endless loop.
func TestForwardingLoopBounces(t *testing.T) {
	lab := startForwardLab(t)
	ctx := t.Context()
	// (Both servers have example.test, startServer's domain: the loop
	// runs through loop.test, the forwarder's alone.)
	lab.dns.Add(t, "loop.test. 300 IN MX 10 mail.example.test.")
	for _, err := range []error{
		lab.fwd.dir.AddDomain(ctx, "loop.test"),
		lab.fwd.dir.AddAlias(ctx, "loop@loop.test", "loop@remote.test"),
		lab.peer.dir.AddAlias(ctx, "loop@remote.test", "loop@loop.test"),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	c := mx(t, lab.fwdMX)
	body := "From: carol@origin.test\r\nTo: loop@loop.test\r\nSubject: round and round\r\n\r\nloop\r\n"
	if got := c.deliver("carol@origin.test", []string{"loop@loop.test"}, body); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("first delivery: %q", got)
	}
	waitOutbound(t, "carol's bounce", func() bool { return len(lab.peer.messages(t, "carol@origin.test")) >= 1 })
	dsn := lab.peer.messages(t, "carol@origin.test")[0]
	if !strings.Contains(dsn, "Action: failed") || !strings.Contains(dsn, "5.4.6") {
		t.Fatalf("bounce:\n%s", dsn)
	}
	for _, ts := range []*testServer{lab.fwd, lab.peer} {
		waitOutbound(t, "the queues to empty", func() bool { return ts.srv.out.queue.Stats().Messages == 0 })
	}
}
