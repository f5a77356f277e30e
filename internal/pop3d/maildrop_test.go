package pop3d

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/agua-mail/agua/internal/accounts"
	"github.com/agua-mail/agua/internal/maildir"
	"github.com/agua-mail/agua/internal/mailstore"
	"github.com/agua-mail/agua/internal/mailstore/memstore"
)

// lookup is an accounts directory with one user whose password is "pw";
// the password "fail" makes the directory itself fail.
type lookup struct{ accounts.Lookup }

var errDirectoryDown = errors.New("directory down")

func (lookup) Authenticate(ctx context.Context, address, password string) (accounts.User, error) {
	switch {
	case password == "fail":
		return accounts.User{}, errDirectoryDown
	case !strings.Contains(address, "@"):
		return accounts.User{}, accounts.ErrInvalid
	case strings.EqualFold(address, "alice@example.test") && password == "pw":
		return accounts.User{Address: "alice@example.test", Domain: "example.test", Quota: 1 << 20}, nil
	}
	return accounts.User{}, accounts.ErrAuthFailed
}

// stores are the mail stores the backend is tested on: each returns the
// store and a function delivering to alice's INBOX as SMTP does.
var stores = []struct {
	name string
	open func(t *testing.T) (mailstore.Store, func(t *testing.T, msgs ...string))
}{
	{"maildir", func(t *testing.T) (mailstore.Store, func(t *testing.T, msgs ...string)) {
		st, err := maildir.Open(t.TempDir(), maildir.Options{Hostname: "test"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st.MailStore(), func(t *testing.T, msgs ...string) {
			t.Helper()
			for _, m := range msgs {
				if err := st.Deliver(context.Background(), maildir.Message{R: strings.NewReader(m), Size: int64(len(m))},
					[]maildir.Recipient{{Mailbox: "alice@example.test", Quota: 1 << 20}}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}},
	{"memstore", func(t *testing.T) (mailstore.Store, func(t *testing.T, msgs ...string)) {
		d := memstore.NewData()
		return memstore.Open(d), func(t *testing.T, msgs ...string) {
			for _, m := range msgs {
				d.Deliver("alice@example.test", []byte(m))
			}
		}
	}},
}

func TestBackendAuthenticate(t *testing.T) {
	b := NewBackend(lookup{}, memstore.Open(memstore.NewData()), nil)
	ctx := context.Background()
	if u, err := b.Authenticate(ctx, nil, "Alice@Example.test", "pw"); err != nil || u != "alice@example.test" {
		t.Fatalf("good login: %q %v", u, err)
	}
	for _, c := range []struct{ user, pass string }{{"alice@example.test", "wrong"}, {"alice", "pw"}} {
		_, err := b.Authenticate(ctx, nil, c.user, c.pass)
		var pe *Error
		if err == nil || errors.As(err, &pe) {
			t.Fatalf("%s/%s: %v, want a refusal (not a *Error)", c.user, c.pass, err)
		}
	}
	_, err := b.Authenticate(ctx, nil, "alice@example.test", "fail")
	var pe *Error
	if !errors.As(err, &pe) || pe.Code != "SYS/TEMP" || !errors.Is(err, errDirectoryDown) {
		t.Fatalf("failing directory: %v, want -ERR [SYS/TEMP] wrapping the cause", err)
	}
}

// The maildrop is the INBOX under its lock: UIDLs name the UIDs IMAP
// sees, opening marks new messages as no longer new, and only Update
// changes anything.
func TestBackendMaildrop(t *testing.T) {
	for _, st := range stores {
		t.Run(st.name, func(t *testing.T) {
			ms, deliver := st.open(t)
			deliver(t, "Subject: one\r\n\r\n1\r\n", "Subject: two\r\n\r\n22\r\n", "Subject: three\r\n\r\n333\r\n")
			testMaildrop(t, ms)
		})
	}
}

func testMaildrop(t *testing.T, ms mailstore.Store) {
	b := NewBackend(lookup{}, ms, nil)
	ctx := context.Background()
	drop, err := b.OpenMaildrop(ctx, nil, "alice@example.test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.OpenMaildrop(ctx, nil, "alice@example.test"); err != ErrInUse {
		t.Fatalf("second maildrop: %v, want ErrInUse", err)
	}

	imap, err := ms.Folder(ctx, "alice@example.test", "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	defer imap.Close()
	l, err := imap.List()
	if err != nil {
		t.Fatal(err)
	}
	msgs := drop.Messages()
	if len(msgs) != 3 || len(l.Messages) != 3 {
		t.Fatalf("maildrop %v, IMAP %+v", msgs, l)
	}
	for i, m := range l.Messages {
		if want := UIDL(m.UID, l.UIDValidity); msgs[i].UIDL != want || msgs[i].Size != m.Size || m.New || m.Flags != "" {
			t.Fatalf("message %d: maildrop %+v, IMAP %+v, want UIDL %s, not new, no flags", i, msgs[i], m, want)
		}
	}
	second := l.Messages[1].UID
	rc, err := drop.Open(1)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(rc); err != nil || string(b) != "Subject: two\r\n\r\n22\r\n" {
		t.Fatalf("RETR 2: %q %v", b, err)
	}
	rc.Close()

	// Removed by an IMAP session meanwhile: a plain -ERR, not [SYS/TEMP].
	if err := imap.Delete([]uint32{l.Messages[2].UID}); err != nil {
		t.Fatal(err)
	}
	_, err = drop.Open(2)
	var pe *Error
	if !errors.As(err, &pe) || pe.Code != "" || pe.Msg != "Message was removed by another client" {
		t.Fatalf("RETR of a removed message: %v", err)
	}

	if err := drop.Update([]int{0}, []int{1}); err != nil {
		t.Fatal(err)
	}
	// UPDATE released the lock before QUIT's reply (RFC 1939 6).
	again, err := b.OpenMaildrop(ctx, nil, "alice@example.test")
	if err != nil {
		t.Fatalf("maildrop after UPDATE: %v", err)
	}
	defer again.Close()
	if err := drop.Close(); err != nil {
		t.Fatal(err)
	}
	l, err = imap.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Messages) != 1 || l.Messages[0].UID != second || l.Messages[0].Flags != "S" {
		t.Fatalf("after QUIT: %+v, want message 2 alone, seen", l.Messages)
	}
	if m := again.Messages(); len(m) != 1 || m[0].UIDL != msgs[1].UIDL {
		t.Fatalf("next session %v, want UIDL %s kept", m, msgs[1].UIDL)
	}
}
