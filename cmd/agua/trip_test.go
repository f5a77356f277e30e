package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/queue"
	"github.com/agua-mail/agua/internal/resolver/dnstest"
	"github.com/agua-mail/agua/internal/server"
	"github.com/agua-mail/agua/internal/smtptest"
)

// runServer runs agua serve on cfg in this process until stop is called
// or the test ends, logging to w (nil: discarded; a *syncLog is shown when
// the test failed). The one in-process server starter of these tests.
func runServer(t *testing.T, cfg config.Config, w io.Writer) (*server.Server, func()) {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	if w != nil {
		log = slog.New(slog.NewTextHandler(w, nil))
	}
	srv, err := server.New(cfg, log, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("serve: %v", err)
				}
			case <-time.After(20 * time.Second):
				t.Error("server did not stop")
			}
			if l, ok := w.(*syncLog); ok && t.Failed() {
				t.Logf("server log:\n%s", l)
			}
		})
	}
	t.Cleanup(stop)
	return srv, stop
}

// TestCompromisedAccount is issue 12's trip-switch "done when": one
// authenticated account, its client on a non-allowlisted loopback address,
// sends to 1,000 new external recipients (20 messages of 50). The default
// limits let 200 first-time recipients a day through; past that every
// message gets 451 4.7.1, and the fifth such transaction suspends the
// account: 550 5.7.1, its session closed, its queued mail held, the
// shield's outbound_abuse event recorded for the client's address, the
// metrics, `agua status` and `agua user suspended` show it, a restart keeps
// it, POP3 still logs in, and one command (`agua user unsuspend`)
// releases it and its mail. Before: no limit at all (all 1,000 queued).
func TestCompromisedAccount(t *testing.T) {
	const dnsIP, deadIP, botIP, user, pass = "127.0.0.71", "127.0.0.72", "127.0.0.73", "alice@example.test", "alice's password"
	dns := dnstest.Start(t, dnsIP)
	dns.Add(t, "victims.test. 300 IN MX 10 mx.victims.test.", "mx.victims.test. 300 IN A "+deadIP)
	ln, err := net.Listen("tcp", deadIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // nothing listens there: deliveries are deferred, the mail stays queued

	data := t.TempDir()
	mustAgua(t, "", "domain", "add", "example.test", "-data", data)
	mustAgua(t, pass+"\n", "user", "add", user, "-data", data)
	cfg := config.Default()
	cfg.DataDir = data
	cfg.Accounts.Demo = false
	cfg.SMTP.Listen = nil
	cfg.SMTP.SubmissionListen = []string{"127.0.0.1:0"}
	cfg.SMTP.SubmissionsListen = nil
	cfg.SMTP.AuthDelay = 0
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.POP3.Listen, cfg.POP3.TLSListen = []string{"127.0.0.1:0"}, nil
	cfg.POP3.AuthDelay = 0
	cfg.IMAP.Listen, cfg.IMAP.TLSListen = nil, nil
	cfg.DNS.Resolver = []string{dns.Addr}
	cfg.Outbound.SMTPPort = port
	srv, stop := runServer(t, cfg, nil)
	lim := cfg.Outbound.Limits

	login := func() *smtptest.Client {
		c := smtptest.DialFrom(t, srv.Addr("submission"), botIP)
		c.Expect("220 ")
		c.Cmd("EHLO bot", "250")
		c.Cmd("AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+pass)), "235")
		return c
	}

	// The bot: 20 messages of 50 new recipients each, one session, going
	// on through the refusals until the server stops it.
	c := login()
	accepted, deferredRcpts, messages := 0, 0, 0
	var suspendedReply string
bot:
	for m := range 20 {
		c.Cmd("MAIL FROM:<"+user+">", "250")
		ok := 0
		for r := range 50 {
			c.Send(fmt.Sprintf("RCPT TO:<victim%04d@victims.test>", m*50+r))
			line := c.Expect("")
			switch {
			case strings.HasPrefix(line, "250 "):
				ok++
			case strings.HasPrefix(line, "451 4.7.1 "):
				deferredRcpts++
			case strings.HasPrefix(line, "550 5.7.1 "):
				suspendedReply = line
				break bot
			default:
				t.Fatalf("message %d RCPT %d: %q", m, r, line)
			}
		}
		if ok == 0 {
			c.Cmd("RSET", "250")
			continue
		}
		c.Cmd("DATA", "354")
		c.Raw(fmt.Sprintf("From: %s\r\nSubject: offer %d\r\n\r\nbuy now\r\n.\r\n", user, m))
		c.Expect("250 ")
		accepted += ok
		messages++
	}
	if suspendedReply == "" {
		t.Fatalf("never suspended: %d recipients accepted, %d refused", accepted, deferredRcpts)
	}
	if !strings.Contains(suspendedReply, "suspended") || !strings.Contains(suspendedReply, "postmaster") {
		t.Errorf("suspension reply %q", suspendedReply)
	}
	// Suspended within the limit: no more first-time recipients than the
	// daily limit got through.
	if accepted != lim.NewRecipientsPerDay || deferredRcpts == 0 {
		t.Fatalf("%d recipients accepted (limit %d), %d refused with 451", accepted, lim.NewRecipientsPerDay, deferredRcpts)
	}
	c.ExpectClosed() // its open session was ended

	// Its queued mail is held; nothing of it is delivered.
	queued := func() queue.Stats {
		var st queue.Stats
		if err := json.Unmarshal([]byte(mustAgua(t, "", "queue", "stats", "-json", "-data", data)), &st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	waitFor(t, "the account's mail held", func() bool { return queued().Held == messages })
	if st := queued(); st.Messages != messages || st.Recipients != accepted || st.ByDomain["victims.test"] != accepted {
		t.Fatalf("queue: %+v, want %d messages for %d recipients", st, messages, accepted)
	}

	// A new session logs in (the credentials are right) and is refused at MAIL.
	c = login()
	c.Cmd("MAIL FROM:<"+user+">", "550 5.7.1")
	c.Cmd("QUIT", "221")

	// Reading mail keeps working.
	pop := smtptest.DialFrom(t, srv.Addr("pop3"), botIP)
	pop.Expect("+OK")
	pop.Cmd("USER "+user, "+OK")
	pop.Cmd("PASS "+pass, "+OK")
	pop.Cmd("QUIT", "+OK")

	// The operator sees it: status, user suspended, the shield, the metrics.
	if out := mustAgua(t, "", "status", "-data", data); !strings.Contains(out, `"suspended_accounts"`) || !strings.Contains(out, user) {
		t.Errorf("status lacks the suspended account:\n%s", out)
	}
	out := mustAgua(t, "", "user", "suspended", "-data", data)
	if !strings.Contains(out, user) || !strings.Contains(out, "auto") || !strings.Contains(out, "sending limits hit 5 times") {
		t.Errorf("user suspended:\n%s", out)
	}
	var why struct {
		Counters struct {
			Events map[string]int `json:"events"`
		} `json:"counters"`
	}
	if err := json.Unmarshal([]byte(mustAgua(t, "", "why", botIP, "-json", "-data", data)), &why); err != nil {
		t.Fatal(err)
	}
	if why.Counters.Events["outbound_abuse"] == 0 {
		t.Errorf("no outbound_abuse event for %s: %+v", botIP, why.Counters.Events)
	}
	metrics := scrape(t, srv.Addr("admin"), data)
	for _, want := range []string{
		"agua_accounts_suspended 1",
		fmt.Sprintf(`agua_send_limit_hits_total{limit="new_recipients_per_day"} %d`, lim.SuspendAfterHits),
		fmt.Sprintf("agua_queue_held_messages %d", messages),
		fmt.Sprintf("agua_queue_messages %d", messages),
	} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}

	// A restart keeps the suspension and the held mail.
	stop()
	srv, _ = runServer(t, cfg, nil)
	if out := mustAgua(t, "", "user", "suspended", "-data", data); !strings.Contains(out, user) {
		t.Fatalf("suspension lost on restart:\n%s", out)
	}
	if st := queued(); st.Held != messages {
		t.Fatalf("held mail released by a restart: %+v", st)
	}

	// One command releases it.
	out = mustAgua(t, "", "user", "unsuspend", user, "-data", data)
	if !strings.Contains(out, fmt.Sprintf("%d held message(s) released", messages)) {
		t.Fatalf("unsuspend: %q", out)
	}
	if st := queued(); st.Held != 0 || st.Messages != messages {
		t.Fatalf("after unsuspend: %+v", st)
	}
	if out := mustAgua(t, "", "user", "suspended", "-data", data); !strings.Contains(out, "no account") {
		t.Fatalf("still listed after unsuspend:\n%s", out)
	}
	// It sends again to the recipients it has sent to; the day's limit of
	// first-time recipients still holds.
	c = login()
	c.Cmd("MAIL FROM:<"+user+">", "250")
	c.Cmd("RCPT TO:<victim0000@victims.test>", "250")
	c.Cmd("RCPT TO:<someone-new@victims.test>", "451 4.7.1")
	c.Cmd("QUIT", "221")
	code, _, errs := agua(t, "", "user", "unsuspend", user, "-data", data)
	if code == 0 || !strings.Contains(errs, "not suspended") {
		t.Errorf("unsuspend twice: %d %q", code, errs)
	}
}

// TestUserSuspendVerbs: `agua user suspend -reason`, then the account's
// sending is refused and the reason listed; an unknown account is refused.
func TestUserSuspendVerbs(t *testing.T) {
	data := t.TempDir()
	mustAgua(t, "", "domain", "add", "example.test", "-data", data)
	mustAgua(t, "alice's password\n", "user", "add", "alice@example.test", "-data", data)
	code, _, errs := agua(t, "", "user", "suspend", "alice@example.test", "-data", data)
	if code == 0 || !strings.Contains(errs, "agua is not running") {
		t.Fatalf("suspend without a server: %d %q", code, errs)
	}
	cfg := config.Default()
	cfg.DataDir = data
	cfg.Accounts.Demo = false
	cfg.SMTP.Listen, cfg.SMTP.SubmissionsListen = nil, nil
	cfg.SMTP.SubmissionListen = []string{"127.0.0.1:0"}
	cfg.Admin.Listen = ""
	cfg.POP3.Listen, cfg.POP3.TLSListen = nil, nil
	cfg.IMAP.Listen, cfg.IMAP.TLSListen = nil, nil
	cfg.DNS.Resolver = []string{"127.0.0.1:1"}
	runServer(t, cfg, nil)
	out := mustAgua(t, "", "user", "suspend", "Alice@example.test", "-reason", "phished", "-data", data)
	if !strings.Contains(out, "sending of alice@example.test suspended") {
		t.Fatalf("suspend: %q", out)
	}
	if out := mustAgua(t, "", "user", "suspended", "-data", data); !strings.Contains(out, "phished") || !strings.Contains(out, "operator") {
		t.Fatalf("suspended: %q", out)
	}
	code, _, errs = agua(t, "", "user", "suspend", "nobody@example.test", "-data", data)
	if code == 0 || !strings.Contains(errs, "not an account of this server") {
		t.Fatalf("suspend unknown: %d %q", code, errs)
	}
	mustAgua(t, "", "user", "unsuspend", "alice@example.test", "-data", data)
}

// scrape reads /metrics from the HTTP admin listener with the token.
func scrape(t *testing.T, addr, data string) string {
	t.Helper()
	tok, err := os.ReadFile(filepath.Join(data, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", "http://"+addr+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		b.WriteString(sc.Text() + "\n")
	}
	return b.String()
}

// waitFor polls cond for at most a minute (nothing depends on how long).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
