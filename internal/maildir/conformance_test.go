package maildir

import (
	"context"
	"strings"
	"testing"

	"github.com/agua-mail/agua/internal/mailstore"
	"github.com/agua-mail/agua/internal/mailstore/storetest"
)

// TestConformance runs the mail-store contract's suite against Maildir;
// the PostgreSQL store must pass the same.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Env {
		root := t.TempDir()
		var cur *Store
		return storetest.Env{
			Open: func(t *testing.T) (mailstore.Store, func()) {
				s, err := Open(root, Options{Hostname: "test", FsyncEach: testFsyncEach})
				if err != nil {
					t.Fatal(err)
				}
				cur = s
				return s.MailStore(), func() { s.Close() }
			},
			Deliver: func(t *testing.T, user, msg string) {
				t.Helper()
				err := cur.Deliver(context.Background(), Message{R: strings.NewReader(msg), Size: int64(len(msg))},
					[]Recipient{{Mailbox: user, Quota: 1 << 30}})
				if err != nil {
					t.Fatal(err)
				}
			},
		}
	})
}
