package pop3d

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/smtptest"
)

// TestDialogs replays the protocol dialogs in testdata/dialogs, one file
// per case, each against a fresh server, so a new abuse or edge case is one
// small file. Format, one step per line:
//
//	c: STAT                  send a line (CRLF added)
//	raw: text\r\n            send bytes; \r \n \t \\ \xHH are unescaped
//	long: 5000               send "USER " and that many x, then CRLF
//	s: +OK 3                 read a line that starts with this
//	m: 1 | 2 a               read a multi-line body up to "."; each text must be in it
//	closed                   the server has closed the connection
//
// The greeting is read first. User alice@example.test has the password
// "secret pass with spaces" and three messages; MaxErrors is 10.
func TestDialogs(t *testing.T) {
	files, err := filepath.Glob("testdata/dialogs/*.dlg")
	if err != nil || len(files) == 0 {
		t.Fatalf("no dialogs: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".dlg"), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			ts := startTest(t, nil)
			runDialog(t, ts, string(data))
			waitFor(t, "maildrop unlocked", func() bool { return !ts.backend.locked(testUser) })
		})
	}
}

func runDialog(t *testing.T, ts *testServer, script string) {
	c := dial(t, ts.addr)
	c.expect("+OK pop.example.test POP3 agua ready")
	for n, line := range strings.Split(script, "\n") {
		line = strings.TrimRight(line, "\r")
		t.Logf("line %d: %s", n+1, line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case line == "c:" || strings.HasPrefix(line, "c: "):
			c.send(strings.TrimPrefix(line[2:], " "))
		case strings.HasPrefix(line, "raw: "):
			c.raw(smtptest.Unescape(line[5:]))
		case strings.HasPrefix(line, "long: "):
			n, _ := strconv.Atoi(line[6:])
			c.raw("USER " + strings.Repeat("x", n) + "\r\n")
		case strings.HasPrefix(line, "s: "):
			c.expect(line[3:])
		case strings.HasPrefix(line, "m:"):
			body := strings.Join(c.multi(), "\n")
			for _, want := range strings.Split(strings.TrimSpace(line[2:]), " | ") {
				if !strings.Contains(body, want) {
					t.Fatalf("line %d: multi-line response lacks %q:\n%s", n+1, want, body)
				}
			}
		case line == "closed":
			c.expectClosed()
		default:
			t.Fatalf("line %d: bad dialog step %q", n+1, line)
		}
	}
}

// RETR and TOP send CRLF line ends, byte-stuff dot lines and end with a
// terminated last line, whatever the stored file looks like.
func TestRetrWireFormat(t *testing.T) {
	ts := startTest(t, nil)
	c := dial(t, ts.addr)
	c.expect("+OK")
	c.login()
	wire := func(cmd string) string {
		c.send(cmd)
		c.expect("+OK")
		var b strings.Builder
		for {
			l, err := c.r.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			if l == ".\r\n" {
				return b.String()
			}
			b.WriteString(l)
		}
	}
	if got, want := wire("RETR 1"), "Subject: one\r\nFrom: a@example.net\r\n\r\nfirst line\r\n..starts with a dot\r\n...two dots\r\nlast\r\n"; got != want {
		t.Errorf("RETR 1:\n got %q\nwant %q", got, want)
	}
	if got, want := wire("RETR 2"), "Subject: two\r\n\r\nlf only\r\n..dot\r\nno final newline\r\n"; got != want {
		t.Errorf("RETR 2:\n got %q\nwant %q", got, want)
	}
	if got, want := wire("TOP 3 2"), "Subject: three\r\n\r\nb1\r\nb2\r\n"; got != want {
		t.Errorf("TOP 3 2:\n got %q\nwant %q", got, want)
	}
	if got, want := wire("TOP 3 0"), "Subject: three\r\n\r\n"; got != want {
		t.Errorf("TOP 3 0:\n got %q\nwant %q", got, want)
	}
	if got, want := wire("TOP 3 100"), testMessages[2]; got != want {
		t.Errorf("TOP 3 100:\n got %q\nwant %q", got, want)
	}
	c.cmd("QUIT", "+OK")
}

func TestWriteMessageLongLines(t *testing.T) {
	long := strings.Repeat("a", 100000)
	in := "H: x\r\n\r\n" + long + "\r\n." + long + "\n"
	var out bytes.Buffer
	w := bufio.NewWriter(&out)
	if err := writeMessage(w, strings.NewReader(in), -1); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	if want := "H: x\r\n\r\n" + long + "\r\n.." + long + "\r\n"; out.String() != want {
		t.Errorf("long lines mangled (%d bytes, want %d)", out.Len(), len(want))
	}
}

// RETR and TOP read messages through reused buffers: sending one allocates
// nothing (it was a 32 KiB buffer a message), and a reused buffer carries
// nothing of the message before it.
func TestWriteMessageAllocatesNothing(t *testing.T) {
	msgs := []string{"Subject: one\r\n\r\n.first body\r\n", "Subject: two\n\nsecond\n"}
	wants := []string{"Subject: one\r\n\r\n..first body\r\n", "Subject: two\r\n\r\nsecond\r\n"}
	var out bytes.Buffer
	w := bufio.NewWriter(&out)
	sr := strings.NewReader("")
	for i := range 4 {
		out.Reset()
		sr.Reset(msgs[i%2])
		if err := writeMessage(w, sr, -1); err != nil {
			t.Fatal(err)
		}
		w.Flush()
		if out.String() != wants[i%2] {
			t.Fatalf("message %d: %q, want %q", i, out.String(), wants[i%2])
		}
	}
	w = bufio.NewWriter(io.Discard)
	allocs := testing.AllocsPerRun(100, func() {
		sr.Reset(msgs[0])
		if err := writeMessage(w, sr, -1); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations to send a message, want none", allocs)
	}
}

// One session per maildrop: the second gets [IN-USE] and stays in
// AUTHORIZATION, and logs in once the first has quit.
func TestInUse(t *testing.T) {
	ts := startTest(t, nil)
	a := dial(t, ts.addr)
	a.expect("+OK")
	a.login()
	b := dial(t, ts.addr)
	b.expect("+OK")
	b.cmd("USER "+testUser, "+OK")
	b.cmd("PASS "+testPass, "-ERR [IN-USE]")
	b.cmd("STAT", "-ERR Command not valid")
	a.cmd("QUIT", "+OK")
	waitFor(t, "maildrop unlocked", func() bool { return !ts.backend.locked(testUser) })
	b.login()
	b.cmd("STAT", "+OK 3 ")
}

// DELE only marks: a connection that drops before QUIT deletes nothing and
// releases the lock; QUIT deletes.
func TestDeleOnlyOnQuit(t *testing.T) {
	ts := startTest(t, nil)
	c := dial(t, ts.addr)
	c.expect("+OK")
	c.login()
	c.cmd("DELE 1", "+OK")
	c.cmd("DELE 2", "+OK")
	c.conn.Close()
	waitFor(t, "maildrop unlocked", func() bool { return !ts.backend.locked(testUser) })
	if n := ts.backend.count(testUser); n != 3 || ts.backend.updates != 0 {
		t.Fatalf("after a dropped connection: %d messages, %d updates", n, ts.backend.updates)
	}
	c = dial(t, ts.addr)
	c.expect("+OK")
	c.login()
	c.cmd("DELE 1", "+OK")
	c.cmd("RSET", "+OK Maildrop has 3 messages")
	c.cmd("DELE 2", "+OK")
	c.cmd("QUIT", "+OK pop.example.test POP3 agua signing off (2 messages left)")
	waitFor(t, "maildrop unlocked", func() bool { return !ts.backend.locked(testUser) })
	if n := ts.backend.count(testUser); n != 2 {
		t.Fatalf("after QUIT: %d messages", n)
	}
}

func TestUpdateFailure(t *testing.T) {
	ts := startTest(t, nil)
	ts.backend.boxes[testUser].failUpd = true
	c := dial(t, ts.addr)
	c.expect("+OK")
	c.login()
	c.cmd("DELE 1", "+OK")
	c.cmd("QUIT", "-ERR [SYS/TEMP] Some deleted messages were not removed")
	c.expectClosed()
	// The cause is logged, never sent.
	waitFor(t, "cause logged", func() bool { return strings.Contains(ts.logs.String(), "disk on fire") })
}

// Without TLS (and without the loopback exception) no login is possible:
// CAPA hides USER and SASL, USER/PASS/AUTH are refused; after STLS all
// work.
func TestSTLS(t *testing.T) {
	ts := startTest(t, func(c *Config) { c.AllowInsecureAuthLoopback = false })
	c := dial(t, ts.addr)
	c.expect("+OK")
	c.send("CAPA")
	c.expect("+OK")
	capa := strings.Join(c.multi(), "\n")
	if !strings.Contains(capa, "STLS") || strings.Contains(capa, "USER") || strings.Contains(capa, "SASL") {
		t.Fatalf("CAPA before TLS: %q", capa)
	}
	c.cmd("USER "+testUser, "-ERR [AUTH] Plaintext authentication disallowed")
	c.cmd("PASS "+testPass, "-ERR [AUTH] Plaintext authentication disallowed")
	c.cmd("AUTH PLAIN "+plain(testUser, testPass), "-ERR [AUTH] Plaintext")
	// Pipelined after STLS: refused and closed; the CAPA is never run.
	c.raw("STLS\r\nCAPA\r\n")
	c.expect("-ERR Commands pipelined after STLS are not allowed; closing")
	c.expectClosed()
	c = dial(t, ts.addr)
	c.expect("+OK")
	c.startTLS()
	c.send("CAPA")
	c.expect("+OK")
	capa = strings.Join(c.multi(), "\n")
	if strings.Contains(capa, "STLS") || !strings.Contains(capa, "USER") || !strings.Contains(capa, "SASL PLAIN") {
		t.Fatalf("CAPA after TLS: %q", capa)
	}
	c.cmd("STLS", "-ERR STLS not available")
	c.cmd("AUTH PLAIN "+plain(testUser, testPass), "+OK Logged in")
	c.cmd("STAT", "+OK 3 ")
	c.cmd("QUIT", "+OK")
}

func TestImplicitTLS(t *testing.T) {
	ts := startTest(t, func(c *Config) { c.ImplicitTLS = true; c.AllowInsecureAuthLoopback = false })
	conn, err := tls.Dial("tcp", ts.addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := &client{t: t, conn: conn, r: bufio.NewReader(conn)}
	c.expect("+OK")
	c.send("CAPA")
	c.expect("+OK")
	if capa := strings.Join(c.multi(), "\n"); strings.Contains(capa, "STLS") || !strings.Contains(capa, "USER") {
		t.Fatalf("CAPA on POP3S: %q", capa)
	}
	c.login()
	c.cmd("QUIT", "+OK")

	// Plain text on the TLS port: no POP3 reply at all.
	p := dial(t, ts.addr)
	p.send("USER " + testUser)
	p.expectClosed()
}

func TestTimeouts(t *testing.T) {
	ts := startTest(t, func(c *Config) {
		c.PreAuthTimeout = 100 * time.Millisecond
		c.IdleTimeout = 10 * time.Second
	})
	c := dial(t, ts.addr)
	c.expect("+OK")
	c.expect("-ERR Disconnected for inactivity")
	c.expectClosed()

	// After login the (longer) idle timeout applies; the lock goes with
	// the session and nothing is deleted.
	ts = startTest(t, func(c *Config) {
		c.PreAuthTimeout = 10 * time.Second
		c.IdleTimeout = 100 * time.Millisecond
	})
	c = dial(t, ts.addr)
	c.expect("+OK")
	c.login()
	c.cmd("DELE 1", "+OK")
	c.expect("-ERR Disconnected for inactivity")
	c.expectClosed()
	waitFor(t, "maildrop unlocked", func() bool { return !ts.backend.locked(testUser) })
	if n := ts.backend.count(testUser); n != 3 {
		t.Fatalf("%d messages after an idle timeout", n)
	}

	ts = startTest(t, func(c *Config) { c.SessionTimeout = 300 * time.Millisecond })
	c = dial(t, ts.addr)
	c.expect("+OK")
	c.login()
	c.expect("-ERR Session time limit exceeded")
	c.expectClosed()
	waitFor(t, "maildrop unlocked", func() bool { return !ts.backend.locked(testUser) })
}

// A panic in a session is answered, counted and logged; the server goes on.
func TestPanicRecovered(t *testing.T) {
	ts := startTest(t, nil)
	c := dial(t, ts.addr)
	c.expect("+OK")
	c.cmd("USER panic@example.test", "+OK")
	c.cmd("PASS x", "-ERR [SYS/TEMP] Internal error")
	c.expectClosed()
	if ts.srv.Panics() != 1 {
		t.Fatalf("panics = %d", ts.srv.Panics())
	}
	c = dial(t, ts.addr)
	c.expect("+OK")
	c.login()
}

// The per-account delay is asked for failed logins only, so the real user
// never waits because of an attack on their account.
func TestAccountDelayOnFailureOnly(t *testing.T) {
	var asked, okAuth, failedAuth atomic.Int32
	ts := startTestHooks(t, nil, Hooks{
		AccountDelay: func(account string, _ netip.Addr) time.Duration {
			asked.Add(1)
			return time.Millisecond
		},
		Auth: func(s *Session, ok bool) {
			if ok {
				okAuth.Add(1)
			} else {
				failedAuth.Add(1)
			}
		},
	})
	c := dial(t, ts.addr)
	c.expect("+OK")
	c.cmd("USER "+testUser, "+OK")
	c.cmd("PASS wrong", "-ERR [AUTH]")
	if asked.Load() != 1 {
		t.Fatalf("AccountDelay asked %d times after a failure", asked.Load())
	}
	c.login()
	if asked.Load() != 1 {
		t.Fatalf("AccountDelay asked %d times after a success", asked.Load())
	}
	if okAuth.Load() != 1 || failedAuth.Load() != 1 {
		t.Fatalf("Auth hook: %d successes, %d failures", okAuth.Load(), failedAuth.Load())
	}
}

// FuzzSession feeds arbitrary command lines into a logged-in-capable
// session over net.Pipe: the session must never panic, always end, and
// always release the maildrop lock.
func FuzzSession(f *testing.F) {
	seeds := []string{
		"CAPA\r\nQUIT\r\n",
		"USER alice@example.test\r\nPASS secret pass with spaces\r\nSTAT\r\nLIST\r\nUIDL\r\nRETR 1\r\nTOP 2 1\r\nDELE 1\r\nRSET\r\nNOOP\r\nQUIT\r\n",
		"AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQgcGFzcyB3aXRoIHNwYWNlcw==\r\nDELE 2\r\nLIST 2\r\nTOP 1 x\r\n",
		"AUTH PLAIN\r\n*\r\nAUTH\r\nAUTH X\r\n",
		"USER a\r\nPASS\r\nPASS \r\nUSER\r\n",
		"GET / HTTP/1.1\r\n",
		"STLS\r\n",
		"\x00\xff\r\n\n\r\n.\r\n",
		"LIST 99999999999\r\nRETR -1\r\n",
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, input string) {
		b := newFakeBackend()
		srv, err := NewServer(Config{Hostname: "fuzz", AllowInsecureAuthLoopback: true, PreAuthTimeout: time.Second, IdleTimeout: time.Second, SessionTimeout: 5 * time.Second}, b, Hooks{}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		server, cl := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			srv.serveConn(pipeConn{server})
		}()
		go io.Copy(io.Discard, cl)
		cl.SetWriteDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(cl, input)
		io.WriteString(cl, "\r\nQUIT\r\n")
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("session did not end")
		}
		cl.Close()
		if srv.Panics() != 0 {
			t.Fatal("session panicked")
		}
		if b.locked(testUser) {
			t.Fatal("maildrop still locked after the session")
		}
	})
}

// pipeConn gives net.Pipe a loopback TCP address, so the loopback login
// exception applies as on a real socket.
type pipeConn struct{ net.Conn }

func (pipeConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

// Shutdown answers idle sessions at once and deletes nothing for them.
func TestShutdown(t *testing.T) {
	ts := startTest(t, nil)
	a := dial(t, ts.addr)
	a.expect("+OK")
	a.login()
	a.cmd("DELE 1", "+OK")
	b := dial(t, ts.addr)
	b.expect("+OK")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := ts.srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	for _, c := range []*client{a, b} {
		c.expect("-ERR [SYS/TEMP] Server shutting down")
		c.expectClosed()
	}
	if n := ts.backend.count(testUser); n != 3 || ts.backend.locked(testUser) {
		t.Fatalf("after shutdown: %d messages, locked %v", n, ts.backend.locked(testUser))
	}
}
