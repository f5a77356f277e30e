package crash

import (
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agua-mail/agua/test/internal/harness"
)

// TestLostRenameRecoveredAtStart covers the crash window of the Maildir
// store's one-flush commit (internal/maildir, doc.go "Durability"): a
// delivery is acknowledged once its file is on disk in tmp/ and renamed
// into new/, before the rename is on disk. A crash (power loss) that loses
// the rename leaves the acknowledged message complete in tmp/; the next
// start must move it into new/, and remove a torn file of an unacknowledged
// delivery instead of delivering it. The lost rename is reproduced by
// moving the file back into tmp/ while the server is down after a kill -9.
func TestLostRenameRecoveredAtStart(t *testing.T) {
	srv := harness.New(t, harness.Options{})
	srv.AddUser(t, rcpt, "crash-test-password")
	srv.Start(t)
	led := &ledger{attempted: map[string]sent{}, acked: map[string]bool{}}
	c := &client{addr: srv.SMTP, led: led, rng: rand.New(rand.NewPCG(1, 2))}
	conn, err := net.DialTimeout("tcp", srv.SMTP, msgTimeout)
	if err != nil {
		t.Fatal(err)
	}
	c.sendNetSMTP(conn, 1)
	conn.Close()
	if len(led.acked) != 1 || len(led.refusals) != 0 {
		t.Fatalf("the message was not acknowledged (refusals: %v)", led.refusals)
	}
	srv.Kill(t)

	box := srv.Maildir(rcpt)
	ents, err := os.ReadDir(filepath.Join(box, "new"))
	if err != nil || len(ents) != 1 {
		t.Fatalf("new/ after the delivery: %d entries, %v; want 1", len(ents), err)
	}
	name := ents[0].Name()
	if !strings.Contains(name, ",C=") {
		t.Fatalf("delivered file %q has no ,C= checksum in its name", name)
	}
	want, err := os.ReadFile(filepath.Join(box, "new", name))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(box, "new", name), filepath.Join(box, "tmp", name)); err != nil {
		t.Fatal(err)
	}
	// A torn file: same size and checksum in the name, cut short.
	torn := strings.Replace(name, ".M", ".M9", 1)
	if err := os.WriteFile(filepath.Join(box, "tmp", torn), want[:len(want)/2], 0o600); err != nil {
		t.Fatal(err)
	}

	srv.Start(t)
	defer srv.Stop(t)
	got, err := os.ReadFile(filepath.Join(box, "new", name))
	if err != nil || string(got) != string(want) {
		t.Fatalf("acknowledged message not back in new/ after the start: %v\nlog:\n%s", err, srv.LogTail(20))
	}
	if left, _ := os.ReadDir(filepath.Join(box, "tmp")); len(left) != 0 {
		t.Fatalf("tmp/ still holds %d files (the torn one must be removed)", len(left))
	}
	if _, err := os.Stat(filepath.Join(box, "new", torn)); err == nil {
		t.Fatal("the torn file was delivered")
	}
	checkMaildir(t, srv, led)
}
