package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/agua-mail/agua/internal/config"
)

// imapc is a raw IMAP client over the test client's connection.
type imapc struct{ *client }

func dialIMAP(t *testing.T, addr, src string) *imapc {
	t.Helper()
	c := &imapc{dialFrom(t, addr, src)}
	c.line("* OK")
	return c
}

// line reads one line that starts with prefix.
func (c *imapc) line(prefix string) string {
	c.t.Helper()
	l, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("want %q, read error %v (got %q)", prefix, err, l)
	}
	l = strings.TrimSuffix(l, "\r\n")
	if !strings.HasPrefix(l, prefix) {
		c.t.Fatalf("want %q, got %q", prefix, l)
	}
	return l
}

func (c *imapc) do(cmd, prefix string) string {
	c.t.Helper()
	c.send(cmd)
	return c.line(prefix)
}

// sendMail delivers one message to rcpt through agua's MX listener.
func sendMail(t *testing.T, addr, rcpt, subject, body string) {
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

func imapLogin(t *testing.T, addr string, opts *imapclient.Options) *imapclient.Client {
	t.Helper()
	c, err := imapclient.DialInsecure(addr, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login(testUser, testPass).Wait(); err != nil {
		t.Fatal(err)
	}
	return c
}

// Mail delivered over SMTP is read over IMAP; a message delivered while the
// client IDLEs is announced; POP3 and IMAP agree on the UIDs.
func TestIMAPReadsSMTPDeliveryAndIdles(t *testing.T) {
	ts := startServer(t, nil)
	sendMail(t, ts.srv.Addr("smtp"), testUser, "first", "hello imap\r\n")
	var exists atomic.Uint32
	c := imapLogin(t, ts.srv.Addr("imap"), &imapclient.Options{UnilateralDataHandler: &imapclient.UnilateralDataHandler{
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil {
				exists.Store(*d.NumMessages)
			}
		},
	}})
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil || sel.NumMessages != 1 {
		t.Fatalf("select: %+v %v", sel, err)
	}
	msgs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{UID: true, Envelope: true, BodySection: []*imap.FetchItemBodySection{{Specifier: imap.PartSpecifierText}}}).Collect()
	if err != nil || len(msgs) != 1 || msgs[0].Envelope.Subject != "first" {
		t.Fatalf("fetch: %+v %v", msgs, err)
	}
	if body := string(msgs[0].FindBodySection(&imap.FetchItemBodySection{Specifier: imap.PartSpecifierText})); body != "hello imap\r\n" {
		t.Fatalf("body %q", body)
	}
	idle, err := c.Idle()
	if err != nil {
		t.Fatal(err)
	}
	sendMail(t, ts.srv.Addr("smtp"), testUser, "second", "during idle\r\n")
	waitForCond(t, "EXISTS 2 during IDLE", func() bool { return exists.Load() == 2 })
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatal(err)
	}
	// POP3's UIDL is UID and UIDVALIDITY in hex: the same numbers.
	uids, err := c.Fetch(imap.SeqSetNum(1, 2), &imap.FetchOptions{UID: true}).Collect()
	if err != nil || len(uids) != 2 {
		t.Fatal(err)
	}
	if err := c.Logout().Wait(); err != nil {
		t.Fatal(err)
	}
	p := &imapc{dialFrom(t, ts.srv.Addr("pop3"), "")}
	p.line("+OK")
	p.do("USER "+testUser, "+OK")
	p.do("PASS "+testPass, "+OK")
	p.do("UIDL 2", fmt.Sprintf("+OK 2 %08X%08X", uint32(uids[1].UID), sel.UIDValidity))
	p.do("QUIT", "+OK")
}

func waitForCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// UIDs and UIDVALIDITY survive a restart; flags stored over IMAP are in
// the Maildir names and survive too.
func TestIMAPUIDsAcrossRestart(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Accounts.Demo = false
	cfg.SMTP.Listen = []string{"127.0.0.1:0"}
	cfg.SMTP.SubmissionListen, cfg.SMTP.SubmissionsListen = nil, nil
	cfg.POP3.Listen, cfg.POP3.TLSListen = nil, nil
	cfg.IMAP.Listen, cfg.IMAP.TLSListen = []string{"127.0.0.1:0"}, nil
	cfg.Admin.Listen = ""
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
	run := func() (*Server, func()) {
		srv, err := New(cfg, slog.New(slog.DiscardHandler), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ctx) }()
		return srv, func() {
			cancel()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("server did not stop")
			}
		}
	}
	type state struct {
		validity uint32
		uids     []imap.UID
		flags    [][]imap.Flag
	}
	look := func(srv *Server) state {
		c := imapLogin(t, srv.Addr("imap"), nil)
		sel, err := c.Select("INBOX", nil).Wait()
		if err != nil {
			t.Fatal(err)
		}
		msgs, err := c.Fetch(imap.SeqSetNum(1, 2, 3), &imap.FetchOptions{UID: true, Flags: true}).Collect()
		if err != nil {
			t.Fatal(err)
		}
		st := state{validity: sel.UIDValidity}
		for _, m := range msgs {
			st.uids = append(st.uids, m.UID)
			st.flags = append(st.flags, m.Flags)
		}
		c.Logout().Wait()
		return st
	}
	srv, stop := run()
	for i := range 3 {
		sendMail(t, srv.Addr("smtp"), testUser, fmt.Sprint("m", i), "x\r\n")
	}
	c := imapLogin(t, srv.Addr("imap"), nil)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Store(imap.SeqSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagFlagged, imap.FlagAnswered}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	c.Logout().Wait()
	before := look(srv)
	stop()
	srv, stop = run()
	defer stop()
	after := look(srv)
	if before.validity != after.validity || fmt.Sprint(before.uids) != fmt.Sprint(after.uids) || fmt.Sprint(before.flags) != fmt.Sprint(after.flags) {
		t.Fatalf("before restart %+v, after %+v", before, after)
	}
	if fmt.Sprint(after.flags[1]) != fmt.Sprint([]imap.Flag{imap.FlagFlagged, imap.FlagAnswered}) && fmt.Sprint(after.flags[1]) != fmt.Sprint([]imap.Flag{imap.FlagAnswered, imap.FlagFlagged}) {
		t.Fatalf("flags of message 2: %v", after.flags[1])
	}
}

// A brute force from one address is banned (BYE), while the real user,
// from another address, logs in and keeps working.
func TestIMAPBruteForceBan(t *testing.T) {
	ts := startServer(t, func(c *config.Config) { c.Shield.Thresholds.SetCount("auth_failure", 3) })
	addr := ts.srv.Addr("imap")
	attacker := dialIMAP(t, addr, "127.0.0.155")
	attacker.do(`a1 LOGIN alice@example.test guess1`, "a1 NO [AUTHENTICATIONFAILED]")
	user := dialIMAP(t, addr, "127.0.0.156")
	user.do(`u1 LOGIN alice@example.test "`+testPass+`"`, "u1 OK")
	attacker.do(`a2 LOGIN alice@example.test guess2`, "a2 NO [AUTHENTICATIONFAILED]")
	attacker.do(`a3 LOGIN alice@example.test guess3`, "* BYE banned for repeated authentication failures")
	attacker.expectClosed()
	again := &imapc{dialFrom(t, addr, "127.0.0.155")}
	again.line("* BYE ")
	again.expectClosed()
	bans := ts.srv.Shield().Bans()
	if len(bans) != 1 || bans[0].Prefix.String() != "127.0.0.155/32" || bans[0].Reason != "auth_failure" {
		t.Fatalf("bans: %+v", bans)
	}
	user.do("u2 SELECT INBOX", "* ")
	user.send("u3 LOGOUT")
	user.line("")
	later := dialIMAP(t, addr, "127.0.0.157")
	later.do(`l1 LOGIN alice@example.test "`+testPass+`"`, "l1 OK")
}

// BAD replies count as protocol errors: the address is banned.
func TestIMAPProtocolErrorBan(t *testing.T) {
	ts := startServer(t, func(c *config.Config) { c.Shield.Thresholds.SetCount("protocol_error", 3) })
	addr := ts.srv.Addr("imap")
	c := dialIMAP(t, addr, "127.0.0.160")
	c.do(`a1 LOGIN alice@example.test "`+testPass+`"`, "a1 OK")
	c.do("a2 FETCH", "a2 BAD")
	c.do("a3 SELECT", "a3 BAD")
	c.do("a4 STORE", "a4 BAD")
	c.line("* BYE banned for repeated protocol errors")
	c.expectClosed()
	// An HTTP request before login: BAD, BYE, close.
	h := dialIMAP(t, addr, "127.0.0.161")
	h.do("GET / HTTP/1.1", "GET BAD")
	h.line("* BYE")
	h.expectClosed()
}

// Issue 10: client errors the engine used to answer "NO [SERVERBUG]"
// (bad base64 in AUTHENTICATE, FETCH 0, bad modified UTF-7) are BAD,
// count towards max_errors and the shield's protocol_error threshold
// (10 by default): the session ends with BYE and the address is banned,
// with no WARN line per bad command.
func TestIMAPClientErrorsCounted(t *testing.T) {
	ts := startServer(t, nil)
	addr := ts.srv.Addr("imap")
	c := dialIMAP(t, addr, "127.0.0.165")
	ended := false
	for i := 1; i <= 200 && !ended; i++ {
		c.send(fmt.Sprintf("a%d AUTHENTICATE PLAIN !!!notbase64", i))
		l, err := c.r.ReadString('\n')
		switch {
		case err != nil:
			t.Fatalf("command %d: connection ended without BYE (%v)", i, err)
		case strings.HasPrefix(l, "* BYE"):
			ended = true
			if i > 11 {
				t.Fatalf("BYE only after %d bad commands", i-1)
			}
		case !strings.HasPrefix(l, fmt.Sprintf("a%d BAD ", i)):
			t.Fatalf("command %d: %q", i, l)
		}
	}
	if !ended {
		t.Fatal("200 bad commands and no BYE")
	}
	c.expectClosed()
	bans := ts.srv.Shield().Bans()
	if len(bans) != 1 || bans[0].Prefix.String() != "127.0.0.165/32" || bans[0].Reason != "protocol_error" {
		t.Fatalf("bans: %+v", bans)
	}
	again := &imapc{dialFrom(t, addr, "127.0.0.165")}
	again.line("* BYE ")
	// After login too: FETCH 0 and a bad mailbox name are BAD and counted.
	u := dialIMAP(t, addr, "127.0.0.166")
	u.do(`u1 LOGIN alice@example.test "`+testPass+`"`, "u1 OK")
	u.send("u2 SELECT INBOX")
	for !strings.HasPrefix(u.line(""), "u2 OK") {
	}
	u.do("u3 FETCH 0 FLAGS", "u3 BAD")
	u.do("u4 FETCH 4294967296 FLAGS", "u4 BAD")
	u.do("u5 CREATE &Jjo", "u5 BAD")
	for _, l := range strings.Split(ts.logs.String(), "\n") {
		if strings.Contains(l, "level=WARN") && strings.Contains(l, "proto=imap") {
			t.Fatalf("WARN for a client's error: %s", l)
		}
	}
}

// A rule added to shield.rules closes the open session of that address;
// others go on.
func TestIMAPShieldClosesSession(t *testing.T) {
	ts := startServer(t, nil)
	addr := ts.srv.Addr("imap")
	victim := dialIMAP(t, addr, "127.0.0.170")
	victim.do(`v1 LOGIN alice@example.test "`+testPass+`"`, "v1 OK")
	other := dialIMAP(t, addr, "127.0.0.171")
	appendFile(t, ts.cfg.Resolve("shield.rules"), "deny 127.0.0.170\n")
	victim.expectClosed() // the shield closes it: nothing more is written

	other.do(`o1 LOGIN alice@example.test "`+testPass+`"`, "o1 OK")
	// Refused at accept: BYE on IMAP, nothing on IMAPS.
	refused := &imapc{dialFrom(t, addr, "127.0.0.170")}
	refused.line("* BYE ")
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.170")}}
	if conn, err := d.Dial("tcp", ts.srv.Addr("imaps")); err == nil {
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, _ := conn.Read(make([]byte, 64))
		conn.Close()
		if n != 0 {
			t.Fatalf("IMAPS refusal wrote %d bytes in clear", n)
		}
	}
	// IMAPS serves everyone else.
	conn, err := tls.Dial("tcp", ts.srv.Addr("imaps"), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if l, _ := bufio.NewReader(conn).ReadString('\n'); !strings.HasPrefix(l, "* OK") {
		t.Fatalf("imaps greeting %q", l)
	}
}
