package server

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/dkim"
	"github.com/agua-mail/agua/internal/resolver/dnstest"
)

const authHost = "mx.agua.test"

// authWorld is a test DNS server holding the sending domains' records and
// a DKIM signer for bank.example: bank.example publishes p=reject and
// sends from 127.0.0.22; shop.example publishes p=quarantine.
type authWorld struct {
	dns    *dnstest.Server
	signer *dkim.Signer
}

func newAuthWorld(t *testing.T) *authWorld {
	t.Helper()
	w := &authWorld{dns: dnstest.Start(t, "127.0.0.1")}
	w.dns.Add(t,
		`bank.example. 300 IN TXT "v=spf1 ip4:127.0.0.22 -all"`,
		`_dmarc.bank.example. 300 IN TXT "v=DMARC1; p=reject"`,
		`shop.example. 300 IN TXT "v=spf1 ip4:127.0.0.22 -all"`,
		`_dmarc.shop.example. 300 IN TXT "v=DMARC1; p=quarantine"`,
	)
	keys := t.TempDir()
	k, err := dkim.Keygen(keys, "bank.example", dkim.Ed25519, "", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var rec strings.Builder
	for _, s := range k.RecordStrings() {
		fmt.Fprintf(&rec, " %q", s)
	}
	w.dns.Add(t, k.Name()+" 300 IN TXT"+rec.String())
	w.signer = dkim.NewSigner(dkim.Options{DataDir: keys})
	return w
}

func (w *authWorld) start(t *testing.T, mutate func(*config.Config)) *testServer {
	return startServer(t, func(c *config.Config) {
		c.Hostname = authHost
		c.DNS.Resolver = []string{w.dns.Addr}
		if mutate != nil {
			mutate(c)
		}
	})
}

func authMsg(from, subject string, extra string) string {
	return fmt.Sprintf("%sFrom: %s\r\nTo: %s\r\nSubject: %s\r\nDate: Sat, 05 Dec 2026 20:00:00 +0000\r\nMessage-ID: <%d@test>\r\n\r\nHello.\r\n",
		extra, from, testUser, subject, time.Now().UnixNano())
}

// send delivers msg from the loopback address src and returns the reply
// to the data.
func authSend(t *testing.T, ts *testServer, src, helo, mailFrom, msg string) string {
	t.Helper()
	c := dialFrom(t, ts.srv.Addr("smtp"), src)
	defer c.conn.Close()
	c.expect("220 ")
	c.cmd("EHLO "+helo, "250")
	return c.deliver(mailFrom, []string{testUser}, msg)
}

// folderMessages reads every message of an IMAP folder of testUser.
func folderMessages(t *testing.T, ts *testServer, folder string) []string {
	t.Helper()
	c := imapLogin(t, ts.srv.Addr("imap"), nil)
	defer c.Logout()
	sel, err := c.Select(folder, nil).Wait()
	if err != nil {
		t.Fatalf("select %s: %v", folder, err)
	}
	if sel.NumMessages == 0 {
		return nil
	}
	all := &imap.FetchItemBodySection{}
	msgs, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: sel.NumMessages}}, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{all}}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range msgs {
		out = append(out, string(m.FindBodySection(all)))
	}
	return out
}

// A legitimate signed message gets dkim=pass spf=pass dmarc=pass, and a
// forged Authentication-Results field in it is gone; a spoofed p=reject
// message is refused with 550 5.7.1 and a reason; a spoofed p=quarantine
// one lands in Junk, read back over IMAP.
func TestInboundAuthEndToEnd(t *testing.T) {
	w := newAuthWorld(t)
	ts := w.start(t, nil)

	legit := authMsg("Alice <alice@bank.example>", "statement",
		"Authentication-Results: "+authHost+"; dkim=fail; dmarc=fail header.from=bank.example\r\n")
	sig, err := w.signer.Sign("alice@bank.example", []byte(legit))
	if err != nil || sig == nil {
		t.Fatalf("sign: %v", err)
	}
	if got := authSend(t, ts, "127.0.0.22", "mx.bank.example", "alice@bank.example", string(sig)+legit); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("legitimate message: %q", got)
	}

	spoof := authMsg("Bank Security <security@bank.example>", "verify your account", "")
	got := authSend(t, ts, "127.0.0.23", "evil.example", "x@evil.example", spoof)
	if !strings.HasPrefix(got, "550 5.7.1 ") || !strings.Contains(got, "bank.example") || !strings.Contains(got, "DMARC") {
		t.Fatalf("spoofed p=reject message: %q, want 550 5.7.1 naming the domain and DMARC", got)
	}
	t.Logf("spoofed p=reject: %s", got)

	if got := authSend(t, ts, "127.0.0.23", "evil.example", "x@evil.example", authMsg("deals@shop.example", "cheap", "")); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("quarantined message: %q", got)
	}

	inbox := folderMessages(t, ts, "INBOX")
	if len(inbox) != 1 {
		t.Fatalf("INBOX holds %d messages, want the legitimate one only", len(inbox))
	}
	hdr, _, _ := strings.Cut(inbox[0], "\r\n\r\n")
	ar := "Authentication-Results: " + authHost + ";"
	if strings.Count(hdr, ar) != 1 {
		t.Fatalf("want exactly one Authentication-Results of ours (the forged one removed):\n%s", hdr)
	}
	for _, want := range []string{"spf=pass smtp.mailfrom=alice@bank.example", "dkim=pass header.d=bank.example", "dmarc=pass", "header.from=bank.example"} {
		if !strings.Contains(hdr, want) {
			t.Fatalf("legitimate message lacks %q:\n%s", want, hdr)
		}
	}
	if strings.Contains(hdr, "dkim=fail") {
		t.Fatalf("forged result kept:\n%s", hdr)
	}

	junk := folderMessages(t, ts, "Junk")
	if len(junk) != 1 || !strings.Contains(junk[0], "Subject: cheap") || !strings.Contains(junk[0], "dmarc=fail (p=quarantine dis=quarantine) header.from=shop.example") {
		t.Fatalf("Junk holds %d messages: %q", len(junk), junk)
	}
}

// The shield counts DMARC failures per network: past network_dmarc_fail,
// the network is banned at connect, like any other behaviour; with the
// threshold in dry-run it is only logged.
func TestDMARCFailBansNetwork(t *testing.T) {
	for _, dry := range []bool{false, true} {
		t.Run(fmt.Sprintf("dry_run=%v", dry), func(t *testing.T) {
			w := newAuthWorld(t)
			ts := w.start(t, func(c *config.Config) {
				c.Shield.Thresholds.SetCount("network_dmarc_fail", 3)
				c.Shield.Thresholds.SetDryRun("network_dmarc_fail", dry)
			})
			// Three addresses of one /24, one spoofed message each.
			for i := 1; i <= 3; i++ {
				got := authSend(t, ts, fmt.Sprintf("127.0.9.%d", i), "evil.example", "x@evil.example", authMsg("security@bank.example", "s", ""))
				if !strings.HasPrefix(got, "550 5.7.1") {
					t.Fatalf("spoof %d: %q", i, got)
				}
			}
			c := dialFrom(t, ts.srv.Addr("smtp"), "127.0.9.77")
			defer c.conn.Close()
			lines, err := c.reply()
			greeting := strings.Join(lines, "\n")
			if dry {
				if err != nil || !strings.HasPrefix(greeting, "220 ") {
					t.Fatalf("dry run: the network was banned: %q %v", greeting, err)
				}
				waitForCond(t, "a would-ban log line", func() bool {
					return strings.Contains(ts.logs.String(), "shield would ban") && strings.Contains(ts.logs.String(), "network_dmarc_fail")
				})
				return
			}
			if !strings.HasPrefix(greeting, "554 ") || !strings.Contains(greeting, "DMARC") {
				t.Fatalf("a fourth address of the network: %q %v, want 554 with the DMARC reason", greeting, err)
			}
			// Another network is served.
			c2 := dialFrom(t, ts.srv.Addr("smtp"), "127.0.10.1")
			defer c2.conn.Close()
			c2.expect("220 ")
		})
	}
}

// The checks skip allowlisted relays (127.0.0.1 by default) and
// authenticated submission: their mail is this site's own.
func TestInboundAuthSkipsTrusted(t *testing.T) {
	w := newAuthWorld(t)
	ts := w.start(t, nil)
	if got := authSend(t, ts, "127.0.0.1", "relay.local", "x@evil.example", authMsg("security@bank.example", "relayed", "")); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("allowlisted relay: %q", got)
	}
	msgs := ts.messages(t, testUser)
	if len(msgs) != 1 || strings.Contains(msgs[0], "Authentication-Results:") {
		t.Fatalf("allowlisted relay's message: %q", msgs)
	}
	// Authenticated submission from a non-allowlisted address.
	c := dialFrom(t, ts.srv.Addr("submission"), "127.0.0.23")
	defer c.conn.Close()
	c.expect("220 ")
	c.cmd("EHLO client.example", "250")
	c.cmd("AUTH PLAIN "+plainAuth(testUser, testPass), "235")
	if got := c.deliver(testUser, []string{testUser}, authMsg(testUser, "submitted", "")); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("submission: %q", got)
	}
	msgs = ts.messages(t, testUser)
	if len(msgs) != 2 || strings.Contains(msgs[0]+msgs[1], "Authentication-Results:") {
		t.Fatalf("submitted message checked: %q", msgs)
	}
}

// A DNS server that does not answer makes DMARC temperror: the message is
// accepted (temperror = accept) or deferred with 451 (temperror = defer),
// never refused with a 5xx.
func TestInboundAuthDNSTimeout(t *testing.T) {
	for _, mode := range []string{"accept", "defer"} {
		t.Run(mode, func(t *testing.T) {
			w := newAuthWorld(t)
			w.dns.Silent("_dmarc.bank.example", 16 /* TXT */, true)
			ts := w.start(t, func(c *config.Config) {
				c.Auth.TempError = mode
				c.Auth.Timeout = time.Second
				c.DNS.Timeout = 200 * time.Millisecond
				c.DNS.Attempts = 1
			})
			got := authSend(t, ts, "127.0.0.23", "evil.example", "x@evil.example", authMsg("security@bank.example", "s", ""))
			want := map[string]string{"accept": "250 ", "defer": "451 4.7.0"}[mode]
			if !strings.HasPrefix(got, want) {
				t.Fatalf("DMARC lookup timing out, temperror=%s: %q, want %s", mode, got, want)
			}
			if mode == "accept" {
				msgs := ts.messages(t, testUser)
				if len(msgs) != 1 || !strings.Contains(msgs[0], "dmarc=temperror") {
					t.Fatalf("delivered: %q", msgs)
				}
			}
		})
	}
}

// auth.domain_policy: the same spoofed p=reject message is refused for a
// recipient domain under the global policy and delivered to the inbox of
// one whose policy turns DMARC rejection and quarantine off; one
// transaction to both gets 452 4.5.3 for the second recipient.
func TestAuthDomainPolicy(t *testing.T) {
	w := newAuthWorld(t)
	ts := w.start(t, func(c *config.Config) {
		c.Auth.DomainPolicy = []string{"lenient.test: dmarc_reject=off, dmarc_quarantine=off"}
	})
	ctx := context.Background()
	if err := ts.dir.AddDomain(ctx, "lenient.test"); err != nil {
		t.Fatal(err)
	}
	const bob = "bob@lenient.test"
	if err := ts.dir.AddUser(ctx, bob, testPass, 0); err != nil {
		t.Fatal(err)
	}
	spoof := func(to string) string {
		return strings.Replace(authMsg("Bank Security <security@bank.example>", "verify", ""), "To: "+testUser, "To: "+to, 1)
	}
	send := func(rcpts ...string) (*client, []string) {
		c := dialFrom(t, ts.srv.Addr("smtp"), "127.0.22.1")
		c.expect("220 ")
		c.cmd("EHLO evil.example", "250")
		c.cmd("MAIL FROM:<x@evil.example>", "250")
		var got []string
		for _, r := range rcpts {
			c.send("RCPT TO:<" + r + ">")
			lines, err := c.reply()
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, lines[len(lines)-1])
		}
		return c, got
	}
	finish := func(c *client, body string) string {
		c.cmd("DATA", "354")
		c.raw(body + ".\r\n")
		lines, err := c.reply()
		if err != nil {
			t.Fatal(err)
		}
		return lines[len(lines)-1]
	}

	c, _ := send(testUser)
	if got := finish(c, spoof(testUser)); !strings.HasPrefix(got, "550 5.7.1 ") {
		t.Fatalf("global policy: %q, want 550 5.7.1", got)
	}
	c, _ = send(bob)
	if got := finish(c, spoof(bob)); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("lenient.test policy: %q, want delivered", got)
	}
	msgs := ts.messages(t, bob)
	if len(msgs) != 1 || !strings.Contains(msgs[0], "dmarc=fail") {
		t.Fatalf("bob's inbox: %q", msgs)
	}
	c, got := send(testUser, bob)
	if !strings.HasPrefix(got[0], "250") || got[1] != "452 4.5.3 Recipient in a domain with another sender authentication policy; send to it in a separate transaction" {
		t.Fatalf("mixed policies in one transaction: %q", got)
	}
	if got := finish(c, spoof(testUser)); !strings.HasPrefix(got, "550 5.7.1 ") {
		t.Fatalf("mixed transaction, first recipient's policy: %q", got)
	}
}
