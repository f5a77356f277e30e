package maildir

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const box = "alice@example.org"

func deliverN(t testing.TB, s *Store, mailbox string, n int) {
	t.Helper()
	for i := range n {
		msg := message(fmt.Sprintf("Subject: %d\r\n\r\nbody %d\r\n", i, i))
		if err := s.Deliver(context.Background(), msg, []Recipient{rcpt(mailbox, 1<<30)}); err != nil {
			t.Fatal(err)
		}
	}
}

func openFolder(t testing.TB, s *Store, mailbox, name string) *Folder {
	t.Helper()
	f, err := s.Folder(mailbox, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func list(t testing.TB, f *Folder) Listing {
	t.Helper()
	l, err := f.List()
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func uids(l Listing) []uint32 {
	var out []uint32
	for _, m := range l.Messages {
		out = append(out, m.UID)
	}
	return out
}

func TestFolderUIDs(t *testing.T) {
	s := openTest(t)
	f := openFolder(t, s, box, "")
	l := list(t, f)
	if len(l.Messages) != 0 || l.UIDValidity == 0 || l.UIDNext != 1 {
		t.Fatalf("empty folder: %+v", l)
	}
	validity := l.UIDValidity
	deliverN(t, s, box, 3)
	l = list(t, f)
	if got := fmt.Sprint(uids(l)); got != "[1 2 3]" || l.UIDNext != 4 || l.UIDValidity != validity {
		t.Fatalf("after 3 deliveries: %v next %d validity %d", got, l.UIDNext, l.UIDValidity)
	}
	for i, m := range l.Messages {
		if !m.New || m.Flags != "" || m.Size <= 0 {
			t.Errorf("message %d: %+v", i, m)
		}
		b, err := f.ReadMessage(m.UID)
		if err != nil || int64(len(b)) != m.Size || !strings.Contains(string(b), fmt.Sprintf("body %d", i)) {
			t.Errorf("message %d: %q %v", i, b, err)
		}
	}

	// Seen by a client: moved to cur/ with the info, same UIDs.
	if err := f.MarkSeen([]uint32{1, 2}); err != nil {
		t.Fatal(err)
	}
	if err := f.SetFlags([]uint32{2}, "SF", ""); err != nil {
		t.Fatal(err)
	}
	cur := files(t, s, box, "cur")
	if len(cur) != 2 {
		t.Fatalf("cur/ holds %v", cur)
	}
	for name := range cur {
		if !strings.Contains(name, ":2,") {
			t.Errorf("%s lacks the info", name)
		}
	}
	l = list(t, f)
	if got := fmt.Sprint(uids(l)); got != "[1 2 3]" {
		t.Fatalf("after moves: %v", got)
	}
	if m := l.Messages[1]; m.Flags != "FS" || m.New {
		t.Errorf("message 2: %+v", m)
	}
	if err := f.SetFlags([]uint32{2}, "", "F"); err != nil {
		t.Fatal(err)
	}
	if m := list(t, f).Messages[1]; m.Flags != "S" {
		t.Errorf("message 2 after removing F: %+v", m)
	}

	// Another program renames a file (adds a flag): same UID.
	for name := range cur {
		if strings.HasSuffix(name, ":2,") {
			os.Rename(filepath.Join(s.MaildirPath(box), "cur", name), filepath.Join(s.MaildirPath(box), "cur", name+"T"))
		}
	}
	f.ix.mu.Lock()
	f.ix.forceRescan() // the rename may fall in the same time-stamp tick
	f.ix.mu.Unlock()
	l = list(t, f)
	if got := fmt.Sprint(uids(l)); got != "[1 2 3]" || l.Messages[0].Flags != "T" {
		t.Fatalf("after external rename: %v %+v", got, l.Messages[0])
	}

	// Delete: gone, the others keep their UIDs, usage recounted.
	if err := f.Delete([]uint32{2}); err != nil {
		t.Fatal(err)
	}
	deliverN(t, s, box, 1)
	l = list(t, f)
	if got := fmt.Sprint(uids(l)); got != "[1 3 4]" || l.UIDNext != 5 {
		t.Fatalf("after delete and delivery: %v next %d", got, l.UIDNext)
	}
	if _, _, err := f.Open(2); !errors.Is(err, ErrNoMessage) {
		t.Errorf("open deleted: %v", err)
	}
	var total int64
	for _, m := range l.Messages {
		total += m.Size
	}
	if used, n, _ := s.Usage(box); used != total || n != 3 {
		t.Errorf("usage %d/%d, want %d/3", used, n, total)
	}

	// Restart: same UIDs and UIDVALIDITY from agua-uidlist.
	root := s.root
	f.Close()
	s.Close()
	s2, err := Open(root, Options{Hostname: "other"})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	f2 := openFolder(t, s2, box, "INBOX")
	l2 := list(t, f2)
	if fmt.Sprint(uids(l2)) != "[1 3 4]" || l2.UIDValidity != validity || l2.UIDNext != 5 {
		t.Fatalf("after restart: %+v", l2)
	}
	deliverN(t, s2, box, 1)
	if got := fmt.Sprint(uids(list(t, f2))); got != "[1 3 4 5]" {
		t.Fatalf("after restart and delivery: %v", got)
	}
}

func TestFolderUIDListLostOrCorrupt(t *testing.T) {
	for _, damage := range []string{"remove", "garbage", "truncated", "duplicate"} {
		t.Run(damage, func(t *testing.T) {
			s := openTest(t)
			deliverN(t, s, box, 3)
			f := openFolder(t, s, box, "")
			old := list(t, f).UIDValidity
			f.Close()
			path := filepath.Join(s.MaildirPath(box), uidlistName)
			data, _ := os.ReadFile(path)
			switch damage {
			case "remove":
				os.Remove(path)
			case "garbage":
				os.WriteFile(path, []byte("\x00\x01nonsense"), 0o600)
			case "truncated":
				os.WriteFile(path, data[:len(data)-5], 0o600)
			case "duplicate":
				lines := strings.SplitAfter(string(data), "\n")
				os.WriteFile(path, []byte(strings.Join(append(lines, lines[1]), "")), 0o600)
			}
			// Let the clock move on: a new UIDVALIDITY must still be larger
			// even within the same second.
			f = openFolder(t, s, box, "")
			l := list(t, f)
			if damage != "remove" && l.UIDValidity <= old {
				t.Errorf("UIDVALIDITY %d after damage, was %d", l.UIDValidity, old)
			}
			if len(l.Messages) != 3 || fmt.Sprint(uids(l)) != "[1 2 3]" {
				t.Errorf("listing after damage: %v", uids(l))
			}
			b, _ := os.ReadFile(path)
			if !strings.HasPrefix(string(b), uidlistMagic+" V") {
				t.Errorf("uidlist not rewritten: %q", b)
			}
		})
	}
}

func TestFolderLock(t *testing.T) {
	s := openTest(t)
	a := openFolder(t, s, box, "")
	b := openFolder(t, s, box, "INBOX")
	unlock, err := a.Lock()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Lock(); !errors.Is(err, ErrLocked) {
		t.Fatalf("second lock: %v", err)
	}
	// Another mailbox is not affected.
	if u, err := openFolder(t, s, "bob@example.org", "").Lock(); err != nil {
		t.Fatal(err)
	} else {
		u()
	}
	unlock()
	unlock() // releasing twice is harmless
	u2, err := b.Lock()
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	u2()
}

func TestFolderNames(t *testing.T) {
	s := openTest(t)
	for _, bad := range []string{".Sent", "a..b", "Sent.", "a/b", "x\ny", `a\b`} {
		if _, err := s.Folder(box, bad); !errors.Is(err, ErrBadFolder) {
			t.Errorf("Folder(%q): %v", bad, err)
		}
	}
	if _, err := s.Folder(box, "Sent"); !errors.Is(err, ErrNoFolder) {
		t.Errorf("missing Sent: %v", err)
	}
	for _, sub := range []string{"tmp", "new", "cur"} {
		os.MkdirAll(filepath.Join(s.MaildirPath(box), ".Sent", sub), 0o700)
	}
	sent := openFolder(t, s, box, "Sent")
	os.WriteFile(filepath.Join(s.MaildirPath(box), ".Sent", "cur", "1.M1P1.h,S=5:2,S"), []byte("hello"), 0o600)
	l := list(t, sent)
	if len(l.Messages) != 1 || l.Messages[0].UID != 1 || l.Messages[0].Flags != "S" || l.Messages[0].Size != 5 {
		t.Fatalf("Sent: %+v", l)
	}
	if n := len(list(t, openFolder(t, s, box, "")).Messages); n != 0 {
		t.Errorf("INBOX sees %d messages of Sent", n)
	}
}

// Names without ",S=" (written by other programs) are sized by stat.
func TestFolderForeignNames(t *testing.T) {
	s := openTest(t)
	f := openFolder(t, s, box, "")
	dir := s.MaildirPath(box)
	os.WriteFile(filepath.Join(dir, "new", "1234.foreign"), []byte("abc\r\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "cur", ".hidden"), []byte("x"), 0o600)
	os.Mkdir(filepath.Join(dir, "cur", "adir"), 0o700)
	l := list(t, f)
	if len(l.Messages) != 1 || l.Messages[0].Size != 5 || l.Messages[0].Key != "1234.foreign" {
		t.Fatalf("%+v", l)
	}
}

// Deliveries racing listings: every message ends up listed once, with
// distinct, increasing UIDs.
func TestFolderConcurrentDelivery(t *testing.T) {
	s := openTest(t)
	f := openFolder(t, s, box, "")
	const n = 40
	var wg sync.WaitGroup
	delivered := make(chan struct{})
	go func() {
		defer close(delivered)
		for i := range n {
			msg := message(fmt.Sprintf("Subject: %d\r\n\r\nbody\r\n", i))
			if err := s.Deliver(context.Background(), msg, []Recipient{rcpt(box, 1<<30)}); err != nil {
				t.Error(err)
			}
		}
	}()
	stop := make(chan struct{})
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			l, err := f.List()
			if err != nil {
				t.Error(err)
				return
			}
			for i := 1; i < len(l.Messages); i++ {
				if l.Messages[i].UID <= l.Messages[i-1].UID {
					t.Errorf("UIDs out of order: %v", uids(l))
					return
				}
			}
			time.Sleep(time.Millisecond)
		}
	})
	<-delivered
	close(stop)
	wg.Wait()
	f.ix.mu.Lock()
	f.ix.forceRescan()
	f.ix.mu.Unlock()
	l := list(t, f)
	if len(l.Messages) != n || l.Messages[n-1].UID != n {
		t.Fatalf("%d messages, last UID %d", len(l.Messages), l.Messages[len(l.Messages)-1].UID)
	}
}

func TestNaturalCompare(t *testing.T) {
	sorted := []string{"1700000000.M99P1Q10.h", "1700000000.M123P1Q2.h", "1700000000.M123P1Q10.h", "1700000001.M5P1Q1.h", "1700000001.M5P1Q1.hx", "1700000010.M0P1Q1.h"}
	for i := range sorted {
		for j := range sorted {
			c := naturalCompare(sorted[i], sorted[j])
			if (i < j && c >= 0) || (i > j && c <= 0) || (i == j && c != 0) {
				t.Errorf("naturalCompare(%q, %q) = %d", sorted[i], sorted[j], c)
			}
		}
	}
}

// Open and Delete find a message another program renamed since the last
// listing (a flag change), without a new listing.
func TestFolderRenamedBehindOurBack(t *testing.T) {
	s := openTest(t)
	deliverN(t, s, box, 2)
	f := openFolder(t, s, box, "")
	list(t, f)
	if err := f.MarkSeen([]uint32{1, 2}); err != nil {
		t.Fatal(err)
	}
	cur := filepath.Join(s.MaildirPath(box), "cur")
	for name := range files(t, s, box, "cur") {
		if err := os.Rename(filepath.Join(cur, name), filepath.Join(cur, name+"RS")); err != nil {
			t.Fatal(err)
		}
	}
	b, err := f.ReadMessage(1)
	if err != nil || !strings.Contains(string(b), "body 0") {
		t.Fatalf("read after external rename: %q %v", b, err)
	}
	if err := f.Delete([]uint32{2}); err != nil {
		t.Fatal(err)
	}
	if got := files(t, s, box, "cur"); len(got) != 1 {
		t.Fatalf("cur/ after delete: %v", got)
	}
	if l := list(t, f); len(l.Messages) != 1 || l.Messages[0].UID != 1 || l.Messages[0].Flags != "RS" {
		t.Fatalf("listing: %+v", l.Messages)
	}
}
