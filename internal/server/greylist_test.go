package server

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/queue/queuetest"
)

// useClock makes srv's greylist run on clk.
func useClock(srv *Server, clk *queuetest.Clock) {
	f := clk.Now
	srv.grey.now.Store(&f)
}

func greylistConfig(t *testing.T) config.Config {
	cfg := testConfig(t)
	cfg.SMTP.SubmissionListen = []string{"127.0.0.1:0"}
	cfg.Greylist.Enabled = true
	cfg.Greylist.Delay = 5 * time.Minute
	cfg.Greylist.AutoAllow = 2
	return cfg
}

const greyReply = "451 4.7.1 Greylisted: a new sender and recipient for your network; please retry in "

// rcptFrom opens an MX session from src, sends MAIL FROM and RCPT TO and
// returns the reply to RCPT.
func rcptFrom(t *testing.T, srv *Server, src, from, rcpt string) (*client, string) {
	t.Helper()
	c := dialFrom(t, srv.Addr("smtp"), src)
	c.expect("220 ")
	c.cmd("EHLO client.test", "250")
	c.cmd("MAIL FROM:<"+from+">", "250")
	c.send("RCPT TO:<" + rcpt + ">")
	lines, err := c.reply()
	if err != nil {
		t.Fatalf("RCPT from %s: %v", src, err)
	}
	return c, lines[len(lines)-1]
}

// Greylisting over real SMTP sessions from non-allowlisted loopback
// addresses: an unknown recipient still gets 550; the first attempt and a
// retry before the delay get 451 4.7.1; a retry after it, from another
// host of the /24, is accepted; after auto_allow passed triplets the
// network passes at once; authenticated submission is never greylisted;
// the table survives a restart.
func TestGreylistSMTP(t *testing.T) {
	cfg := greylistConfig(t)
	setupDirectory(t, cfg)
	srv, stop := runServer(t, cfg)
	clk := &queuetest.Clock{T: time.Now()} // near real time: the table is loaded with it
	useClock(srv, clk)

	c, got := rcptFrom(t, srv, "127.0.9.1", "a@sender.test", "nobody@"+testDomain)
	if !strings.HasPrefix(got, "550 5.1.1") {
		t.Fatalf("unknown recipient: %q, want 550 before any greylisting", got)
	}
	c.send("RCPT TO:<" + testUser + ">")
	if got := c.expect("451 "); got != greyReply+"5m0s" {
		t.Fatalf("first attempt: %q", got)
	}
	clk.Add(time.Minute)
	_, got = rcptFrom(t, srv, "127.0.9.2", "a@sender.test", testUser)
	if got != greyReply+"4m0s" {
		t.Fatalf("retry before the delay: %q", got)
	}
	clk.Add(5 * time.Minute)
	c, got = rcptFrom(t, srv, "127.0.9.3", "a@sender.test", testUser)
	if !strings.HasPrefix(got, "250") {
		t.Fatalf("retry after the delay: %q", got)
	}
	c.cmd("DATA", "354")
	c.raw("Subject: retried\r\n\r\nhello\r\n.\r\n")
	c.expect("250 ")

	// A second triplet passes: the network is auto-allowed (auto_allow 2).
	_, got = rcptFrom(t, srv, "127.0.9.4", "b@sender.test", testUser)
	if !strings.HasPrefix(got, "451 4.7.1") {
		t.Fatalf("second triplet, first attempt: %q", got)
	}
	clk.Add(6 * time.Minute)
	if _, got = rcptFrom(t, srv, "127.0.9.5", "b@sender.test", testUser); !strings.HasPrefix(got, "250") {
		t.Fatalf("second triplet, retry: %q", got)
	}
	if _, got = rcptFrom(t, srv, "127.0.9.6", "new@other.test", testUser); !strings.HasPrefix(got, "250") {
		t.Fatalf("auto-allowed network, new triplet: %q", got)
	}
	// Another /24 is still greylisted.
	if _, got = rcptFrom(t, srv, "127.0.10.1", "new@other.test", testUser); !strings.HasPrefix(got, "451 4.7.1") {
		t.Fatalf("other network: %q", got)
	}

	// Authenticated submission, from a stranger's address: never.
	sub := dialFrom(t, srv.Addr("submission"), "127.0.11.1")
	sub.expect("220 ")
	sub.cmd("EHLO laptop.test", "250")
	sub.cmd("AUTH PLAIN "+plainAuth(testUser, testPass), "235")
	if r := sub.deliver(testUser, []string{testUser}, "Subject: own\r\n\r\nmine\r\n"); !strings.HasPrefix(r, "250 ") {
		t.Fatalf("authenticated submission: %q", r)
	}

	if st := srv.status().(Status); st.Greylist == nil || !st.Greylist.Enabled || st.Greylist.Triplets != 3 || st.Greylist.Networks != 1 {
		t.Fatalf("status greylist: %+v", st.Greylist)
	}

	// Restart: the pending triplet of 127.0.10.0/24 and the allowed
	// 127.0.9.0/24 are remembered.
	stop()
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "greylist.json")); err != nil {
		t.Fatalf("greylist table not saved at shutdown: %v", err)
	}
	srv2, _ := runServer(t, cfg)
	useClock(srv2, clk)
	if _, got = rcptFrom(t, srv2, "127.0.9.7", "third@other.test", testUser); !strings.HasPrefix(got, "250") {
		t.Fatalf("after restart, allowed network: %q", got)
	}
	clk.Add(5 * time.Minute)
	if _, got = rcptFrom(t, srv2, "127.0.10.2", "new@other.test", testUser); !strings.HasPrefix(got, "250") {
		t.Fatalf("after restart, retry of a pending triplet: %q", got)
	}
}

// Known-good clients (here: a DNSWL hit is not needed, an earlier accepted
// message marks the address) and allowlisted ones are not greylisted; off
// by default, and turned on and off by a reload.
func TestGreylistOffKnownGoodAndReload(t *testing.T) {
	dataDir := t.TempDir()
	path := filepath.Join(t.TempDir(), "agua.toml")
	text := func(on bool) string {
		return reloadConfigText(dataDir, fmt.Sprintf("[shield]\nallow = [\"127.0.0.1/32\", \"::1/128\", \"127.0.12.9/32\"]\n\n[greylist]\nenabled = %v\n", on))
	}
	if err := os.WriteFile(path, []byte(text(false)), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	setupDirectory(t, cfg)
	srv, _, _ := startFromFile(t, path)
	clk := &queuetest.Clock{T: time.Now()} // near real time: the table is loaded with it
	useClock(srv, clk)
	reload := func(on bool) {
		t.Helper()
		if err := os.WriteFile(path, []byte(text(on)), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := srv.ReloadConfig(); err != nil {
			t.Fatal(err)
		}
	}

	if _, got := rcptFrom(t, srv, "127.0.12.1", "a@sender.test", testUser); !strings.HasPrefix(got, "250") {
		t.Fatalf("greylisting off (the default): %q", got)
	}
	reload(true)
	if _, got := rcptFrom(t, srv, "127.0.12.2", "a@sender.test", testUser); !strings.HasPrefix(got, "451 4.7.1") {
		t.Fatalf("greylisting on after reload: %q", got)
	}
	if _, got := rcptFrom(t, srv, "127.0.12.9", "a@sender.test", testUser); !strings.HasPrefix(got, "250") {
		t.Fatalf("allowlisted client: %q", got)
	}
	// A retry in the same session passes; the accepted message makes the
	// address known-good, and a known-good client is not greylisted.
	c := dialFrom(t, srv.Addr("smtp"), "127.0.13.1")
	c.expect("220 ")
	c.cmd("EHLO client.test", "250")
	c.cmd("MAIL FROM:<x@sender.test>", "250")
	c.cmd("RCPT TO:<"+testUser+">", "451 4.7.1")
	clk.Add(6 * time.Minute)
	c.cmd("RSET", "250")
	if r := c.deliver("x@sender.test", []string{testUser}, "Subject: x\r\n\r\nx\r\n"); !strings.HasPrefix(r, "250 ") {
		t.Fatalf("retry in the same session: %q", r)
	}
	if _, got := rcptFrom(t, srv, "127.0.13.1", "y@another.test", testUser); !strings.HasPrefix(got, "250") {
		t.Fatalf("known-good client (a message accepted): %q", got)
	}
	reload(false)
	if _, got := rcptFrom(t, srv, "127.0.14.1", "z@sender.test", testUser); !strings.HasPrefix(got, "250") {
		t.Fatalf("greylisting off after reload: %q", got)
	}
}

// setupDirectory creates the test domain and user in cfg's directory.
func setupDirectory(t *testing.T, cfg config.Config) {
	t.Helper()
	dir, err := OpenDirectory(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	ctx := context.Background()
	if err := dir.AddDomain(ctx, testDomain); err != nil {
		t.Fatal(err)
	}
	if err := dir.AddUser(ctx, testUser, testPass, 0); err != nil {
		t.Fatal(err)
	}
}

// Python's smtplib, a real client, is deferred and retries successfully.
func TestGreylistPythonRetry(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed (Debian: python3)")
	}
	cfg := greylistConfig(t)
	setupDirectory(t, cfg)
	srv, _ := runServer(t, cfg)
	clk := &queuetest.Clock{T: time.Now()} // near real time: the table is loaded with it
	useClock(srv, clk)
	host, port, _ := strings.Cut(srv.Addr("smtp"), ":")
	script := `
import smtplib, sys
s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), source_address=("127.0.15.1", 0), timeout=30)
try:
    s.sendmail("py@sender.test", [sys.argv[3]], "Subject: smtplib\r\n\r\nretry me\r\n")
    print("SENT")
except smtplib.SMTPRecipientsRefused as e:
    for rcpt, (code, msg) in e.recipients.items():
        print("REFUSED", code, msg.decode())
`
	run := func() string {
		out, err := runTool(t, nil, py, "-c", script, host, port, testUser)
		if err != nil {
			t.Fatalf("python: %v\n%s", err, out)
		}
		return strings.TrimSpace(out)
	}
	if out := run(); !strings.HasPrefix(out, "REFUSED 451 4.7.1 Greylisted") {
		t.Fatalf("first attempt: %q", out)
	}
	clk.Add(5 * time.Minute)
	if out := run(); out != "SENT" {
		t.Fatalf("retry: %q", out)
	}
}
