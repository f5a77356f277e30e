package maildir

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// leave writes body for mailbox (into its Maildir++ folder if folder is
// set) as a syncfs-mode delivery does and stops before the commit, as a
// crash would: the file stays in tmp/. It returns the file's tmp/ path.
func leave(t *testing.T, s *Store, mailbox, folder, body string) string {
	t.Helper()
	r := rcpt(mailbox, 1<<20)
	r.Folder = folder
	f := file{mb: s.mailbox(mailbox), size: int64(len(r.Prefix) + len(body))}
	if err := s.writeTmp(&f, message(body), r); err != nil {
		t.Fatal(err)
	}
	return f.tmpPath
}

func openRoot(t *testing.T, root string) *Store {
	t.Helper()
	s, err := Open(root, Options{Hostname: "h"})
	if err != nil {
		t.Fatal(err)
	}
	<-s.warmed
	return s
}

// A crash after a delivery's syncfs but before its rename reached the disk
// leaves an acknowledged message complete in tmp/: the next Open moves it
// into new/ (INBOX and Maildir++ folders alike). Files a crash tore before
// their syncfs (never acknowledged) are removed; foreign recent files in
// tmp/ are left alone.
func TestRecoverTmpAtOpen(t *testing.T) {
	if testFsyncEach {
		t.Skip("syncfs mode only; one run is enough")
	}
	root := filepath.Join(t.TempDir(), "mail")
	s := openRoot(t, root)
	const a = "alice@example.org"
	complete := leave(t, s, a, "", "Subject: complete\r\n\r\nkept\r\n")
	inFolder := leave(t, s, a, "Junk", "Subject: junk\r\n\r\nkept too\r\n")
	zeroed := leave(t, s, a, "", "Subject: torn\r\n\r\nzeros in the middle\r\n")
	short := leave(t, s, a, "", "Subject: torn\r\n\r\ncut short\r\n")
	if err := os.WriteFile(zeroed, append([]byte("Delivered-To: alice@example.org\r\n"), make([]byte, len("Subject: torn\r\n\r\nzeros in the middle\r\n"))...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(short, 10); err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(filepath.Dir(complete), "1796531077.M1P1Q1.other,S=5")
	if err := os.WriteFile(foreign, []byte("other"), 0o600); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, p := range []string{complete, inFolder} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		want[p] = string(b)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openRoot(t, root)
	defer s.Close()
	for p, content := range want {
		moved := filepath.Join(filepath.Dir(filepath.Dir(p)), "new", filepath.Base(p))
		if b, err := os.ReadFile(moved); err != nil || string(b) != content {
			t.Errorf("%s: %q, %v; want the complete file moved from tmp/", moved, b, err)
		}
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still in tmp/: %v", p, err)
		}
	}
	for _, p := range []string{zeroed, short} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("torn %s not removed: %v", p, err)
		}
		if _, err := os.Stat(filepath.Join(filepath.Dir(filepath.Dir(p)), "new", filepath.Base(p))); err == nil {
			t.Errorf("torn %s moved into new/", p)
		}
	}
	if _, err := os.Stat(foreign); err != nil {
		t.Errorf("foreign recent tmp/ file removed: %v", err)
	}
	if _, count, err := s.Usage(a); err != nil || count != 2 {
		t.Errorf("Usage counts %d messages (%v), want the 2 recovered", count, err)
	}
}

// While another Store has the root open, its deliveries' files in tmp/ are
// in progress, not a crash's leftovers: Open leaves them alone, whatever
// their age, and the next Open with the root to itself recovers them.
func TestRecoverTmpNotWhileOpen(t *testing.T) {
	if testFsyncEach {
		t.Skip("syncfs mode only; one run is enough")
	}
	root := filepath.Join(t.TempDir(), "mail")
	first := openRoot(t, root)
	p := leave(t, first, "bob@example.org", "", "Subject: in flight\r\n\r\nbody\r\n")
	// Old enough for the 36-hour rule, which must not apply to it.
	past := time.Now().Add(-37 * time.Hour)
	if err := os.Chtimes(p, past, past); err != nil {
		t.Fatal(err)
	}
	second := openRoot(t, root)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("a file of the open Store was touched by a second Open: %v", err)
	}
	// The second Store delivers as usual.
	if err := second.Deliver(context.Background(), message(body), []Recipient{rcpt("bob@example.org", 1<<20)}); err != nil {
		t.Fatal(err)
	}
	second.Close()
	first.Close()
	third := openRoot(t, root)
	defer third.Close()
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("leftover not recovered once the root was free: %v", err)
	}
	if _, count, err := third.Usage("bob@example.org"); err != nil || count != 2 {
		t.Fatalf("Usage counts %d messages (%v), want 2", count, err)
	}
}
