package crash

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/agua-mail/agua/test/internal/harness"
)

// TestGracefulStopUnderLoad sends SIGTERM while the clients deliver: agua
// must exit with status 0, and every acknowledged message must be in the
// Maildirs exactly once and intact, as after a kill.
func TestGracefulStopUnderLoad(t *testing.T) {
	srv := harness.New(t, harness.Options{})
	led, stopClients := startClients(t, srv)
	waitProgress(t, srv, led, "start")
	time.Sleep(300 * time.Millisecond)
	led.stop()
	srv.Stop(t) // fails the test on a non-zero exit status
	t.Logf("SIGTERM with clients sending; %d acknowledged", led.nacked.Load())
	stopClients()
	checkMaildir(t, srv, led)
}

// TestStopRefusesNewTransactions: once agua is shutting down (its listener
// is closed), a connected client's next command must get 421 or a closed
// connection, not start a new transaction (RFC 5321 3.8). Before 726a569
// open sessions went on taking mail for up to 10 s and were then cut
// without a reply.
func TestStopRefusesNewTransactions(t *testing.T) {
	srv := harness.New(t, harness.Options{})
	srv.AddUser(t, rcpt, "crash-test-password")
	srv.Start(t)

	conn, err := net.DialTimeout("tcp", srv.SMTP, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(conn)
	if code, _, err := readReply(r); err != nil || code != 220 {
		t.Fatalf("banner: %d %v", code, err)
	}
	fmt.Fprintf(conn, "EHLO idle.crash.test\r\n")
	if code, _, err := readReply(r); err != nil || code != 250 {
		t.Fatalf("EHLO: %d %v", code, err)
	}

	srv.Terminate(t)
	// Shutting down: the listener closes first.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", srv.SMTP, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("the MX listener still accepts connections 10 s after SIGTERM")
		}
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Fprintf(conn, "MAIL FROM:<%s>\r\n", sender)
	code, text, err := readReply(r)
	switch {
	case err != nil:
		t.Logf("connection closed after SIGTERM: %v", err)
	case code == 421:
		t.Logf("421 after SIGTERM: %s", text)
	default:
		t.Errorf("MAIL FROM after SIGTERM got %d %s, want 421 or a closed connection", code, strings.TrimSpace(text))
	}
	if err := srv.Wait(t); err != nil {
		t.Errorf("agua exited with %v after SIGTERM", err)
	}
}
