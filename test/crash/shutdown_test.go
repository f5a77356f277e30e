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

// TestStopAnswersIdleSessions: on SIGTERM an idle session is answered
// "421 4.3.2" at once and closed (RFC 5321 3.8), without the client
// sending anything. Before 726a569 open sessions went on taking mail for
// up to 10 s and were then cut without a reply.
func TestStopAnswersIdleSessions(t *testing.T) {
	srv := harness.New(t, harness.Options{})
	srv.AddUser(t, rcpt, "crash-test-password")
	srv.Start(t)

	conn, err := net.DialTimeout("tcp", srv.SMTP, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A bound, not an expectation: agua used to cut idle sessions after
	// 10 s without a reply, which must fail here, not pass late.
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
	code, text, err := readReply(r)
	if err != nil {
		t.Errorf("idle session after SIGTERM: %v, want an unsolicited 421", err)
	} else if code != 421 {
		t.Errorf("idle session after SIGTERM got %d %s, want 421", code, strings.TrimSpace(text))
	} else {
		t.Logf("after SIGTERM: 421 %s", text)
	}
	if err := srv.Wait(t); err != nil {
		t.Errorf("agua exited with %v after SIGTERM", err)
	}
}
