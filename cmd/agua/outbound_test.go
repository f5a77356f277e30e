package main

import (
	"encoding/base64"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/resolver/dnstest"
	"github.com/agua-mail/agua/internal/server"
	"github.com/agua-mail/agua/internal/smtptest"
)

// TestQueueListThroughServer: mail submitted for a destination where
// nothing listens waits in the running server's queue, deferred and
// retried, and `agua queue list` shows it through the admin API (the
// server holds the queue folder).
func TestQueueListThroughServer(t *testing.T) {
	const dnsIP, deadIP, clientIP = "127.0.0.96", "127.0.0.97", "127.0.0.98"
	dns := dnstest.Start(t, dnsIP)
	dns.Add(t, "dead.test. 300 IN MX 10 mx.dead.test.", "mx.dead.test. 300 IN A "+deadIP)
	ln, err := net.Listen("tcp", deadIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // nothing listens there from now on

	data := t.TempDir()
	cfg := config.Default()
	cfg.DataDir = data
	cfg.Accounts.Demo = false
	cfg.SMTP.Listen = nil
	cfg.SMTP.SubmissionListen = []string{"127.0.0.1:0"}
	cfg.SMTP.SubmissionsListen = nil
	cfg.SMTP.AuthDelay = 0
	cfg.Admin.Listen = ""
	cfg.POP3.Listen, cfg.POP3.TLSListen = nil, nil
	cfg.IMAP.Listen, cfg.IMAP.TLSListen = nil, nil
	cfg.DNS.Resolver = []string{dns.Addr}
	cfg.Outbound.SMTPPort = port
	cfg.Outbound.RetryMin = 50 * time.Millisecond
	cfg.Outbound.RetryMax = 100 * time.Millisecond
	srv, _ := runServer(t, cfg, nil)
	ctx := t.Context()
	dir, err := server.OpenDirectory(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	if err := dir.AddDomain(ctx, "example.test"); err != nil {
		t.Fatal(err)
	}
	if err := dir.AddUser(ctx, "alice@example.test", "alice's password", 0); err != nil {
		t.Fatal(err)
	}

	c := smtptest.DialFrom(t, srv.Addr("submission"), clientIP)
	c.Expect("220 ")
	c.Cmd("EHLO laptop.example", "250")
	c.Cmd("AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00alice@example.test\x00alice's password")), "235")
	c.Cmd("MAIL FROM:<alice@example.test>", "250")
	c.Cmd("RCPT TO:<carol@dead.test>", "250")
	c.Cmd("DATA", "354")
	c.Raw("From: alice@example.test\r\nSubject: waiting\r\n\r\nstill here\r\n.\r\n")
	c.Expect("250 ")
	c.Cmd("QUIT", "221")

	// Retries come every 50-100ms; wait (bounded) for the second.
	var out string
	for deadline := time.Now().Add(time.Minute); ; {
		out = mustAgua(t, "", "queue", "list", "-data", data)
		if i := strings.Index(out, "carol@dead.test deferred #"); i >= 0 {
			n, _ := strconv.Atoi(strings.Fields(out[i+len("carol@dead.test deferred #"):])[0])
			if n >= 2 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no retried deferred recipient in the queue list:\n%s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(out, "alice@example.test") {
		t.Errorf("queue list lacks the sender:\n%s", out)
	}
	id := strings.Fields(strings.Split(out, "\n")[1])[0]
	if show := mustAgua(t, "", "queue", "show", id, "-data", data); !strings.Contains(show, "connection refused") {
		t.Errorf("queue show %s lacks the last error:\n%s", id, show)
	}
	show := mustAgua(t, "", "queue", "stats", "-data", data)
	if !strings.Contains(show, "messages 1 (0 held), recipients waiting 1 (1 deferred)") || !strings.Contains(show, "dead.test") {
		t.Errorf("queue stats:\n%s", show)
	}
}
