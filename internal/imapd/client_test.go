package imapd

import (
	"context"
	"crypto/tls"
	"io"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

func appendMsg(t *testing.T, c *imapclient.Client, mailbox, msg string, flags ...imap.Flag) *imap.AppendData {
	t.Helper()
	cmd := c.Append(mailbox, int64(len(msg)), &imap.AppendOptions{Flags: flags})
	if _, err := cmd.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := cmd.Wait()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// APPEND, COPY, MOVE with UIDPLUS answers, SEARCH and STATUS, through
// go-imap's client.
func TestAppendCopyMoveSearch(t *testing.T) { onStores(t, testAppendCopyMoveSearch) }

func testAppendCopyMoveSearch(t *testing.T, ts *testServer) {
	c := ts.login(t)
	a := appendMsg(t, c, "INBOX", "Subject: apples\r\n\r\nred fruit\r\n")
	b := appendMsg(t, c, "INBOX", "Subject: pears\r\n\r\ngreen fruit\r\n", imap.FlagFlagged)
	if a.UID != 1 || b.UID != 2 || a.UIDValidity == 0 || a.UIDValidity != b.UIDValidity {
		t.Fatalf("APPENDUID %+v %+v", a, b)
	}
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil || sel.NumMessages != 2 || sel.UIDValidity != a.UIDValidity || sel.UIDNext != 3 {
		t.Fatalf("select: %+v %v", sel, err)
	}
	res, err := c.UIDSearch(&imap.SearchCriteria{Body: []string{"GREEN"}}, nil).Wait()
	if err != nil || !slices.Equal(res.AllUIDs(), []imap.UID{2}) {
		t.Fatalf("search body: %v %v", res, err)
	}
	res, err = c.Search(&imap.SearchCriteria{Flag: []imap.Flag{imap.FlagFlagged}}, nil).Wait()
	if err != nil || !slices.Equal(res.AllSeqNums(), []uint32{2}) {
		t.Fatalf("search flagged: %v %v", res, err)
	}
	res, err = c.Search(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: "APPLE"}}}, nil).Wait()
	if err != nil || !slices.Equal(res.AllSeqNums(), []uint32{1}) {
		t.Fatalf("search header: %v %v", res, err)
	}
	cp, err := c.Copy(imap.SeqSetNum(1, 2), "Trash").Wait()
	if err != nil || cp.UIDValidity == 0 || cp.SourceUIDs.String() != "1:2" || cp.DestUIDs.String() != "1:2" {
		t.Fatalf("copy: %+v %v", cp, err)
	}
	if _, err := c.Copy(imap.SeqSetNum(1), "Nope").Wait(); err == nil || !strings.Contains(err.Error(), "TRYCREATE") {
		t.Fatalf("copy to missing mailbox: %v", err)
	}
	mv, err := c.Move(imap.SeqSetNum(1), "Junk").Wait()
	if err != nil || mv.DestUIDs.String() != "1" {
		t.Fatalf("move: %+v %v", mv, err)
	}
	st, err := c.Status("INBOX", &imap.StatusOptions{NumMessages: true, UIDNext: true, NumUnseen: true, Size: true}).Wait()
	if err != nil || *st.NumMessages != 1 || st.UIDNext != 3 || *st.NumUnseen != 1 || *st.Size == 0 {
		t.Fatalf("status: %+v %v", st, err)
	}
	st, err = c.Status("Trash", &imap.StatusOptions{NumMessages: true}).Wait()
	if err != nil || *st.NumMessages != 2 {
		t.Fatalf("status Trash: %+v %v", st, err)
	}
	// The moved message is pears, still flagged; its body arrived intact.
	if _, err := c.Select("Junk", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	msgs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{Flags: true, Envelope: true, BodySection: []*imap.FetchItemBodySection{{}}}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("fetch: %v %v", msgs, err)
	}
	m := msgs[0]
	if m.Envelope.Subject != "apples" || string(m.FindBodySection(&imap.FetchItemBodySection{})) != "Subject: apples\r\n\r\nred fruit\r\n" ||
		!slices.Contains(m.Flags, imap.FlagSeen) {
		t.Fatalf("moved message: %+v", m)
	}
	if err := c.Logout().Wait(); err != nil {
		t.Fatal(err)
	}
}

// A message delivered while a client IDLEs is announced (EXISTS), and an
// expunge by another session too.
func TestIdleAnnouncesDelivery(t *testing.T) { onStores(t, testIdleAnnouncesDelivery) }

func testIdleAnnouncesDelivery(t *testing.T, ts *testServer) {
	var exists atomic.Uint32
	expunged := make(chan uint32, 4)
	c, err := imapclient.DialInsecure(ts.addr, &imapclient.Options{UnilateralDataHandler: &imapclient.UnilateralDataHandler{
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil {
				exists.Store(*d.NumMessages)
			}
		},
		Expunge: func(seq uint32) { expunged <- seq },
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(testUser, testPass).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	idle, err := c.Idle()
	if err != nil {
		t.Fatal(err)
	}
	ts.deliver(t, "Subject: during idle\r\n\r\nhi\r\n")
	waitFor(t, "EXISTS 1 during IDLE", func() bool { return exists.Load() == 1 })

	other := ts.login(t)
	if _, err := other.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := other.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := other.Expunge().Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case seq := <-expunged:
		if seq != 1 {
			t.Fatalf("EXPUNGE %d", seq)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no EXPUNGE during IDLE")
	}
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatal(err)
	}
}

// Off loopback (here: loopback not trusted) logins need TLS: LOGINDISABLED
// until STARTTLS; implicit TLS allows them at once.
func TestTLSRequiredForLogin(t *testing.T) {
	ts := startTest(t, func(c *Config) { c.AllowInsecureAuthLoopback = false })
	c := dial(t, ts.addr)
	greeting := c.expect("* OK [CAPABILITY")
	if !strings.Contains(greeting, "LOGINDISABLED") || !strings.Contains(greeting, "STARTTLS") {
		t.Fatalf("greeting %q", greeting)
	}
	c.send(`a1 LOGIN alice@example.test "secret pass"`)
	c.expect("a1 NO [PRIVACYREQUIRED]")
	c.startTLS()
	c.send("a2 CAPABILITY")
	caps := c.expect("* CAPABILITY")
	if strings.Contains(caps, "LOGINDISABLED") || strings.Contains(caps, "STARTTLS") {
		t.Fatalf("after STARTTLS: %q", caps)
	}
	c.expect("a2 OK")
	c.send(`a3 LOGIN alice@example.test "secret pass"`)
	c.expect("a3 OK")

	tlsSrv := startTest(t, func(c *Config) { c.ImplicitTLS = true; c.AllowInsecureAuthLoopback = false })
	ic, err := imapclient.DialTLS(tlsSrv.addr, &imapclient.Options{TLSConfig: &tls.Config{InsecureSkipVerify: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer ic.Close()
	if err := ic.Login(testUser, testPass).Wait(); err != nil {
		t.Fatal(err)
	}
}

// A client that says nothing is logged out after the pre-login timeout,
// with a BYE.
func TestPreAuthTimeout(t *testing.T) {
	ts := startTest(t, func(c *Config) { c.PreAuthTimeout = 200 * time.Millisecond })
	c := dial(t, ts.addr)
	c.expect("* OK")
	c.expect("* BYE Autologout")
	c.expectClosed()
}

// A panic in a session is recovered and counted; the server goes on.
func TestPanicRecovered(t *testing.T) {
	ts := startTest(t, nil)
	c := dial(t, ts.addr)
	c.expect("* OK")
	c.send(`a1 LOGIN panic@example.test x`)
	c.expectClosed()
	waitFor(t, "panic counted", func() bool { return ts.srv.Panics() == 1 })
	ts.login(t)
}

// Shutdown says BYE to idle sessions.
func TestShutdownSaysBye(t *testing.T) {
	ts := startTest(t, nil)
	c := dial(t, ts.addr)
	c.expect("* OK")
	c.send(`a1 LOGIN alice@example.test "secret pass"`)
	c.expect("a1 OK")
	waitFor(t, "session tracked", func() bool { return ts.srv.Sessions() == 1 })
	go ts.srv.Shutdown(t.Context())
	c.expect("* BYE Server shutting down")
	c.expectClosed()
}

func TestFolderNames(t *testing.T) {
	for name, want := range map[string]string{"INBOX": "", "inbox": "", "Sent": "Sent", "A.B": "A.B", "Répertoire": "Répertoire"} {
		if got, ok := folderName(name); !ok || got != want {
			t.Errorf("folderName(%q) = %q, %v", name, got, ok)
		}
	}
	for _, name := range []string{"", ".", "..", "../x", "x/..", "a/b", `a\b`, ".x", "x.", "a..b", "a\x00b", "a\nb", "INBOX.x", "inbox.x", "*", "a%", "\xff", " ", "a. .b", strings.Repeat("x", 300)} {
		if got, ok := folderName(name); ok {
			t.Errorf("folderName(%q) accepted as %q", name, got)
		}
	}
}

// FuzzFolderName: whatever a client sends, an accepted name stays one
// folder inside the Maildir.
func FuzzFolderName(f *testing.F) {
	for _, s := range []string{"INBOX", "Sent", "A.B", "../x", "..", "a/b", ".x", "a\x00", "Ré"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		fn, ok := folderName(name)
		if !ok || fn == "" {
			return
		}
		if strings.ContainsAny(fn, "/\\\x00") || strings.HasPrefix(fn, ".") || strings.Contains(fn, "..") || strings.HasSuffix(fn, ".") {
			t.Fatalf("unsafe name accepted: %q", fn)
		}
		if p := "/m/." + fn; !strings.HasPrefix(p, "/m/.") || strings.Count(p, "/") != 2 {
			t.Fatalf("name %q leaves the Maildir", fn)
		}
	})
}

// After STARTTLS the replies are still read: BAD replies end the session
// after MaxErrors, with a BYE inside TLS.
func TestErrorsCountedAfterSTARTTLS(t *testing.T) {
	ts := startTest(t, func(c *Config) { c.MaxErrors = 3 })
	c := dial(t, ts.addr)
	c.expect("* OK")
	c.startTLS()
	c.send("a1 LOGIN")
	c.expect("a1 BAD")
	c.send("a2 SELECT INBOX")
	c.expect("a2 BAD")
	c.send("a3 LOGIN x")
	c.expect("a3 BAD")
	c.expect("* BYE Too many errors")
	c.expectClosed()
}

// A selected mailbox deleted by another session ends the session with a
// BYE rather than failing every command.
func TestSelectedMailboxDeleted(t *testing.T) {
	ts := startTest(t, nil)
	c := dial(t, ts.addr)
	c.expect("* OK")
	c.send(`a1 LOGIN alice@example.test "secret pass"`)
	c.expect("a1 OK")
	c.send("a2 SELECT Trash")
	c.until("a2 OK")
	other := ts.login(t)
	if err := other.Delete("Trash").Wait(); err != nil {
		t.Fatal(err)
	}
	c.send("a3 NOOP")
	c.expect("* BYE Selected mailbox was deleted")
	c.expectClosed()
}

// A client that sends STARTTLS and then never starts the handshake is
// closed at the pre-login timeout (the TLS layer must not deadlock the
// BYE).
func TestStalledSTARTTLSHandshake(t *testing.T) {
	ts := startTest(t, func(c *Config) { c.PreAuthTimeout = 200 * time.Millisecond })
	c := dial(t, ts.addr)
	c.expect("* OK")
	c.send("S STARTTLS")
	c.expect("S OK")
	c.expectClosed()
	waitFor(t, "session ended", func() bool { return ts.srv.Sessions() == 0 })
	// And the shield's way: a shutdown while a handshake is pending.
	c2 := dial(t, ts.addr)
	c2.expect("* OK")
	c2.send("S STARTTLS")
	c2.expect("S OK")
	waitFor(t, "session tracked", func() bool { return ts.srv.Sessions() == 1 })
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := ts.srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}

// The per-account delay is asked for failed logins only; the Auth hook
// sees both.
func TestAccountDelayOnFailureOnly(t *testing.T) {
	var asked, okAuth, failedAuth atomic.Int32
	ts := startTestHooks(t, nil, Hooks{
		AccountDelay: func(account string, _ netip.Addr) time.Duration {
			asked.Add(1)
			return time.Millisecond
		},
		Auth: func(ok bool) {
			if ok {
				okAuth.Add(1)
			} else {
				failedAuth.Add(1)
			}
		},
	})
	c := dial(t, ts.addr)
	c.expect("* OK")
	c.send("a1 LOGIN alice@example.test wrong")
	c.expect("a1 NO [AUTHENTICATIONFAILED]")
	if asked.Load() != 1 {
		t.Fatalf("AccountDelay asked %d times after a failure", asked.Load())
	}
	c.send(`a2 LOGIN alice@example.test "secret pass"`)
	c.expect("a2 OK")
	if asked.Load() != 1 || okAuth.Load() != 1 || failedAuth.Load() != 1 {
		t.Fatalf("delay asked %d, Auth hook: %d successes, %d failures", asked.Load(), okAuth.Load(), failedAuth.Load())
	}
}

// After STARTTLS the client's bytes are framed as before it (frame.go
// does the handshake below the engine): a refused literal's octets are not
// run as commands inside TLS either, and the session can log in there.
func TestLiteralFramingAfterSTARTTLS(t *testing.T) {
	ts := startTest(t, func(c *Config) { c.AllowInsecureAuthLoopback = false })
	c := dial(t, ts.addr)
	c.expect("* OK")
	c.startTLS()
	c.send(`a1 LOGIN alice@example.test "secret pass"`)
	c.expect("a1 OK")
	c.send("a2 CREATE {5000+}")
	io.WriteString(c.conn, strings.Repeat("X CREATE evil\r\n", 334)[:5000]+"\r\n")
	c.expect("a2 NO [TOOBIG]")
	c.send("a3 APPEND INBOX {26214401+}")
	go io.WriteString(c.conn, strings.Repeat("X CREATE evil\r\n", 1<<20)) // octets on their way
	c.expect("a3 BAD [TOOBIG]")
	c.expect("* BYE Literal too large")
	c.expectClosed()
	if names, err := ts.store.ListFolders(testUser); err != nil || slices.Contains(names, "evil") {
		t.Fatalf("folders %q (%v)", names, err)
	}
}
