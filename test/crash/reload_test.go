package crash

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/agua-mail/agua/test/internal/harness"
)

// TestRulesFileEditLive is the operator's one-line block on a real agua
// process: append a deny line to <data>/shield.rules while a legitimate
// session is in the middle of a transaction. The attacker's next
// connection is dropped within a second or so, the legitimate session
// finishes its message, and the process is the same one (same PID).
func TestRulesFileEditLive(t *testing.T) {
	srv := harness.New(t, harness.Options{})
	srv.AddUser(t, rcpt, "crash-test-password")
	srv.Start(t)
	pid := srv.PID()

	dial := func(src string) (net.Conn, *bufio.Reader) {
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", srv.SMTP)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(30 * time.Second))
		return c, bufio.NewReader(c)
	}
	expect := func(r *bufio.Reader, want int, what string) {
		t.Helper()
		code, text, err := readReply(r)
		if err != nil || code != want {
			t.Fatalf("%s: want %d, got %d %q %v", what, want, code, text, err)
		}
	}
	legit, lr := dial("127.0.0.31")
	defer legit.Close()
	expect(lr, 220, "legit banner")
	fmt.Fprintf(legit, "EHLO legit.example\r\nMAIL FROM:<%s>\r\n", sender)
	expect(lr, 250, "EHLO")
	expect(lr, 250, "MAIL")

	attacker, ar := dial("127.0.0.32")
	expect(ar, 220, "attacker banner before the rule")
	attacker.Close()

	rules := filepath.Join(srv.DataDir, "shield.rules")
	f, err := os.OpenFile(rules, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(f, "deny 127.0.0.32 drop   # added by TestRulesFileEditLive")
	f.Close()
	edited := time.Now()

	for {
		// A drop resets the connection: on loopback the reset can even
		// beat connect() back, so a failed dial counts as dropped too.
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.32")}}
		c, err := d.Dial("tcp", srv.SMTP)
		if err == nil {
			c.SetReadDeadline(time.Now().Add(3 * time.Second))
			_, _, err = readReply(bufio.NewReader(c))
			c.Close()
		}
		if err != nil {
			t.Logf("attacker dropped %v after the edit", time.Since(edited).Round(time.Millisecond))
			break
		}
		if time.Since(edited) > 15*time.Second {
			t.Fatal("the new rule was not applied")
		}
		time.Sleep(50 * time.Millisecond)
	}

	fmt.Fprintf(legit, "RCPT TO:<%s>\r\nDATA\r\n", rcpt)
	expect(lr, 250, "RCPT after the reload")
	expect(lr, 354, "DATA")
	fmt.Fprintf(legit, "Subject: across a reload\r\n\r\nstill here\r\n.\r\nQUIT\r\n")
	expect(lr, 250, "message after the reload")
	expect(lr, 221, "QUIT")
	if got := srv.PID(); got != pid {
		t.Fatalf("PID changed from %d to %d", pid, got)
	}
	if ok, _ := srv.Exited(); ok {
		t.Fatal("agua exited")
	}
}
