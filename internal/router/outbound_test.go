package router

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agua-mail/agua/internal/queue"
	"github.com/agua-mail/agua/internal/smtpd"
)

// queueFixture is the fixture with a real file queue behind the Outbound
// target; sign adds a fixed header field, or fails with signErr.
type queueFixture struct {
	*fixture
	q        *queue.File
	qdir     string
	beginErr error
	signErr  error
}

func newQueueFixture(t *testing.T) *queueFixture {
	t.Helper()
	qf := &queueFixture{fixture: newFixture(t), qdir: t.TempDir()}
	q, err := queue.Open(qf.qdir, queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	qf.q = q
	return qf
}

func (qf *queueFixture) router(t *testing.T) *Router {
	t.Helper()
	begin := func(ctx context.Context, env queue.Envelope, body io.Reader) (queue.Tx, error) {
		if qf.beginErr != nil {
			return nil, qf.beginErr
		}
		return qf.q.Begin(ctx, env, body)
	}
	sign := func(from string, msg []byte) ([]byte, error) {
		if qf.signErr != nil {
			return nil, qf.signErr
		}
		return []byte("DKIM-Signature: test; from=" + from + "\r\n"), nil
	}
	r, err := New(Config{Hostname: "mx.example.test", Accounts: qf.dir, Local: NewLocal(qf.store), Remote: NewOutbound(begin, sign)})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// leftovers counts files in the queue's tmp folder: writes never committed.
func (qf *queueFixture) leftovers(t *testing.T) int {
	ents, err := os.ReadDir(filepath.Join(qf.qdir, "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestMixedRecipientsOneTransaction: a message for a local and a remote
// recipient is delivered to both, signed once in the queue and not in the
// mailbox; when either side fails, neither gets it (issue 12: one
// transaction, both or neither).
func TestMixedRecipientsOneTransaction(t *testing.T) {
	t.Run("both", func(t *testing.T) {
		qf := newQueueFixture(t)
		_, err := send(t, qf.router(t), submission, "alice@example.test", "alice@example.test", "carol@elsewhere.example")
		if err != nil {
			t.Fatal(err)
		}
		got := qf.messages(t, "alice@example.test")
		if len(got) != 1 || strings.Contains(got[0], "DKIM-Signature") {
			t.Fatalf("alice's copy: %q", got)
		}
		l, _ := qf.q.List()
		if len(l) != 1 || l[0].Envelope.From != "alice@example.test" || l[0].Envelope.Account != "alice@example.test" ||
			len(l[0].Rcpts) != 1 || l[0].Rcpts[0].Addr != "carol@elsewhere.example" {
			t.Fatalf("queue: %+v", l)
		}
		rc, _ := qf.q.Open(l[0].ID)
		b, _ := io.ReadAll(rc)
		rc.Close()
		if want := "DKIM-Signature: test; from=alice@example.test\r\n" + body; string(b) != want {
			t.Errorf("queued %q, want %q", b, want)
		}
	})
	// The queue write comes first: when it fails, the local recipient
	// gets nothing (before, local delivery came first and alice had the
	// message while the client was told 451 and sent it again).
	for _, c := range []struct {
		name              string
		beginErr, signErr error
	}{
		{"queue write fails", errors.New("disk full"), nil},
		{"signing fails", nil, errors.New("key unreadable")},
	} {
		t.Run(c.name, func(t *testing.T) {
			qf := newQueueFixture(t)
			qf.beginErr, qf.signErr = c.beginErr, c.signErr
			_, err := send(t, qf.router(t), submission, "alice@example.test", "alice@example.test", "carol@elsewhere.example")
			if e := smtpd.AsError(err); e == nil || e.Code != 451 {
				t.Fatalf("commit: %v, want 451", err)
			}
			if got := qf.messages(t, "alice@example.test"); len(got) != 0 {
				t.Errorf("alice got %d messages of a failed transaction", len(got))
			}
			if st := qf.q.Stats(); st.Messages != 0 {
				t.Errorf("queue holds %d messages", st.Messages)
			}
		})
	}
	// Local delivery fails after the queue write: the write is dropped.
	t.Run("local delivery fails", func(t *testing.T) {
		qf := newQueueFixture(t)
		// bob's quota (10 bytes) passes the RCPT check and fails delivery.
		_, err := send(t, qf.router(t), submission, "alice@example.test", "bob@example.test", "carol@elsewhere.example")
		if e := smtpd.AsError(err); e == nil || e.Code != 552 {
			t.Fatalf("commit: %v, want 552", err)
		}
		if st := qf.q.Stats(); st.Messages != 0 {
			t.Errorf("queue holds %d messages after a refused local delivery", st.Messages)
		}
		if n := qf.leftovers(t); n != 0 {
			t.Errorf("%d uncommitted queue files left", n)
		}
		qf.q.Close()
		q2, err := queue.Open(qf.qdir, queue.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer q2.Close()
		if st := q2.Stats(); st.Messages != 0 {
			t.Errorf("reopened queue holds %d messages", st.Messages)
		}
	})
}
