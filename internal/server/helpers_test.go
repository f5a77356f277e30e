package server

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
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

	"github.com/agua-mail/agua/internal/accounts"
	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/resolver/dnstest"
	"github.com/agua-mail/agua/internal/smtptest"
)

// testServer is a real agua on loopback ports chosen by the kernel, with a
// second handle on its accounts database (as the CLI would have).
type testServer struct {
	srv  *Server
	cfg  config.Config
	dir  accounts.Directory
	logs *logBuffer
}

const (
	testDomain = "example.test"
	testUser   = "alice@example.test"
	testPass   = "correct horse battery"
)

// startServer starts agua with the test config (every listener on a port
// the kernel picks, mutate applied) and a domain with one user.
// Benchmarks (t a *testing.B) get the server's log as production does, at
// info level, formatted and discarded, instead of collected at debug level.
func startServer(t testing.TB, mutate func(*config.Config)) *testServer {
	t.Helper()
	cfg := serverConfig(t, mutate)
	logs := &logBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if _, ok := t.(*testing.B); ok {
		log = slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	srv, err := New(cfg, log, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	dir, err := OpenDirectory(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("server did not shut down")
		}
		dir.Close()
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	ts := &testServer{srv: srv, cfg: cfg, dir: dir, logs: logs}
	ctxb := context.Background()
	// Nodes sharing accounts on PostgreSQL: the first one adds them.
	shared := cfg.Postgres.Accounts
	if err := dir.AddDomain(ctxb, testDomain); err != nil && !(shared && errors.Is(err, accounts.ErrExists)) {
		t.Fatal(err)
	}
	if err := dir.AddUser(ctxb, testUser, testPass, 0); err != nil && !(shared && errors.Is(err, accounts.ErrExists)) {
		t.Fatal(err)
	}
	return ts
}

// serverConfig is the config of startServer: loopback ports chosen by the
// kernel, no demo, no login delays, changed by mutate.
func serverConfig(t testing.TB, mutate func(*config.Config)) config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Accounts.Demo = false
	cfg.SMTP.Listen = []string{"127.0.0.1:0"}
	cfg.SMTP.SubmissionListen = []string{"127.0.0.1:0"}
	cfg.SMTP.SubmissionsListen = []string{"127.0.0.1:0"}
	cfg.SMTP.AuthDelay = 0
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.POP3.Listen = []string{"127.0.0.1:0"}
	cfg.POP3.TLSListen = []string{"127.0.0.1:0"}
	cfg.POP3.AuthDelay = 0
	cfg.IMAP.Listen = []string{"127.0.0.1:0"}
	cfg.IMAP.TLSListen = []string{"127.0.0.1:0"}
	cfg.IMAP.AuthDelay = 0
	// Mail queued for other domains is looked up here, never in the
	// system's DNS: a server that knows no names.
	cfg.DNS.Resolver = []string{dnstest.Start(t, "127.0.0.1").Addr}
	if mutate != nil {
		mutate(&cfg)
	}
	if probs := cfg.Validate(); len(probs) > 0 {
		t.Fatalf("test config invalid: %v", probs)
	}
	return cfg
}

// logBuffer collects the server's log for failed tests.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// messages returns the files delivered to a mailbox (new/ and cur/).
func (ts *testServer) messages(t *testing.T, mailbox string) []string {
	t.Helper()
	local, domain, _ := strings.Cut(mailbox, "@")
	var out []string
	for _, sub := range []string{"new", "cur"} {
		dir := filepath.Join(ts.cfg.DataDir, "mail", domain, local, sub)
		ents, err := os.ReadDir(dir)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, string(b))
		}
	}
	return out
}

// client speaks SMTP line by line, as a test script would: smtptest's
// client, kept under these names and fields because the IMAP and POP3
// tests here build on it.
type client struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	return dialFrom(t, addr, "")
}

// dialFrom connects from a chosen loopback source address ("" = default).
func dialFrom(t *testing.T, addr, src string) *client {
	t.Helper()
	s := smtptest.DialFrom(t, addr, src)
	return &client{t: t, conn: s.Conn, r: s.R}
}

func (c *client) smtp() *smtptest.Client { return smtptest.On(c.t, c.conn, c.r) }

func (c *client) send(line string) { c.t.Helper(); c.smtp().Send(line) }
func (c *client) raw(s string)     { c.t.Helper(); c.smtp().Raw(s) }

// reply reads one (possibly multi-line) reply and returns its lines.
func (c *client) reply() ([]string, error) { return c.smtp().Reply() }

// expect: see smtptest.Client.Expect.
func (c *client) expect(want string) string { c.t.Helper(); return c.smtp().Expect(want) }

// cmd sends a line and expects a reply prefix.
func (c *client) cmd(line, prefix string) string { c.t.Helper(); return c.smtp().Cmd(line, prefix) }

// expectClosed checks the server closed the connection.
func (c *client) expectClosed() { c.t.Helper(); c.smtp().ExpectClosed() }

func (c *client) startTLS() {
	c.t.Helper()
	s := c.smtp()
	s.StartTLS()
	c.conn, c.r = s.Conn, s.R
}

func plainAuth(user, pass string) string {
	return base64Std("\x00" + user + "\x00" + pass)
}

// deliver runs one full transaction and returns the reply to the data.
func (c *client) deliver(from string, rcpts []string, body string) string {
	c.t.Helper()
	c.cmd(fmt.Sprintf("MAIL FROM:<%s>", from), "250")
	for _, r := range rcpts {
		c.cmd(fmt.Sprintf("RCPT TO:<%s>", r), "250")
	}
	c.cmd("DATA", "354")
	c.raw(body)
	c.raw(".\r\n")
	lines, err := c.reply()
	if err != nil {
		c.t.Fatalf("after data: %v", err)
	}
	return strings.Join(lines, "\n")
}

func base64Std(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func appendFile(t *testing.T, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
}

// expectDropped dials from src and checks the server sent nothing and
// closed. A drop resets the connection, and on loopback the reset can beat
// connect() back, so a dial refused or reset counts as dropped too.
func expectDropped(t *testing.T, addr, src string) {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	if n, err := c.Read(buf); err == nil {
		t.Fatalf("want the connection from %s dropped, got %q", src, buf[:n])
	}
}
