package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/agua-mail/agua/internal/accounts"
	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/mailstore/storetest"
	"github.com/agua-mail/agua/internal/pg/pgtest"
	"github.com/agua-mail/agua/internal/smtptest"
)

// pgMailNode returns the config changes of a node keeping its mailboxes
// on the PostgreSQL database url ([postgres] mail), listening on ip.
func pgMailNode(url, ip string) func(*config.Config) {
	return func(cfg *config.Config) {
		cfg.Postgres.URL, cfg.Postgres.Mail, cfg.Postgres.Migrate = url, true, true
		cfg.SMTP.Listen = []string{ip + ":0"}
		cfg.SMTP.SubmissionListen, cfg.SMTP.SubmissionsListen = nil, nil
		cfg.POP3.Listen, cfg.POP3.TLSListen = []string{ip + ":0"}, nil
		cfg.IMAP.Listen, cfg.IMAP.TLSListen = []string{ip + ":0"}, nil
	}
}

// The "done when": mail delivered through node 1 is read with POP3
// on node 2 and announced to an IMAP client IDLE on node 3, the three
// nodes sharing one PostgreSQL (each has its own accounts file here;
// TestPostgresClusterThreeNodes puts every part on PostgreSQL).
func TestPostgresMailThreeNodes(t *testing.T) {
	url := pgtest.Start(t).NewDatabase(t)
	var nodes [3]*testServer
	for i := range nodes {
		nodes[i] = startServer(t, pgMailNode(url, fmt.Sprintf("127.0.1.%d", i+1)))
	}
	acrossNodes(t, nodes)
}

// The README's three-node setup: accounts, mailboxes and the outbound
// queue on one PostgreSQL. Besides the mail crossing nodes, a password
// changed through node 3 is the one node 1 accepts, and a user added on
// node 2 receives mail through node 1 at once.
func TestPostgresClusterThreeNodes(t *testing.T) {
	url := pgtest.Start(t).NewDatabase(t)
	var nodes [3]*testServer
	for i := range nodes {
		mail := pgMailNode(url, fmt.Sprintf("127.0.1.%d", i+1))
		nodes[i] = startServer(t, func(cfg *config.Config) {
			mail(cfg)
			cfg.Postgres.Accounts, cfg.Postgres.Queue = true, true
		})
	}
	acrossNodes(t, nodes)

	ctx := context.Background()
	// Node 1 remembers the login (its cache), then node 3 changes it.
	if _, err := nodes[0].srv.dir.Authenticate(ctx, testUser, testPass); err != nil {
		t.Fatal(err)
	}
	if err := nodes[2].dir.SetPassword(ctx, testUser, "changed on node 3"); err != nil {
		t.Fatal(err)
	}
	waitForCond(t, "node 1 refuses the old password", func() bool {
		_, err := nodes[0].srv.dir.Authenticate(ctx, testUser, testPass)
		return errors.Is(err, accounts.ErrAuthFailed)
	})
	if _, err := nodes[0].srv.dir.Authenticate(ctx, testUser, "changed on node 3"); err != nil {
		t.Fatalf("node 1 with the password set through node 3: %v", err)
	}
	if err := nodes[1].dir.AddUser(ctx, "bob@"+testDomain, "bob's password", 0); err != nil {
		t.Fatal(err)
	}
	waitForCond(t, "node 1 knows bob", func() bool {
		us, err := nodes[0].srv.dir.Resolve(ctx, "bob@"+testDomain)
		return err == nil && len(us) == 1
	})
	sendMail(t, nodes[0].srv.Addr("smtp"), "bob@"+testDomain, "for bob", "added on node 2\r\n")
	p := &imapc{dialFrom(t, nodes[2].srv.Addr("pop3"), "127.0.1.3")}
	p.line("+OK")
	p.do("USER bob@"+testDomain, "+OK")
	p.do("PASS bob's password", "+OK")
	p.do("STAT", "+OK 1 ")
	p.do("QUIT", "+OK")
}

// acrossNodes: delivered on node 1, seen by IMAP IDLE on node 3, read with
// POP3 on node 2.
func acrossNodes(t *testing.T, nodes [3]*testServer) {
	t.Helper()
	var exists atomic.Uint32
	c := imapLogin(t, nodes[2].srv.Addr("imap"), &imapclient.Options{UnilateralDataHandler: &imapclient.UnilateralDataHandler{
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil {
				exists.Store(*d.NumMessages)
			}
		},
	}})
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil || sel.NumMessages != 0 {
		t.Fatalf("select on node 3: %+v %v", sel, err)
	}
	idle, err := c.Idle()
	if err != nil {
		t.Fatal(err)
	}
	sendMail(t, nodes[0].srv.Addr("smtp"), testUser, "across nodes", "delivered on node 1\r\n")
	waitForCond(t, "EXISTS 1 during IDLE on node 3", func() bool { return exists.Load() == 1 })
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatal(err)
	}
	p := &imapc{dialFrom(t, nodes[1].srv.Addr("pop3"), "127.0.1.2")}
	p.line("+OK")
	p.do("USER "+testUser, "+OK")
	p.do("PASS "+testPass, "+OK")
	p.do("STAT", "+OK 1 ")
	p.send("RETR 1")
	p.line("+OK")
	var body strings.Builder
	for l := p.line(""); l != "."; l = p.line("") {
		body.WriteString(l + "\n")
	}
	if !strings.Contains(body.String(), "Subject: across nodes") || !strings.Contains(body.String(), "delivered on node 1") {
		t.Fatalf("RETR on node 2:\n%s", body.String())
	}
	p.do("QUIT", "+OK")
}

// PostgreSQL down: nothing is acknowledged that was not committed, and
// every protocol answers with its temporary error: SMTP 451 4.3.0 after
// DATA (and at RCPT, where the quota is read), POP3 -ERR [SYS/TEMP], IMAP
// NO [UNAVAILABLE] (RFC 5530). Once PostgreSQL is back, the same server
// delivers and serves again without a restart.
func TestPostgresMailDatabaseDown(t *testing.T) {
	db := pgtest.Start(t)
	url := db.NewDatabase(t)
	ts := startServer(t, pgMailNode(url, "127.0.1.4"))
	smtpAddr, pop3Addr, imapAddr := ts.srv.Addr("smtp"), ts.srv.Addr("pop3"), ts.srv.Addr("imap")
	sendMail(t, smtpAddr, testUser, "before", "stored before the outage\r\n")

	// A transaction whose recipient was accepted while the database was
	// up, and whose data ends after it went down.
	c := dial(t, smtpAddr)
	c.expect("220 ")
	c.cmd("EHLO sender.example", "250")
	c.cmd("MAIL FROM:<someone@elsewhere.example>", "250")
	c.cmd("RCPT TO:<"+testUser+">", "250")
	c.cmd("DATA", "354")
	db.Kill()
	c.raw("Subject: during\r\n\r\nnever acknowledged\r\n.\r\n")
	c.expect("451 4.3.0 ")
	// A new recipient now: the quota cannot be read.
	c.cmd("RSET", "250")
	c.cmd("MAIL FROM:<someone@elsewhere.example>", "250")
	c.cmd("RCPT TO:<"+testUser+">", "451 4.3.0 ")
	c.cmd("QUIT", "221")

	p := &imapc{dialFrom(t, pop3Addr, "127.0.1.4")}
	p.line("+OK")
	p.do("USER "+testUser, "+OK")
	p.do("PASS "+testPass, "-ERR [SYS/TEMP] ")

	m := dialIMAP(t, imapAddr, "127.0.1.4")
	m.do("a LOGIN "+testUser+` "`+testPass+`"`, "a OK")
	m.do("b SELECT INBOX", "b NO [UNAVAILABLE] ")

	db.Restart()
	// Back: the pool reconnects by itself. The first attempts may still
	// meet a connection that died with the old server (4xx, as a client
	// retries); a delivery is accepted within the deadline.
	deadline := time.Now().Add(30 * time.Second)
	for {
		c := dial(t, smtpAddr)
		c.expect("220 ")
		c.cmd("EHLO sender.example", "250")
		c.cmd("MAIL FROM:<someone@elsewhere.example>", "250")
		c.send("RCPT TO:<" + testUser + ">")
		reply := c.expect("")
		if strings.HasPrefix(reply, "250") {
			c.cmd("DATA", "354")
			c.raw("Subject: after\r\n\r\nstored after the outage\r\n.\r\n")
			reply = c.expect("")
		}
		c.conn.Close()
		if strings.HasPrefix(reply, "250 ") {
			break
		}
		if !strings.HasPrefix(reply, "4") || time.Now().After(deadline) {
			t.Fatalf("delivery after PostgreSQL restarted: %q", reply)
		}
		time.Sleep(100 * time.Millisecond)
	}
	m.send("c SELECT INBOX")
	l := m.line("")
	for ; !strings.HasPrefix(l, "c "); l = m.line("") {
		if strings.HasSuffix(l, " EXISTS") && l != "* 2 EXISTS" {
			t.Fatalf("after the outage: %q, want the messages before and after it only", l)
		}
	}
	if !strings.HasPrefix(l, "c OK") {
		t.Fatalf("SELECT after the outage: %q", l)
	}
	p = &imapc{dialFrom(t, pop3Addr, "127.0.1.4")}
	p.line("+OK")
	p.do("USER "+testUser, "+OK")
	p.do("PASS "+testPass, "+OK")
	p.do("STAT", "+OK 2 ")
	p.do("QUIT", "+OK")
}

// The fault "PostgreSQL restart under load": twelve clients
// deliver while PostgreSQL is killed and started again. Every reply is
// 250 or a temporary 4xx (never a permanent refusal for the outage),
// every 250'd message is in the mailbox exactly once, and the node
// accepts mail again after the restart by itself.
func TestPostgresMailRestartUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test skipped in -short")
	}
	db := pgtest.Start(t)
	ts := startServer(t, pgMailNode(db.NewDatabase(t), "127.0.1.8"))
	addr := ts.srv.Addr("smtp")
	var (
		mu       sync.Mutex
		acked    = map[string]bool{}
		refused  []string
		phase    atomic.Int32 // 0 before the kill, 1 down, 2 restarted
		afterRun atomic.Int32 // 250s after the restart
		temps    atomic.Int32 // 4xx replies while PostgreSQL was down
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 12 {
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				subject := fmt.Sprintf("load-w%d-n%d", w, n)
				reply, err := smtptest.Deliver(addr, "127.0.1.8", "someone@elsewhere.example", testUser, "Subject: "+subject+"\r\n\r\nunder load\r\n")
				if err != nil {
					mu.Lock()
					refused = append(refused, subject+": "+err.Error())
					mu.Unlock()
					continue
				}
				mu.Lock()
				switch {
				case strings.HasPrefix(reply, "250 "):
					acked[subject] = true
					if phase.Load() == 2 {
						afterRun.Add(1)
					}
				case strings.HasPrefix(reply, "4"):
					if phase.Load() == 1 {
						temps.Add(1)
					}
				default:
					refused = append(refused, subject+": "+reply)
				}
				mu.Unlock()
			}
		})
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	waitForCond(t, "30 deliveries before the kill", func() bool { return count() >= 30 })
	phase.Store(1)
	db.Kill()
	waitForCond(t, "4xx replies while PostgreSQL is down", func() bool { return temps.Load() >= 12 })
	db.Restart()
	phase.Store(2)
	deadline := time.Now().Add(60 * time.Second)
	for afterRun.Load() < 30 {
		if time.Now().After(deadline) {
			t.Fatalf("%d deliveries accepted within 60 s of the restart", afterRun.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if len(refused) > 0 {
		t.Fatalf("%d deliveries failed other than with 4xx, e.g. %q", len(refused), refused[0])
	}
	found := map[string]int{}
	for _, m := range pgMailbox(t, ts) {
		_, rest, _ := strings.Cut(m, "\r\nSubject: ")
		subject, _, _ := strings.Cut(rest, "\r\n")
		found[subject]++
	}
	for s := range acked {
		if found[s] != 1 {
			t.Errorf("acknowledged message %s found %d times", s, found[s])
		}
	}
	for s, n := range found {
		if n > 1 {
			t.Errorf("message %s stored %d times", s, n)
		}
	}
	t.Logf("%d acknowledged, %d stored", len(acked), len(found))
}

// pgMailbox returns the messages in the test user's INBOX, read through
// the server's own store.
func pgMailbox(t *testing.T, ts *testServer) []string {
	t.Helper()
	return storetest.Contents(t, ts.srv.mail.read, testUser, "")
}
