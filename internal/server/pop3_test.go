package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/shield"
)

// pop is a POP3 client over the test client's connection.
type pop struct{ *client }

func dialPOP(t *testing.T, addr, src string) *pop {
	t.Helper()
	p := &pop{dialFrom(t, addr, src)}
	p.line("+OK")
	return p
}

// line reads one line that starts with prefix.
func (p *pop) line(prefix string) string {
	p.t.Helper()
	l, err := p.r.ReadString('\n')
	if err != nil {
		p.t.Fatalf("want %q, read error %v (got %q)", prefix, err, l)
	}
	l = strings.TrimSuffix(l, "\r\n")
	if !strings.HasPrefix(l, prefix) {
		p.t.Fatalf("want %q, got %q", prefix, l)
	}
	return l
}

func (p *pop) do(cmd, prefix string) string {
	p.t.Helper()
	p.send(cmd)
	return p.line(prefix)
}

// multi reads a multi-line body up to ".", undoing the byte-stuffing.
func (p *pop) multi() []string {
	p.t.Helper()
	var out []string
	for {
		l := p.line("")
		if l == "." {
			return out
		}
		out = append(out, strings.TrimPrefix(l, "."))
	}
}

func (p *pop) login(user, pass string) string {
	p.t.Helper()
	p.do("USER "+user, "+OK")
	return p.do("PASS "+pass, "+OK")
}

// uidl returns the UIDL listing.
func (p *pop) uidl() []string {
	p.t.Helper()
	p.do("UIDL", "+OK")
	return p.multi()
}

// smtpDeliver delivers one message to rcpt through agua's MX listener.
func smtpDeliver(t *testing.T, addr, rcpt, subject, body string) {
	t.Helper()
	c := dial(t, addr)
	c.expect("220 ")
	c.cmd("EHLO sender.example", "250")
	if got := c.deliver("someone@elsewhere.example", []string{rcpt}, "Subject: "+subject+"\r\n\r\n"+body); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("delivery: %q", got)
	}
	c.cmd("QUIT", "221")
	c.conn.Close()
}

// waitUnlocked logs in until the maildrop is no longer in use (the server
// notices a dropped connection asynchronously) and returns the session.
func waitUnlocked(t *testing.T, addr, user, pass string) *pop {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		p := dialPOP(t, addr, "")
		p.do("USER "+user, "+OK")
		p.send("PASS " + pass)
		l := p.line("")
		if strings.HasPrefix(l, "+OK") {
			return p
		}
		if !strings.HasPrefix(l, "-ERR [IN-USE]") || time.Now().After(deadline) {
			t.Fatalf("login: %q", l)
		}
		p.do("QUIT", "+OK")
		time.Sleep(10 * time.Millisecond)
	}
}

// Mail delivered over SMTP is listed, retrieved and deleted over POP3;
// deletion happens only at QUIT, never on a dropped connection.
func TestPOP3RetrieveAndDelete(t *testing.T) {
	ts := startServer(t, nil)
	for i := 1; i <= 3; i++ {
		smtpDeliver(t, ts.srv.Addr("smtp"), testUser, fmt.Sprintf("msg %d", i), fmt.Sprintf("body %d\r\n..dot line\r\n", i)) // dot-stuffed for SMTP
	}
	p := dialPOP(t, ts.srv.Addr("pop3"), "")
	p.do("CAPA", "+OK")
	if capa := strings.Join(p.multi(), "\n"); !strings.Contains(capa, "UIDL") || !strings.Contains(capa, "STLS") || !strings.Contains(capa, "SASL PLAIN") {
		t.Fatalf("CAPA: %q", capa)
	}
	p.login(testUser, testPass)
	stat := p.do("STAT", "+OK 3 ")
	uidls := p.uidl()
	if len(uidls) != 3 {
		t.Fatalf("UIDL: %q", uidls)
	}
	p.do("RETR 2", "+OK")
	msg := strings.Join(p.multi(), "\n")
	for _, want := range []string{"Return-Path: <someone@elsewhere.example>", "Delivered-To: " + testUser, "Subject: msg 2", "body 2\n.dot line"} {
		if !strings.Contains(msg, want) {
			t.Errorf("RETR 2 lacks %q:\n%s", want, msg)
		}
	}
	// Seen by a client: new/ is empty now (Maildir).
	dir := filepath.Join(ts.cfg.DataDir, "mail", "example.test", "alice")
	if ents, _ := os.ReadDir(filepath.Join(dir, "new")); len(ents) != 0 {
		t.Errorf("new/ still holds %d files after login", len(ents))
	}

	// DELE, then the connection drops: nothing is deleted.
	p.do("DELE 1", "+OK")
	p.do("DELE 3", "+OK")
	p.conn.Close()
	p = waitUnlocked(t, ts.srv.Addr("pop3"), testUser, testPass)
	if got := p.do("STAT", "+OK"); got != stat {
		t.Fatalf("after a dropped connection: %q, want %q", got, stat)
	}
	if got := p.uidl(); strings.Join(got, ",") != strings.Join(uidls, ",") {
		t.Fatalf("UIDL changed: %q, was %q", got, uidls)
	}
	// Mail delivered during a session shows in the next one.
	smtpDeliver(t, ts.srv.Addr("smtp"), testUser, "msg 4", "during the session\r\n")
	p.do("STAT", "+OK 3 ")
	p.do("DELE 1", "+OK")
	p.do("DELE 3", "+OK")
	p.do("RETR 2", "+OK")
	p.multi()
	p.do("QUIT", "+OK")
	p.expectClosed()

	p = waitUnlocked(t, ts.srv.Addr("pop3"), testUser, testPass)
	p.do("STAT", "+OK 2 ")
	after := p.uidl()
	if len(after) != 2 || after[0] != "1 "+strings.Fields(uidls[1])[1] {
		t.Fatalf("UIDL after QUIT: %q (before: %q)", after, uidls)
	}
	p.do("RETR 2", "+OK")
	if m := strings.Join(p.multi(), "\n"); !strings.Contains(m, "during the session") {
		t.Fatalf("new message: %q", m)
	}
	p.do("QUIT", "+OK")
	if n := len(ts.messages(t, testUser)); n != 2 {
		t.Fatalf("%d files on disk, want 2", n)
	}
	// The retrieved message carries the seen flag.
	ents, _ := os.ReadDir(filepath.Join(dir, "cur"))
	seen := 0
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ":2,S") {
			seen++
		}
	}
	if seen != 2 {
		t.Errorf("%d files flagged seen, want 2: %v", seen, ents)
	}
}

// One session per maildrop, also across POP3 and POP3S; the lock goes with
// the session.
func TestPOP3InUse(t *testing.T) {
	ts := startServer(t, nil)
	a := dialPOP(t, ts.srv.Addr("pop3"), "")
	a.login(testUser, testPass)
	conn, err := tls.Dial("tcp", ts.srv.Addr("pop3s"), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	b := &pop{&client{t: t, conn: conn, r: bufio.NewReader(conn)}}
	b.line("+OK")
	b.do("USER "+testUser, "+OK")
	b.do("PASS "+testPass, "-ERR [IN-USE]")
	a.do("QUIT", "+OK")
	a.expectClosed()
	b.login(testUser, testPass)
	b.do("STAT", "+OK 0 0")
	b.do("QUIT", "+OK")
}

// STLS on the real server with insecure loopback logins switched off.
func TestPOP3STLS(t *testing.T) {
	ts := startServer(t, func(c *config.Config) { c.POP3.AllowInsecureAuth = false })
	p := dialPOP(t, ts.srv.Addr("pop3"), "")
	p.do("USER "+testUser, "-ERR [AUTH] Plaintext authentication disallowed")
	p.do("STLS", "+OK")
	tc := tls.Client(p.conn, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	p.conn, p.r = tc, bufio.NewReader(tc)
	p.do("AUTH PLAIN "+plainAuth(testUser, testPass), "+OK")
	p.do("QUIT", "+OK")
}

// runServer starts agua on cfg and returns a stop function that waits for
// a clean shutdown, for tests that restart on the same data folder.
func runServer(t *testing.T, cfg config.Config) (*Server, func()) {
	t.Helper()
	logs := &logBuffer{}
	srv, err := New(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return srv, serveInBackground(t, srv, logs)
}

// serveInBackground runs srv until the returned stop (also a cleanup).
func serveInBackground(t *testing.T, srv *Server, logs *logBuffer) func() {
	t.Helper()
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
				t.Error("server did not shut down")
			}
			if t.Failed() {
				t.Logf("server log:\n%s", logs.String())
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func testConfig(t *testing.T) config.Config {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Accounts.Demo = false
	cfg.SMTP.Listen = []string{"127.0.0.1:0"}
	cfg.SMTP.SubmissionListen = nil
	cfg.SMTP.SubmissionsListen = nil
	cfg.POP3.Listen = []string{"127.0.0.1:0"}
	cfg.POP3.TLSListen = []string{"127.0.0.1:0"}
	cfg.POP3.AuthDelay = 0
	cfg.IMAP.Listen = nil
	cfg.IMAP.TLSListen = nil
	cfg.Admin.Listen = "" // the default 127.0.0.1:8025 would collide across tests
	return cfg
}

// UIDs survive a restart (they are in agua-uidlist), and new mail gets new
// ones.
func TestPOP3UIDLAcrossRestart(t *testing.T) {
	cfg := testConfig(t)
	dir, err := OpenDirectory(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := dir.AddDomain(ctx, testDomain); err != nil {
		t.Fatal(err)
	}
	if err := dir.AddUser(ctx, testUser, testPass, 0); err != nil {
		t.Fatal(err)
	}
	dir.Close()

	srv, stop := runServer(t, cfg)
	for i := range 3 {
		smtpDeliver(t, srv.Addr("smtp"), testUser, fmt.Sprint("m", i), "x\r\n")
	}
	p := dialPOP(t, srv.Addr("pop3"), "")
	p.login(testUser, testPass)
	before := p.uidl()
	p.do("QUIT", "+OK")
	stop()

	srv, stop = runServer(t, cfg)
	defer stop()
	smtpDeliver(t, srv.Addr("smtp"), testUser, "m3", "x\r\n")
	p = dialPOP(t, srv.Addr("pop3"), "")
	p.login(testUser, testPass)
	after := p.uidl()
	p.do("QUIT", "+OK")
	if len(before) != 3 || len(after) != 4 || strings.Join(after[:3], ",") != strings.Join(before, ",") {
		t.Fatalf("UIDL before restart %q, after %q", before, after)
	}
	seen := map[string]bool{}
	for _, l := range after {
		u := strings.Fields(l)[1]
		if seen[u] || len(u) != 16 {
			t.Fatalf("bad or repeated UIDL %q in %q", u, after)
		}
		seen[u] = true
	}
}

// A maildrop of 10,000 messages lists completely.
func TestPOP3LargeMaildrop(t *testing.T) {
	ts := startServer(t, nil)
	cur := filepath.Join(ts.cfg.DataDir, "mail", "example.test", "alice", "cur")
	if err := os.MkdirAll(cur, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"new", "tmp"} {
		os.MkdirAll(filepath.Join(filepath.Dir(cur), sub), 0o700)
	}
	const n = 10000
	body := "Subject: bulk\r\n\r\nhello\r\n"
	for i := range n {
		name := fmt.Sprintf("%d.M%dP1Q%d.bulk,S=%d:2,", 1700000000+i/100, i%100, i, len(body))
		if err := os.WriteFile(filepath.Join(cur, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p := dialPOP(t, ts.srv.Addr("pop3"), "")
	p.login(testUser, testPass)
	p.do("STAT", fmt.Sprintf("+OK %d %d", n, n*len(body)))
	p.do("LIST", fmt.Sprintf("+OK %d messages", n))
	if got := len(p.multi()); got != n {
		t.Fatalf("LIST gave %d lines", got)
	}
	uidls := p.uidl()
	seen := map[string]bool{}
	for _, l := range uidls {
		seen[strings.Fields(l)[1]] = true
	}
	if len(uidls) != n || len(seen) != n {
		t.Fatalf("UIDL: %d lines, %d distinct", len(uidls), len(seen))
	}
	p.do(fmt.Sprintf("RETR %d", n), "+OK")
	p.multi()
	p.do("QUIT", "+OK")
}

// The brute-forcing address is banned (threshold lowered to 3); a real
// user from another address logs in during the attack, without waiting:
// the per-account delay only answers failures.
func TestPOP3BruteForceBan(t *testing.T) {
	ts := startServer(t, func(c *config.Config) { c.Shield.Thresholds.SetCount("auth_failure", 3) })
	addr := ts.srv.Addr("pop3")
	attacker := dialPOP(t, addr, "127.0.0.55")
	attacker.do("USER "+testUser, "+OK")
	attacker.do("PASS guess1", "-ERR [AUTH] Authentication failed")
	// Meanwhile the real user logs in from elsewhere and keeps the session.
	user := dialPOP(t, addr, "127.0.0.56")
	user.login(testUser, testPass)
	attacker.do("USER "+testUser, "+OK")
	attacker.do("PASS guess2", "-ERR [AUTH] Authentication failed")
	attacker.do("AUTH PLAIN "+plainAuth(testUser, "guess3"), "-ERR [AUTH] banned for repeated authentication failures")
	attacker.expectClosed()
	again := &pop{dialFrom(t, addr, "127.0.0.55")}
	again.line("-ERR [AUTH] ")
	again.expectClosed()
	bans := ts.srv.Shield().Bans()
	if len(bans) != 1 || bans[0].Prefix.String() != "127.0.0.55/32" || bans[0].Reason != "auth_failure" {
		t.Fatalf("bans: %+v", bans)
	}
	// The account was attacked: failures on it are now delayed, but the
	// real user's session goes on and a new login of theirs succeeds.
	if d := ts.srv.Shield().AccountDelay(testUser); d <= 0 {
		t.Errorf("AccountDelay(%s) = %v after the attack", testUser, d)
	}
	user.do("STAT", "+OK 0 0")
	user.do("QUIT", "+OK")
	user.expectClosed()
	later := dialPOP(t, addr, "127.0.0.57")
	later.login(testUser, testPass)
	later.do("QUIT", "+OK")
}

// Junk commands count as protocol errors: the address is banned and its
// session ends with the ban's reply.
func TestPOP3ProtocolErrorBan(t *testing.T) {
	ts := startServer(t, func(c *config.Config) { c.Shield.Thresholds.SetCount("protocol_error", 3) })
	addr := ts.srv.Addr("pop3")
	p := dialPOP(t, addr, "127.0.0.60")
	p.do("EHLO x", "-ERR Unknown command")
	p.do("STAT", "-ERR Command not valid")
	p.raw(strings.Repeat("x", 5000) + "\r\n")
	p.line("-ERR [AUTH] banned for repeated protocol errors")
	p.expectClosed()
	again := &pop{dialFrom(t, addr, "127.0.0.60")}
	again.line("-ERR [AUTH] ")
	again.expectClosed()
	// HTTP on the POP3 port: one -ERR and a close.
	h := dialPOP(t, addr, "127.0.0.61")
	h.do("GET / HTTP/1.1", "-ERR This is a POP3 server")
	h.expectClosed()
}

// A rule added to shield.rules closes the open session of that address (it
// deletes nothing and frees the maildrop), while others go on.
func TestPOP3ShieldClosesSession(t *testing.T) {
	ts := startServer(t, nil)
	smtpDeliver(t, ts.srv.Addr("smtp"), testUser, "keep me", "x\r\n")
	addr := ts.srv.Addr("pop3")
	victim := dialPOP(t, addr, "127.0.0.70")
	victim.login(testUser, testPass)
	victim.do("DELE 1", "+OK")
	other := dialPOP(t, addr, "127.0.0.71")
	appendFile(t, ts.cfg.Resolve("shield.rules"), "deny 127.0.0.70 drop\n")
	victim.expectClosed()
	// The lock goes with the closed session, which releases it just after
	// closing the socket; a cached login can be quicker than that, so wait
	// for it (bounded) rather than rely on argon2id taking its time.
	other.do("USER "+testUser, "+OK")
	deadline := time.Now().Add(10 * time.Second)
	for reply := other.do("PASS "+testPass, ""); !strings.HasPrefix(reply, "+OK"); reply = other.do("PASS "+testPass, "") {
		if !strings.Contains(reply, "[IN-USE]") || time.Now().After(deadline) {
			t.Fatalf("login after the victim's session closed: %q", reply)
		}
		other.do("USER "+testUser, "+OK")
	}
	other.do("STAT", "+OK 1 ")
	other.do("QUIT", "+OK")
}

// Refusals at accept time: a rate or connection limit is a temporary
// [SYS/TEMP]; on the POP3S port nothing is written before TLS.
func TestPOP3RejectAtAccept(t *testing.T) {
	ts := startServer(t, func(c *config.Config) { c.Shield.Limits.PerIPConns = 1 })
	first := dialPOP(t, ts.srv.Addr("pop3"), "127.0.0.90")
	second := &pop{dialFrom(t, ts.srv.Addr("pop3"), "127.0.0.90")}
	second.line("-ERR [SYS/TEMP] too many connections from your address")
	second.expectClosed()
	// POP3S: closed (or reset) without a byte.
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.90")}}
	if conn, err := d.Dial("tcp", ts.srv.Addr("pop3s")); err == nil {
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, _ := conn.Read(make([]byte, 64))
		conn.Close()
		if n != 0 {
			t.Fatalf("POP3S refusal wrote %d bytes in clear", n)
		}
	}
	first.do("QUIT", "+OK")
}

// With ban_action = drop, the session that crosses the threshold is
// closed without a reply, and so are later connections.
func TestPOP3BanDrop(t *testing.T) {
	ts := startServer(t, func(c *config.Config) {
		c.Shield.Thresholds.SetCount("auth_failure", 2)
		c.Shield.BanAction = shield.Drop
	})
	addr := ts.srv.Addr("pop3")
	p := dialPOP(t, addr, "127.0.0.95")
	p.do("USER "+testUser, "+OK")
	p.do("PASS wrong1", "-ERR [AUTH] Authentication failed")
	p.do("USER "+testUser, "+OK")
	p.send("PASS wrong2")
	p.expectClosed()
	expectDropped(t, addr, "127.0.0.95")
}
