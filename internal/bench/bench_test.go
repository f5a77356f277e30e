package bench_test

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/bench"
	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/server"
)

// startAgua runs a real agua in-process on free loopback ports.
func startAgua(t *testing.T, mutate func(*config.Config)) *server.Server {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Accounts.Demo = false
	cfg.SMTP.Listen = []string{"127.0.0.1:0"}
	cfg.SMTP.SubmissionListen = []string{"127.0.0.1:0"}
	cfg.SMTP.SubmissionsListen = []string{"127.0.0.1:0"}
	cfg.POP3.Listen = nil
	cfg.POP3.TLSListen = nil
	cfg.IMAP.Listen = nil
	cfg.IMAP.TLSListen = nil
	cfg.Admin.Listen = ""
	cfg.SMTP.AuthDelay = 0
	if mutate != nil {
		mutate(&cfg)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := server.New(cfg, log, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("server did not stop")
		}
	})
	d, err := server.OpenDirectory(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.AddDomain(context.Background(), "example.test"); err != nil {
		t.Fatal(err)
	}
	if err := d.AddUser(context.Background(), "demo@example.test", "bench password", 0); err != nil {
		t.Fatal(err)
	}
	return srv
}

// A short run of every scenario against a real agua: the legitimate
// clients are all served and each attack gets what the shield gives it.
// Asserts behaviour, never timings.
func TestBenchScenarios(t *testing.T) {
	srv := startAgua(t, func(c *config.Config) {
		c.Shield.Thresholds.SetCount("auth_failure", 3)
		c.Shield.Thresholds.SetCount("unknown_recipient", 5)
		c.SMTP.BannerDelay = 200 * time.Millisecond
	})
	rep, err := bench.Run(context.Background(), bench.Config{
		Target:       srv.Addr("smtp"),
		Duration:     3 * time.Second,
		Legit:        3,
		Rcpt:         "demo@example.test",
		Attacks:      []string{"connect", "banner", "slowloris", "pregreet", "harvest", "http", "junk"},
		AttackSrc:    netip.MustParsePrefix("127.70.0.0/24"),
		AttackConns:  2,
		AttackRate:   40,
		TLSTarget:    srv.Addr("submissions"),
		HoldTimeout:  time.Second,
		MsgSize:      1024,
		PerSession:   2,
		From:         "bench@bench.example",
		AttackTarget: srv.Addr("smtp"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Legit.Sessions == 0 || rep.Legit.OK != rep.Legit.Sessions || rep.Legit.Messages != 2*rep.Legit.OK {
		t.Errorf("legitimate clients: %+v", rep.Legit)
	}
	outcomes := map[string]map[string]int64{}
	for _, a := range rep.Attacks {
		if a.Attempts == 0 {
			t.Errorf("%s: no attempts", a.Scenario)
		}
		outcomes[a.Scenario] = a.Outcomes
	}
	expect := map[string]string{
		"http":      "answered_and_closed", // 554 then close
		"pregreet":  "refused",             // talked first: 554, then banned
		"harvest":   "refused",             // banned after 5 unknown recipients: later attempts refused at accept
		"slowloris": "closed_by_server",    // the banner then the command timeout / limits
		"junk":      "refused",             // protocol errors ban the address
	}
	for sc, want := range expect {
		if outcomes[sc][want] == 0 {
			t.Errorf("%s: want some %q, got %v", sc, want, outcomes[sc])
		}
	}
	if outcomes["harvest"]["recipient_accepted"] != 0 {
		t.Errorf("harvest found recipients: %v", outcomes["harvest"])
	}
}

// Brute force against submission: failures, then the ban.
func TestBenchBrute(t *testing.T) {
	srv := startAgua(t, func(c *config.Config) { c.Shield.Thresholds.SetCount("auth_failure", 3) })
	rep, err := bench.Run(context.Background(), bench.Config{
		Target:      srv.Addr("submission"),
		Duration:    2 * time.Second,
		Attacks:     []string{"brute"},
		User:        "demo@example.test",
		AttackSrc:   netip.MustParsePrefix("127.71.0.7/32"),
		AttackConns: 1,
		AttackRate:  20,
	})
	if err != nil {
		t.Fatal(err)
	}
	o := rep.Attacks[0].Outcomes
	if o["auth_succeeded"] != 0 || o["banned_mid_session"]+o["refused"] == 0 {
		t.Fatalf("brute outcomes: %v", o)
	}
}

// TLS handshake flood on the implicit-TLS port: handshakes complete until
// the per-address rate limit refuses new connections.
func TestBenchTLSFlood(t *testing.T) {
	srv := startAgua(t, nil)
	rep, err := bench.Run(context.Background(), bench.Config{
		Target:      srv.Addr("smtp"),
		Duration:    2 * time.Second,
		Attacks:     []string{"tls"},
		TLSTarget:   srv.Addr("submissions"),
		AttackSrc:   netip.MustParsePrefix("127.72.0.9/32"),
		AttackConns: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	o := rep.Attacks[0].Outcomes
	if o["handshake_done"] == 0 || o["handshake_refused"] == 0 {
		t.Fatalf("tls outcomes: %v", o)
	}
}

// Legitimate POP3 and IMAP sessions against a real agua with mail in the
// box: every session logs in and fetches the messages.
func TestBenchMailboxProtocols(t *testing.T) {
	srv := startAgua(t, func(c *config.Config) {
		c.POP3.Listen = []string{"127.0.0.1:0"}
		c.IMAP.Listen = []string{"127.0.0.1:0"}
	})
	// Fill the mailbox through SMTP, as a sender would.
	if _, err := bench.Run(context.Background(), bench.Config{
		Target: srv.Addr("smtp"), Duration: 5 * time.Second, Legit: 1, Rcpt: "demo@example.test", MaxSessions: 3,
	}); err != nil {
		t.Fatal(err)
	}
	// One client: POP3 locks the maildrop, a second one would rightly get
	// -ERR [IN-USE] (RFC 1939 8).
	for _, proto := range []string{"pop3", "imap"} {
		rep, err := bench.Run(context.Background(), bench.Config{
			Target: srv.Addr(proto), Proto: proto, Duration: 5 * time.Second, Legit: 1, MaxSessions: 10,
			User: "demo@example.test", Pass: "bench password",
		})
		if err != nil {
			t.Fatal(err)
		}
		l := rep.Legit
		if l.Sessions == 0 || l.OK != l.Sessions || l.Messages != 3*l.OK {
			t.Errorf("%s: %+v", proto, l)
		}
	}
}

// "%d" in -user and -rcpt gives each legitimate client a mailbox of its
// own, so that concurrent POP3 clients do not meet the maildrop lock.
func TestBenchPerClientMailbox(t *testing.T) {
	var cfg config.Config
	srv := startAgua(t, func(c *config.Config) { c.POP3.Listen = []string{"127.0.0.1:0"}; cfg = *c })
	d, err := server.OpenDirectory(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"user0@example.test", "user1@example.test"} {
		if err := d.AddUser(context.Background(), u, "bench password", 0); err != nil {
			t.Fatal(err)
		}
	}
	d.Close()
	if _, err := bench.Run(context.Background(), bench.Config{
		Target: srv.Addr("smtp"), Duration: 5 * time.Second, Legit: 2, Rcpt: "user%d@example.test", MaxSessions: 2,
	}); err != nil {
		t.Fatal(err)
	}
	rep, err := bench.Run(context.Background(), bench.Config{
		Target: srv.Addr("pop3"), Proto: "pop3", Duration: 5 * time.Second, Legit: 2, MaxSessions: 5,
		User: "user%d@example.test", Pass: "bench password",
	})
	if err != nil {
		t.Fatal(err)
	}
	if l := rep.Legit; l.Sessions != 10 || l.OK != l.Sessions || l.Messages != 2*l.OK {
		t.Errorf("pop3: %+v", l)
	}
}
