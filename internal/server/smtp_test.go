package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/netip"
	"net/smtp"
	"strings"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/config"
)

func TestDeliveryHeaders(t *testing.T) {
	ts := startServer(t, nil)
	c := dial(t, ts.srv.Addr("smtp"))
	c.expect("220 ")
	c.cmd("EHLO client.example", "250")
	got := c.deliver("sender@elsewhere.example", []string{testUser}, "Subject: hi\r\n\r\nbody line\r\n")
	if !strings.HasPrefix(got, "250 2.0.0") {
		t.Fatalf("data reply %q", got)
	}
	msgs := ts.messages(t, testUser)
	if len(msgs) != 1 {
		t.Fatalf("want 1 message, got %d", len(msgs))
	}
	m := msgs[0]
	for _, want := range []string{"Return-Path: <sender@elsewhere.example>\r\n", "Delivered-To: alice@example.test\r\n", "Received: from client.example ([127.0.0.1])", "with ESMTP id", "Subject: hi\r\n\r\nbody line\r\n"} {
		if !strings.Contains(m, want) {
			t.Errorf("message lacks %q:\n%s", want, m)
		}
	}
	if !strings.HasPrefix(m, "Return-Path:") {
		t.Errorf("Return-Path must come first:\n%s", m)
	}
}

// Go's net/smtp is a real client: STARTTLS, AUTH PLAIN, delivery.
func TestSubmissionStartTLSAuth(t *testing.T) {
	ts := startServer(t, func(c *config.Config) { c.SMTP.AllowInsecureAuth = false })
	c, err := smtp.Dial(ts.srv.Addr("submission"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ok, _ := c.Extension("AUTH"); ok {
		t.Fatal("AUTH offered before TLS")
	}
	if err := c.StartTLS(&tls.Config{InsecureSkipVerify: true}); err != nil {
		t.Fatal(err)
	}
	if ok, mechs := c.Extension("AUTH"); !ok || mechs != "PLAIN LOGIN" {
		t.Fatalf("AUTH after TLS: %v %q", ok, mechs)
	}
	if err := c.Auth(smtp.PlainAuth("", testUser, testPass, "127.0.0.1")); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail(testUser); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt(testUser); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(w, "Subject: via submission\r\n\r\nhi\r\n")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	c.Quit()
	msgs := ts.messages(t, testUser)
	if len(msgs) != 1 || !strings.Contains(msgs[0], "SMTPSA id") {
		t.Fatalf("want 1 message received with ESMTPSA, got %q", msgs)
	}
}

func TestAuthRefusedBeforeTLS(t *testing.T) {
	ts := startServer(t, func(c *config.Config) { c.SMTP.AllowInsecureAuth = false })
	c := dial(t, ts.srv.Addr("submission"))
	c.expect("220 ")
	ehlo := c.cmd("EHLO client.example", "250")
	if strings.Contains(ehlo, "AUTH") {
		t.Fatalf("AUTH offered without TLS: %q", ehlo)
	}
	c.cmd("AUTH PLAIN "+plainAuth(testUser, testPass), "530 5.7.0")
	c.cmd("MAIL FROM:<"+testUser+">", "530 5.7.0")
	c.startTLS()
	c.cmd("EHLO client.example", "250")
	c.cmd("AUTH PLAIN "+plainAuth(testUser, testPass), "235 2.7.0")
}

func TestImplicitTLS(t *testing.T) {
	ts := startServer(t, nil)
	conn, err := tls.Dial("tcp", ts.srv.Addr("submissions"), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	c, err := smtp.NewClient(conn, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Error("STARTTLS offered inside TLS")
	}
	if err := c.Auth(smtp.PlainAuth("", testUser, testPass, "127.0.0.1")); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail(testUser); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt(testUser); err != nil {
		t.Fatal(err)
	}
	w, _ := c.Data()
	fmt.Fprint(w, "Subject: tls\r\n\r\nhi\r\n")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(ts.messages(t, testUser)); n != 1 {
		t.Fatalf("want 1 message, got %d", n)
	}
}

// SMTP smuggling: "\n.\n" or "\r.\r" must never end the data; the whole
// message is refused and the smuggled commands are not executed.
func TestSmuggling(t *testing.T) {
	ts := startServer(t, nil)
	for _, tc := range []struct{ name, body string }{
		{"bare LF dot", "Subject: a\r\n\r\nx\n.\nMAIL FROM:<evil@x.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\n"},
		{"bare CR dot", "Subject: a\r\n\r\nx\r.\rMAIL FROM:<evil@x.example>\r\n"},
		{"LF then CRLF dot", "Subject: a\r\n\r\nx\n.\r\n"},
		{"bare LF in header", "Subject: a\nX: b\r\n\r\nbody\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, ts.srv.Addr("smtp"))
			c.expect("220 ")
			c.cmd("EHLO client.example", "250")
			c.cmd("MAIL FROM:<a@elsewhere.example>", "250")
			c.cmd("RCPT TO:<"+testUser+">", "250")
			c.cmd("DATA", "354")
			c.raw(tc.body)
			c.raw(".\r\n")
			c.expect("554 5.6.0")
			// The session is still in sync: the next command is answered.
			c.cmd("NOOP", "250")
		})
	}
	if n := len(ts.messages(t, testUser)); n != 0 {
		t.Fatalf("smuggling attempts delivered %d message(s)", n)
	}
}

func TestLimits(t *testing.T) {
	ts := startServer(t, func(c *config.Config) {
		c.SMTP.MaxMessageSize = 2048
		c.SMTP.MaxRecipients = 3
		c.SMTP.MaxCommandLength = 512
		c.SMTP.MaxLineLength = 1000
	})
	addr := ts.srv.Addr("smtp")
	t.Run("message size", func(t *testing.T) {
		c := dial(t, addr)
		c.expect("220 ")
		c.cmd("EHLO client.example", "250 | SIZE 2048")
		c.cmd("MAIL FROM:<a@elsewhere.example> SIZE=4096", "552 5.3.4")
		got := c.deliver("a@elsewhere.example", []string{testUser}, "Subject: big\r\n\r\n"+strings.Repeat("0123456789abcdef\r\n", 200))
		if !strings.HasPrefix(got, "552 5.3.4") {
			t.Fatalf("oversize message: %q", got)
		}
		c.cmd("NOOP", "250")
	})
	t.Run("recipients", func(t *testing.T) {
		c := dial(t, addr)
		c.expect("220 ")
		c.cmd("EHLO client.example", "250")
		c.cmd("MAIL FROM:<a@elsewhere.example>", "250")
		if err := ts.dir.AddAlias(context.Background(), "r1@example.test", testUser); err != nil {
			t.Fatal(err)
		}
		ts.dir.AddAlias(context.Background(), "r2@example.test", testUser)
		ts.dir.AddAlias(context.Background(), "r3@example.test", testUser)
		c.cmd("RCPT TO:<r1@example.test>", "250")
		c.cmd("RCPT TO:<r2@example.test>", "250")
		c.cmd("RCPT TO:<r3@example.test>", "250")
		c.cmd("RCPT TO:<alice@example.test>", "452 4.5.3")
	})
	t.Run("command line", func(t *testing.T) {
		c := dial(t, addr)
		c.expect("220 ")
		c.cmd("EHLO "+strings.Repeat("x", 600), "500 5.5.2")
		c.cmd("EHLO client.example", "250")
	})
	t.Run("data line", func(t *testing.T) {
		c := dial(t, addr)
		c.expect("220 ")
		c.cmd("EHLO client.example", "250")
		got := c.deliver("a@elsewhere.example", []string{testUser}, "Subject: long\r\n\r\n"+strings.Repeat("y", 1200)+"\r\n")
		if !strings.HasPrefix(got, "554 5.6.0") {
			t.Fatalf("overlong data line: %q", got)
		}
	})
	if n := len(ts.messages(t, testUser)); n != 0 {
		t.Fatalf("refused messages were delivered: %d", n)
	}
}

func TestTimeouts(t *testing.T) {
	ts := startServer(t, func(c *config.Config) {
		c.SMTP.CommandTimeout = 300 * time.Millisecond
		c.SMTP.DataTimeout = 300 * time.Millisecond
	})
	t.Run("command", func(t *testing.T) {
		c := dial(t, ts.srv.Addr("smtp"))
		c.expect("220 ")
		c.expect("421 4.4.2") // said nothing: the server gives up
		c.expectClosed()
	})
	t.Run("data", func(t *testing.T) {
		c := dial(t, ts.srv.Addr("smtp"))
		c.expect("220 ")
		c.cmd("EHLO client.example", "250")
		c.cmd("MAIL FROM:<a@elsewhere.example>", "250")
		c.cmd("RCPT TO:<"+testUser+">", "250")
		c.cmd("DATA", "354")
		c.raw("Subject: half a message\r\n")
		c.expect("421 4.4.2")
		c.expectClosed()
	})
	ts2 := startServer(t, func(c *config.Config) {
		c.SMTP.SessionTimeout = 400 * time.Millisecond
	})
	t.Run("session", func(t *testing.T) {
		c := dial(t, ts2.srv.Addr("smtp"))
		c.expect("220 ")
		// A client that keeps talking still meets the session limit.
		for i := 0; ; i++ {
			c.send("NOOP")
			lines, err := c.reply()
			if err != nil {
				t.Fatalf("connection ended without 421: %v", err)
			}
			if strings.HasPrefix(lines[0], "421 4.4.2") {
				break
			}
			if i > 1000 {
				t.Fatal("session limit never applied")
			}
			time.Sleep(20 * time.Millisecond)
		}
		c.expectClosed()
	})
	if n := len(ts.messages(t, testUser)); n != 0 {
		t.Fatalf("timed-out message delivered")
	}
}

func TestQuota(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	if err := ts.dir.SetQuota(ctx, testUser, 3000); err != nil {
		t.Fatal(err)
	}
	c := dial(t, ts.srv.Addr("smtp"))
	c.expect("220 ")
	c.cmd("EHLO client.example", "250")
	// Larger than the whole quota: permanent.
	got := c.deliver("a@elsewhere.example", []string{testUser}, "Subject: big\r\n\r\n"+strings.Repeat("z", 4000)+"\r\n")
	if !strings.HasPrefix(got, "552 5.2.2") {
		t.Fatalf("message over quota: %q", got)
	}
	got = c.deliver("a@elsewhere.example", []string{testUser}, "Subject: fits\r\n\r\n"+strings.Repeat("z", 1500)+"\r\n")
	if !strings.HasPrefix(got, "250") {
		t.Fatalf("message within quota: %q", got)
	}
	// Fits the quota but not what is left: temporary.
	got = c.deliver("a@elsewhere.example", []string{testUser}, "Subject: again\r\n\r\n"+strings.Repeat("z", 1500)+"\r\n")
	if !strings.HasPrefix(got, "452 4.2.2") {
		t.Fatalf("message over remaining quota: %q", got)
	}
	if n := len(ts.messages(t, testUser)); n != 1 {
		t.Fatalf("want exactly the one message that fit, got %d", n)
	}
	// Multi-recipient all or nothing: bob has room, alice has not.
	if err := ts.dir.AddUser(ctx, "bob@example.test", "bob password", 0); err != nil {
		t.Fatal(err)
	}
	if err := ts.dir.SetQuota(ctx, testUser, 1000); err != nil {
		t.Fatal(err)
	}
	c.cmd("MAIL FROM:<a@elsewhere.example>", "250")
	c.cmd("RCPT TO:<bob@example.test>", "250")
	c.cmd("RCPT TO:<"+testUser+">", "452 4.2.2") // already full: refused at RCPT
	if err := ts.dir.SetQuota(ctx, testUser, 3000); err != nil {
		t.Fatal(err)
	}
	c.cmd("RCPT TO:<"+testUser+">", "250")
	c.cmd("DATA", "354")
	c.raw("Subject: both\r\n\r\n" + strings.Repeat("q", 1500) + "\r\n.\r\n")
	c.expect("452 4.2.2")
	if n := len(ts.messages(t, "bob@example.test")); n != 0 {
		t.Fatalf("half-delivered: bob got %d", n)
	}
}

// Changes made through another handle on the database (the CLI) apply to
// the running server without restart.
func TestDirectoryChangesLive(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	c := dial(t, ts.srv.Addr("smtp"))
	c.expect("220 ")
	c.cmd("EHLO client.example", "250")
	c.cmd("MAIL FROM:<a@elsewhere.example>", "250")
	c.cmd("RCPT TO:<carol@new.example>", "550 5.7.1")
	if err := ts.dir.AddDomain(ctx, "new.example"); err != nil {
		t.Fatal(err)
	}
	c.cmd("RCPT TO:<carol@new.example>", "550 5.1.1")
	if err := ts.dir.AddUser(ctx, "carol@new.example", "carol password", 0); err != nil {
		t.Fatal(err)
	}
	c.cmd("RCPT TO:<carol@new.example>", "250")
	if err := ts.dir.AddAlias(ctx, "@new.example", "carol@new.example"); err != nil {
		t.Fatal(err)
	}
	c.cmd("RCPT TO:<anything@new.example>", "250")
	c.cmd("DATA", "354")
	c.raw("Subject: new domain\r\n\r\nhi\r\n.\r\n")
	c.expect("250 2.0.0")
	// One message, fanned in to carol's single mailbox.
	if n := len(ts.messages(t, "carol@new.example")); n != 1 {
		t.Fatalf("carol has %d messages, want 1", n)
	}
}

func TestPregreet(t *testing.T) {
	ts := startServer(t, func(c *config.Config) { c.SMTP.BannerDelay = 300 * time.Millisecond })
	addr := ts.srv.Addr("smtp")
	impatient := dialFrom(t, addr, "127.0.0.66")
	impatient.send("EHLO too.early")
	impatient.expect("554 5.5.1")
	impatient.expectClosed()
	// The shield bans pregreet talkers at the first offence (default).
	again := dialFrom(t, addr, "127.0.0.66")
	again.expect("554 5.7.1")
	patient := dialFrom(t, addr, "127.0.0.67")
	patient.expect("220 ")
	patient.cmd("EHLO patient.example", "250")
}

// Brute force on submission gets the address banned; the real user, from
// another address, still logs in.
func TestBruteForceBan(t *testing.T) {
	ts := startServer(t, func(c *config.Config) {
		c.Shield.Thresholds.SetCount("auth_failure", 3)
	})
	addr := ts.srv.Addr("submission")
	attacker := dialFrom(t, addr, "127.0.0.77")
	attacker.expect("220 ")
	attacker.cmd("EHLO attacker.example", "250")
	attacker.cmd("AUTH PLAIN "+plainAuth(testUser, "guess1"), "535 5.7.8")
	attacker.cmd("AUTH PLAIN "+plainAuth(testUser, "guess2"), "535 5.7.8")
	attacker.send("AUTH PLAIN " + plainAuth(testUser, "guess3"))
	attacker.expect("421 4.7.0") // the third failure crosses the threshold
	attacker.expectClosed()
	next := dialFrom(t, addr, "127.0.0.77")
	next.expect("554 5.7.1")
	next.expectClosed()

	user := dialFrom(t, addr, "127.0.0.78")
	user.expect("220 ")
	user.cmd("EHLO laptop.example", "250")
	user.cmd("AUTH PLAIN "+plainAuth(testUser, testPass), "235 2.7.0")
	bans := ts.srv.Shield().Bans()
	if len(bans) != 1 || bans[0].Prefix.String() != "127.0.0.77/32" || bans[0].Reason != "auth_failure" {
		t.Fatalf("bans: %+v", bans)
	}
}

// Harvesting: many unknown recipients ban the address.
func TestHarvestBan(t *testing.T) {
	ts := startServer(t, func(c *config.Config) {
		c.Shield.Thresholds.SetCount("unknown_recipient", 5)
	})
	c := dialFrom(t, ts.srv.Addr("smtp"), "127.0.0.88")
	c.expect("220 ")
	c.cmd("EHLO harvester.example", "250")
	c.cmd("MAIL FROM:<h@elsewhere.example>", "250")
	for i := 0; i < 4; i++ {
		c.cmd(fmt.Sprintf("RCPT TO:<guess%d@example.test>", i), "550 5.1.1")
	}
	c.send("RCPT TO:<guess4@example.test>")
	c.expect("421 4.7.0")
	c.expectClosed()
}

// A rule added to shield.rules closes the open session of that address and
// refuses new ones, while another client's session goes on.
func TestRuleFileLive(t *testing.T) {
	ts := startServer(t, nil)
	addr := ts.srv.Addr("smtp")
	victim := dialFrom(t, addr, "127.0.0.99")
	victim.expect("220 ")
	legit := dialFrom(t, addr, "127.0.0.98")
	legit.expect("220 ")
	legit.cmd("EHLO legit.example", "250")
	legit.cmd("MAIL FROM:<l@elsewhere.example>", "250")
	rules := ts.cfg.Resolve("shield.rules")
	appendFile(t, rules, "deny 127.0.0.99 drop\n")
	victim.expectClosed()
	// The rule applies within a second or so: poll until dropped.
	deadline := time.Now().Add(10 * time.Second)
	for !ts.srv.Shield().Decide(netip.MustParseAddr("127.0.0.99"), "").Denied() {
		if time.Now().After(deadline) {
			t.Fatal("the new rule was not applied")
		}
		time.Sleep(20 * time.Millisecond)
	}
	expectDropped(t, addr, "127.0.0.99")
	legit.cmd("RCPT TO:<"+testUser+">", "250")
	legit.cmd("QUIT", "221")
}
