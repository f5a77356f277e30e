package main

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/server"
)

// loginFrom tries one login over proto ("pop3", "imap", "smtp": SMTP AUTH
// PLAIN on submission) from the loopback address src and returns what the
// server answered: "ok", "failed", or "refused" (refused before the
// login could be tried: a ban at the greeting or a drop).
func loginFrom(t *testing.T, srv *server.Server, proto, src, user, pass string) string {
	t.Helper()
	name := map[string]string{"pop3": "pop3", "imap": "imap", "smtp": "submission"}[proto]
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", srv.Addr(name))
	if err != nil {
		return "refused"
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	line := func() string {
		l, err := r.ReadString('\n')
		if err != nil {
			return ""
		}
		return strings.TrimRight(l, "\r\n")
	}
	greeting := line()
	switch proto {
	case "pop3":
		if !strings.HasPrefix(greeting, "+OK") {
			return "refused"
		}
		fmt.Fprintf(c, "USER %s\r\n", user)
		if !strings.HasPrefix(line(), "+OK") {
			t.Fatalf("pop3 USER from %s refused", src)
		}
		fmt.Fprintf(c, "PASS %s\r\n", pass)
		if !strings.HasPrefix(line(), "+OK") {
			return "failed"
		}
		// QUIT and wait for the close: the maildrop lock is released
		// before the next login of the same user.
		fmt.Fprintf(c, "QUIT\r\n")
		io.Copy(io.Discard, r)
		return "ok"
	case "imap":
		if !strings.HasPrefix(greeting, "* OK") {
			return "refused"
		}
		fmt.Fprintf(c, "a LOGIN %q %q\r\n", user, pass)
		for {
			l := line()
			switch {
			case strings.HasPrefix(l, "a OK"):
				return "ok"
			case strings.HasPrefix(l, "a "), l == "":
				return "failed"
			}
		}
	default:
		if !strings.HasPrefix(greeting, "220") {
			return "refused"
		}
		fmt.Fprintf(c, "EHLO client.example\r\n")
		for l := line(); strings.HasPrefix(l, "250-"); l = line() {
		}
		fmt.Fprintf(c, "AUTH PLAIN %s\r\n", base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+pass)))
		if strings.HasPrefix(line(), "235") {
			return "ok"
		}
		return "failed"
	}
}

// TestDistributedGuessing: the brute force of issue 13 (48 failed logins
// against one account from 32 addresses of one /24, 1 or 2 each, over
// POP3, IMAP and SMTP AUTH) gets the /24 banned as a network, which
// `agua report abuse` names with its default flags. The account's owner
// keeps logging in during the attack, from a known-good address inside
// the banned /24 and from their other network, without the account delay;
// a stranger from another network is served.
func TestDistributedGuessing(t *testing.T) {
	data := t.TempDir()
	cfg := config.Default()
	cfg.DataDir = data
	cfg.Accounts.Demo = false
	cfg.SMTP.Listen = nil
	cfg.SMTP.SubmissionListen = []string{"127.0.0.1:0"}
	cfg.SMTP.SubmissionsListen = nil
	cfg.SMTP.AuthDelay = 0
	cfg.Admin.Listen = ""
	cfg.POP3.Listen = []string{"127.0.0.1:0"}
	cfg.POP3.TLSListen = nil
	cfg.POP3.AuthDelay = 0
	cfg.IMAP.Listen = []string{"127.0.0.1:0"}
	cfg.IMAP.TLSListen = nil
	cfg.IMAP.AuthDelay = 0
	cfg.Shield.AccountDelayMax = 50 * time.Millisecond // keeps the test short; the value is checked, not timed
	logs := &syncLog{}
	srv, _ := runServer(t, cfg, logs)
	const owner, ownerPass = "alice@example.test", "owner's long password"
	const stranger, strangerPass = "bob@example.test", "bob's long password"
	mustAgua(t, "", "domain", "add", "example.test", "-data", data)
	mustAgua(t, ownerPass+"\n", "user", "add", owner, "-data", data)
	mustAgua(t, strangerPass+"\n", "user", "add", stranger, "-data", data)
	sh := srv.Shield()

	// Before the attack the owner logged in from home, inside what will
	// be the attacking /24, and from their office.
	const home, office = "127.0.40.250", "127.0.41.7"
	for _, src := range []string{home, office} {
		if got := loginFrom(t, srv, "imap", src, owner, ownerPass); got != "ok" {
			t.Fatalf("owner login from %s before the attack: %s", src, got)
		}
	}

	// The attack: 48 failures from 127.0.40.1-32, 1 or 2 each, rotating
	// over the three protocols. The network ban comes at the 30th.
	protos := []string{"pop3", "imap", "smtp"}
	tries, refused := 0, 0
	for i := range 32 {
		src := fmt.Sprintf("127.0.40.%d", i+1)
		for range 1 + i%2 {
			switch got := loginFrom(t, srv, protos[tries%3], src, owner, fmt.Sprintf("guess%d", tries)); got {
			case "ok":
				t.Fatalf("guess %d from %s logged in", tries, src)
			case "refused":
				refused++
			}
			tries++
		}
	}
	if tries != 48 {
		t.Fatalf("%d attempts, want 48", tries)
	}
	netBan := netip.MustParsePrefix("127.0.40.0/24")
	var reason string
	for _, b := range sh.Bans() {
		if b.Prefix == netBan {
			reason = b.Reason
		}
		if b.Prefix.IsSingleIP() {
			t.Errorf("an address was banned on its own (%s, %s): each stayed under the per-address threshold", b.Prefix, b.Reason)
		}
	}
	if reason != "network_auth_failure" {
		t.Fatalf("bans %+v: want 127.0.40.0/24 banned for network_auth_failure", sh.Bans())
	}
	if refused == 0 {
		t.Errorf("no attempt after the network ban was refused")
	}
	// A fresh address of the /24 is refused at once, on every protocol.
	for _, p := range protos {
		if got := loginFrom(t, srv, p, "127.0.40.100", owner, "guess"); got != "refused" {
			t.Errorf("%s from a fresh address of the banned /24: %s, want refused", p, got)
		}
	}

	// More networks guess at the same account: the account is under a
	// distributed attack. Strangers' failures wait the longest delay;
	// the owner's networks never wait.
	for i, src := range []string{"127.0.43.1", "127.0.44.1", "127.0.45.1"} {
		if got := loginFrom(t, srv, protos[i], src, owner, "guess"); got != "failed" {
			t.Fatalf("guess from %s: %s", src, got)
		}
	}
	if !strings.Contains(logs.String(), `msg="shield account under distributed attack" account=alice@example.test`) {
		t.Errorf("no log line names the account under attack")
	}
	if d := sh.AccountDelayFrom(owner, netip.MustParseAddr("127.0.46.1")); d != cfg.Shield.AccountDelayMax {
		t.Errorf("a stranger's failure on the attacked account waits %v, want account_delay_max %v", d, cfg.Shield.AccountDelayMax)
	}
	for _, src := range []string{home, office, "127.0.41.99"} {
		if d := sh.AccountDelayFrom(owner, netip.MustParseAddr(src)); d != 0 {
			t.Errorf("the owner's network (%s) waits %v on a failure, want 0", src, d)
		}
	}

	// The owner logs in during the attack, on every protocol, from home
	// (known-good, inside the banned /24) and from the office.
	for _, src := range []string{home, office} {
		for _, p := range protos {
			if got := loginFrom(t, srv, p, src, owner, ownerPass); got != "ok" {
				t.Errorf("owner %s login from %s during the attack: %s", p, src, got)
			}
		}
	}
	// A stranger from another network is served.
	for _, p := range protos {
		if got := loginFrom(t, srv, p, "127.0.42.9", stranger, strangerPass); got != "ok" {
			t.Errorf("stranger %s login from 127.0.42.9: %s", p, got)
		}
	}

	// agua report abuse, default flags, names the network and what it did.
	out := mustAgua(t, "", "report", "abuse", "-data", data)
	t.Logf("agua report abuse:\n%s", out)
	for _, want := range []string{"127.0.40.0/24", "distributed brute force", "127.0.40.1 "} {
		if !strings.Contains(out, want) {
			t.Errorf("agua report abuse lacks %q:\n%s", want, out)
		}
	}
	for _, not := range []string{home, office, "127.0.42.9"} {
		if strings.Contains(out, not+" ") {
			t.Errorf("agua report abuse names %s, a legitimate client:\n%s", not, out)
		}
	}
}

// syncLog is a log sink safe for concurrent writers.
type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
