package queue_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agua-mail/agua/internal/queue"
)

// FuzzOpenCorrupt: whatever bytes a message file and its state file hold,
// Open neither panics nor fails; the message is either loaded whole or
// quarantined, and a healthy neighbour is always loaded.
func FuzzOpenCorrupt(f *testing.F) {
	// Seeds: a real message file and state file, and damaged variants.
	dir := f.TempDir()
	q, err := queue.Open(dir, queue.Options{})
	if err != nil {
		f.Fatal(err)
	}
	id, _ := q.Enqueue(context.Background(), queue.Envelope{From: "a@b.test", To: []string{"c@d.test"}}, strings.NewReader("Subject: x\r\n\r\nbody\r\n"))
	q.Hold(id)
	q.Close()
	msg, _ := os.ReadFile(filepath.Join(dir, "msg", id))
	state, _ := os.ReadFile(filepath.Join(dir, "msg", id+".state"))
	f.Add(msg, state)
	f.Add(msg[:len(msg)-1], state)
	f.Add(msg, []byte("{}"))
	f.Add([]byte("AGUAQ1 00000000000000000005 0000000002\n{}\nhello"), []byte(nil))
	f.Add([]byte{}, []byte(nil))
	f.Fuzz(func(t *testing.T, msgData, stateData []byte) {
		dir := t.TempDir()
		q, err := queue.Open(dir, queue.Options{})
		if err != nil {
			t.Fatal(err)
		}
		good, _ := q.Enqueue(context.Background(), queue.Envelope{From: "a@b.test", To: []string{"n@d.test"}}, strings.NewReader("neighbour"))
		q.Close()
		const bad = "0000000000000001deadbeef"
		os.WriteFile(filepath.Join(dir, "msg", bad), msgData, 0o600)
		if stateData != nil {
			os.WriteFile(filepath.Join(dir, "msg", bad+".state"), stateData, 0o600)
		}
		q, err = queue.Open(dir, queue.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer q.Close()
		if _, err := q.Get(good); err != nil {
			t.Fatalf("neighbour lost: %v", err)
		}
		m, err := q.Get(bad)
		if err != nil {
			if _, serr := os.Stat(filepath.Join(dir, "corrupt", bad)); serr != nil {
				if _, merr := os.Stat(filepath.Join(dir, "msg", bad)); merr == nil {
					t.Fatal("neither loaded nor quarantined")
				}
			}
			return
		}
		rc, err := q.Open(bad)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil || int64(len(b)) != m.Size || len(m.Rcpts) == 0 {
			t.Fatalf("loaded message unreadable: %d bytes of %d, %v", len(b), m.Size, err)
		}
	})
}
