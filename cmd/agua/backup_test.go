package main

import (
	"bufio"
	"fmt"
	"net"
	"net/smtp"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/backup"
	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/server"
)

// startAgua runs a server on data with loopback listeners on free ports
// until stop is called (or the test ends).
func startAgua(t *testing.T, data string) (*server.Server, func()) {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = data
	cfg.Accounts.Demo = false
	cfg.SMTP.Listen = []string{"127.0.0.1:0"}
	cfg.SMTP.SubmissionListen, cfg.SMTP.SubmissionsListen = nil, nil
	cfg.Admin.Listen = ""
	cfg.POP3.Listen, cfg.POP3.TLSListen = []string{"127.0.0.1:0"}, nil
	cfg.IMAP.Listen, cfg.IMAP.TLSListen = []string{"127.0.0.1:0"}, nil
	cfg.POP3.AuthDelay, cfg.IMAP.AuthDelay, cfg.SMTP.AuthDelay = 0, 0, 0
	return runServer(t, cfg, nil)
}

// deliverFrom sends one message over SMTP from the loopback address src
// and reports whether the server acknowledged it (250 after DATA).
func deliverFrom(addr, src, rcpt, token string) error {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return err
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	c, err := smtp.NewClient(conn, "localhost")
	if err != nil {
		conn.Close()
		return err
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		return err
	}
	if err := c.Mail("sender@client.test"); err != nil {
		return err
	}
	if err := c.Rcpt(rcpt); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "From: sender@client.test\r\nTo: %s\r\nSubject: %s\r\n\r\nbody of %s\r\n", rcpt, token, token)
	if err := w.Close(); err != nil { // the 250 reply: the message is on disk
		return err
	}
	return c.Quit()
}

// dialSrc connects from the loopback address src; the connection closes
// when the test ends.
func dialSrc(t *testing.T, addr, src string) (net.Conn, *bufio.Reader) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	return conn, bufio.NewReader(conn)
}

// pop3Tokens logs in over POP3 from src and returns the Subject of every
// message in the maildrop.
func pop3Tokens(t *testing.T, addr, src, user, pass string) map[string]bool {
	t.Helper()
	conn, r := dialSrc(t, addr, src)
	line := func() string {
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("pop3: %v", err)
		}
		return strings.TrimRight(l, "\r\n")
	}
	cmd := func(s string) string {
		fmt.Fprintf(conn, "%s\r\n", s)
		l := line()
		if !strings.HasPrefix(l, "+OK") {
			t.Fatalf("pop3 %q: %q", strings.Fields(s)[0], l)
		}
		return l
	}
	line() // greeting
	cmd("USER " + user)
	cmd("PASS " + pass)
	var n int
	fmt.Sscanf(cmd("STAT"), "+OK %d", &n)
	got := map[string]bool{}
	for i := 1; i <= n; i++ {
		cmd(fmt.Sprintf("TOP %d 0", i))
		for l := line(); l != "."; l = line() {
			if s, ok := strings.CutPrefix(l, "Subject: "); ok {
				got[s] = true
			}
		}
	}
	cmd("QUIT")
	return got
}

// imapTouch selects INBOX (new mail moves to cur/) and sets or clears
// \Flagged on every message (files in cur/ are renamed).
func imapTouch(addr, src, user, pass string, set bool) error {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(conn)
	op := map[bool]string{true: "+", false: "-"}[set]
	fmt.Fprintf(conn, "a LOGIN %s \"%s\"\r\nb SELECT INBOX\r\nc STORE 1:* %sFLAGS (\\Flagged)\r\nd LOGOUT\r\n", user, pass, op)
	for {
		l, err := r.ReadString('\n')
		if err != nil || strings.HasPrefix(l, "d ") {
			return err
		}
	}
}

// imapCount logs in over IMAP and returns the number of messages in INBOX.
func imapCount(t *testing.T, addr, src, user, pass string) int {
	t.Helper()
	conn, r := dialSrc(t, addr, src)
	r.ReadString('\n')
	exists := -1
	for _, c := range []string{"a LOGIN " + user + " \"" + pass + "\"", "b SELECT INBOX", "c LOGOUT"} {
		fmt.Fprintf(conn, "%s\r\n", c)
		tag := c[:1] + " "
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("imap %s: %v", c, err)
			}
			var n int
			if _, err := fmt.Sscanf(l, "* %d EXISTS", &n); err == nil {
				exists = n
			}
			if strings.HasPrefix(l, tag) {
				if !strings.HasPrefix(l, tag+"OK") {
					t.Fatalf("imap %q: %q", strings.Fields(c)[1], l)
				}
				break
			}
		}
	}
	return exists
}

// agua backup runs while legitimate clients (non-allowlisted loopback
// addresses) deliver mail; the backup restored into a new folder and
// served by a new agua has every message acknowledged before the backup
// started, readable over POP3 and IMAP, and every user logs in.
func TestBackupRestoreUnderLiveDelivery(t *testing.T) {
	data := t.TempDir()
	srv, stop := startAgua(t, data)
	mustAgua(t, "", "domain", "add", "example.test", "-data", data)
	users := []string{"ann@example.test", "bob@example.test", "cyd@example.test"}
	const pass = "restore-me-please"
	for _, u := range users {
		mustAgua(t, pass+"\n", "user", "add", u, "-data", data)
	}
	// Legitimate senders, each from its own address, deliver until told
	// to stop; acknowledged messages are recorded with their recipient.
	var mu sync.Mutex
	acked := map[string]string{} // token -> recipient
	quit := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			src := fmt.Sprintf("127.0.77.%d", 10+i)
			for n := 0; ; n++ {
				select {
				case <-quit:
					return
				default:
				}
				rcpt, token := users[(i+n)%len(users)], fmt.Sprintf("msg-%d-%d", i, n)
				if deliverFrom(srv.Addr("smtp"), src, rcpt, token) == nil {
					mu.Lock()
					acked[token] = rcpt
					mu.Unlock()
				}
			}
		}()
	}
	// A reader at the same time: each SELECT moves new mail to cur/, each
	// STORE renames files in cur/, as the backup lists them.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; ; n++ {
			select {
			case <-quit:
				return
			default:
			}
			imapTouch(srv.Addr("imap"), "127.0.77.50", users[n%len(users)], pass, n%2 == 0)
		}
	}()
	ackedCount := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	deadline := time.Now().Add(60 * time.Second)
	for ackedCount() < 60 {
		if time.Now().After(deadline) {
			close(quit)
			t.Fatalf("only %d messages acknowledged", ackedCount())
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	before := make(map[string]string, len(acked))
	for k, v := range acked {
		before[k] = v
	}
	mu.Unlock()

	bk := filepath.Join(t.TempDir(), "backup")
	out := mustAgua(t, "", "backup", bk, "-data", data)
	close(quit)
	wg.Wait()
	t.Logf("backup under delivery (%d acknowledged before it started, %d in all):\n%s", len(before), ackedCount(), out)
	m, err := backup.ReadManifest(bk)
	if err != nil {
		t.Fatal(err)
	}
	if m.Accounts.Users != 3 || m.Accounts.Domains != 1 || m.Mail.Messages < len(before) || m.Linked == 0 {
		t.Fatalf("manifest: %+v", m)
	}

	// Restore refuses a running server's folder, and a non-empty one.
	if code, _, errs := agua(t, "", "restore", bk, "-data", data); code == 0 || !strings.Contains(errs, "running") {
		t.Fatalf("restore into the running server's folder: exit %d %q", code, errs)
	}
	stop()
	if code, _, errs := agua(t, "", "restore", bk, "-data", data); code == 0 || !strings.Contains(errs, "-force") {
		t.Fatalf("restore into a non-empty folder: exit %d %q", code, errs)
	}

	fresh := filepath.Join(t.TempDir(), "restored")
	out = mustAgua(t, "", "restore", bk, "-data", fresh)
	t.Logf("restore:\n%s", out)
	srv2, _ := startAgua(t, fresh)
	for i, u := range users {
		got := pop3Tokens(t, srv2.Addr("pop3"), fmt.Sprintf("127.0.78.%d", 10+i), u, pass)
		want := 0
		for token, rcpt := range before {
			if rcpt != u {
				continue
			}
			want++
			if !got[token] {
				t.Errorf("%s: message %s acknowledged before the backup is missing after restore", u, token)
			}
		}
		if n := imapCount(t, srv2.Addr("imap"), fmt.Sprintf("127.0.79.%d", 10+i), u, pass); n < want {
			t.Errorf("%s: IMAP INBOX has %d messages, want at least %d", u, n, want)
		}
	}
	// -force moves a non-empty folder aside, then restores.
	out = mustAgua(t, "", "restore", bk, "-data", data, "-force")
	if !strings.Contains(out, "previous contents moved to "+data+".before-restore-") {
		t.Fatalf("restore -force: %q", out)
	}
	if _, err := os.Stat(filepath.Join(data, "agua.db")); err != nil {
		t.Fatal(err)
	}
}
