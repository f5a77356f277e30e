package server

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/pg/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// onPostgres puts the accounts of a test server on the database at url.
func onPostgres(url string) func(*config.Config) {
	return func(cfg *config.Config) {
		cfg.Postgres.URL = url
		cfg.Postgres.Accounts = true
		cfg.Postgres.Migrate = true
	}
}

// accountChecks runs a login on POP3, IMAP and SMTP AUTH, and a RCPT to
// the test user, and returns the four replies.
func accountChecks(t *testing.T, ts *testServer) (pop3, imap, auth, rcpt string) {
	t.Helper()
	p := dialPOP(t, ts.srv.Addr("pop3"), "")
	defer p.conn.Close()
	p.do("USER "+testUser, "+OK")
	pop3 = p.do("PASS "+testPass, "")

	i := dialIMAP(t, ts.srv.Addr("imap"), "")
	defer i.conn.Close()
	imap = i.do(fmt.Sprintf(`a1 LOGIN %s "%s"`, testUser, testPass), "a1 ")

	s := dial(t, ts.srv.Addr("submission"))
	defer s.conn.Close()
	s.expect("220 ")
	s.cmd("EHLO client.example", "250")
	auth = s.cmd("AUTH PLAIN "+plainAuth(testUser, testPass), "")

	m := dial(t, ts.srv.Addr("smtp"))
	defer m.conn.Close()
	m.expect("220 ")
	m.cmd("EHLO sender.example", "250")
	m.cmd("MAIL FROM:<someone@elsewhere.example>", "250")
	rcpt = m.cmd("RCPT TO:<"+testUser+">", "")
	return pop3, imap, auth, rcpt
}

// TestAccountsOnPostgresDown: with the accounts on PostgreSQL, a database
// that dies makes logins and RCPT temporary failures, never "wrong
// password" or "no such user"; when it is back, the same running agua
// serves again (its pool and its change listener reconnect by themselves).
func TestAccountsOnPostgresDown(t *testing.T) {
	db := pgtest.Start(t)
	ts := startServer(t, onPostgres(db.NewDatabase(t)))
	live := func() bool {
		l, ok := ts.srv.dir.(interface{ Live() bool })
		return ok && l.Live()
	}
	pop3, imap, auth, rcpt := accountChecks(t, ts)
	if !strings.HasPrefix(pop3, "+OK") || !strings.HasPrefix(imap, "a1 OK") || !strings.HasPrefix(auth, "235 ") || !strings.HasPrefix(rcpt, "250 ") {
		t.Fatalf("with PostgreSQL up: %q %q %q %q", pop3, imap, auth, rcpt)
	}
	if !live() {
		t.Fatal("the directory is not listening for changes")
	}

	db.Kill()
	waitFor(t, "the change listener to notice", func() bool { return !live() })
	pop3, imap, auth, rcpt = accountChecks(t, ts)
	for _, c := range []struct{ proto, got, want string }{
		{"POP3 PASS", pop3, "-ERR [SYS/TEMP]"},
		{"IMAP LOGIN", imap, "a1 NO [UNAVAILABLE]"},
		{"SMTP AUTH", auth, "454 4.7.0"},
		{"RCPT", rcpt, "451 4.3.0"},
	} {
		if !strings.HasPrefix(c.got, c.want) {
			t.Errorf("%s with PostgreSQL down: %q, want %q", c.proto, c.got, c.want)
		}
	}

	db.Restart()
	waitFor(t, "logins to work again", func() bool {
		pop3, imap, auth, rcpt = accountChecks(t, ts)
		return strings.HasPrefix(pop3, "+OK") && strings.HasPrefix(imap, "a1 OK") && strings.HasPrefix(auth, "235 ") && strings.HasPrefix(rcpt, "250 ")
	})
	waitFor(t, "the change listener to be back", live)
}

// The first start of two nodes at once on an empty PostgreSQL directory:
// both start, exactly one demo user exists, and its printed password works.
func TestDemoOnPostgres(t *testing.T) {
	url := pgtest.Shared(t).NewDatabase(t)
	type started struct {
		srv *Server
		out string
		err error
	}
	results := make(chan started, 2)
	for range 2 {
		cfg := serverConfig(t, func(cfg *config.Config) {
			onPostgres(url)(cfg)
			cfg.Accounts.Demo = true
		})
		go func() {
			var out bytes.Buffer
			srv, err := New(cfg, slog.New(slog.DiscardHandler), &out)
			results <- started{srv, out.String(), err}
		}()
	}
	var passwords []string
	for range 2 {
		r := <-results
		if r.err != nil {
			t.Fatalf("node start: %v", r.err)
		}
		t.Cleanup(func() { r.srv.Close() })
		if _, pw, ok := strings.Cut(r.out, "password: "); ok && !strings.Contains(r.out, "Another node") {
			passwords = append(passwords, strings.Fields(pw)[0])
		}
	}
	if len(passwords) != 1 {
		t.Fatalf("%d nodes claim the demo password, want 1", len(passwords))
	}
	d, err := OpenDirectory(serverConfig(t, onPostgres(url)), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.Authenticate(context.Background(), "demo@example.test", passwords[0]); err != nil {
		t.Fatalf("the printed demo password: %v", err)
	}
}
