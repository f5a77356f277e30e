package maildir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestFolderManagement(t *testing.T) {
	s := openTest(t)
	if err := s.CreateDefaultFolders(box, []string{"Sent", "Trash"}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateFolder(box, "Sent"); !errors.Is(err, ErrFolderExists) {
		t.Fatalf("create twice: %v", err)
	}
	if err := s.DeleteFolder(box, "Trash"); err != nil {
		t.Fatal(err)
	}
	// The defaults are made once: a deleted one stays deleted.
	if err := s.CreateDefaultFolders(box, []string{"Sent", "Trash"}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"A", "A.B", "A.B.C", "agua-new-x"} {
		if err := s.CreateFolder(box, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.RenameFolder(box, "A", "Z"); err != nil {
		t.Fatal(err)
	}
	if err := s.RenameFolder(box, "Z", "Z.Q"); !errors.Is(err, ErrBadFolder) {
		t.Fatalf("rename below itself: %v", err)
	}
	got, err := s.ListFolders(box)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"Sent", "Z", "Z.B", "Z.B.C", "agua-new-x"}; !slices.Equal(got, want) {
		t.Fatalf("folders %v, want %v", got, want)
	}
	for _, bad := range []string{"", "..", "../x", "a/b", ".x", "x.", "a..b", "a\x00b", "INBOX"} {
		if err := s.CreateFolder(box, bad); !errors.Is(err, ErrBadFolder) {
			t.Errorf("CreateFolder(%q) = %v, want ErrBadFolder", bad, err)
		}
	}
}

func TestFolderAppendCopy(t *testing.T) {
	s := openTest(t)
	if err := s.CreateFolder(box, "Sent"); err != nil {
		t.Fatal(err)
	}
	sent := openFolder(t, s, box, "Sent")
	inbox := openFolder(t, s, box, "")
	msg := "Subject: hi\r\n\r\nhello\r\n"
	date := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	uid, validity, err := sent.Append(strings.NewReader(msg), int64(len(msg)), "SR", date)
	if err != nil {
		t.Fatal(err)
	}
	l := list(t, sent)
	if uid != 1 || validity != l.UIDValidity || len(l.Messages) != 1 || l.Messages[0].Flags != "RS" {
		t.Fatalf("append: uid %d validity %d listing %+v", uid, validity, l)
	}
	if mt, err := sent.ModTime(uid); err != nil || !mt.Equal(date) {
		t.Fatalf("mod time %v %v", mt, err)
	}
	if _, _, err := sent.Append(strings.NewReader(msg), int64(len(msg))+5, "", time.Time{}); err == nil {
		t.Fatal("short message accepted")
	}
	src, dst, v, err := sent.CopyTo(inbox, []uint32{uid, 99})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(src, []uint32{uid}) || len(dst) != 1 || v != list(t, inbox).UIDValidity {
		t.Fatalf("copy: %v %v %d", src, dst, v)
	}
	body, err := inbox.ReadMessage(dst[0])
	if err != nil || string(body) != msg {
		t.Fatalf("copied body %q %v", body, err)
	}
	if b, n, err := s.FolderUsage(box); err != nil || n != 2 || b != 2*int64(len(msg)) {
		t.Fatalf("usage %d %d %v", b, n, err)
	}
}

func TestFolderStamp(t *testing.T) {
	s := openTest(t)
	clock := time.Now()
	s.now = func() time.Time { return clock }
	f := openFolder(t, s, box, "")
	st1, settled, err := f.Stamp()
	if err != nil || settled {
		t.Fatalf("fresh folder: settled %v, %v", settled, err)
	}
	clock = clock.Add(time.Minute)
	st2, settled, err := f.Stamp()
	if err != nil || !settled || st2 != st1 {
		t.Fatalf("a minute later: %v %v %v", st2 == st1, settled, err)
	}
	deliverN(t, s, box, 1)
	if st3, _, _ := f.Stamp(); st3 == st2 {
		t.Fatal("stamp unchanged by a delivery")
	}
}

// The quota counts the whole mailbox: a message kept in a Maildir++ folder
// (e.g. Sent, by an IMAP client) uses quota as one in INBOX does.
func TestUsageCountsFolders(t *testing.T) {
	s := openTest(t)
	const mb = "quota@example.test"
	if _, err := s.Folder(mb, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateFolder(mb, "Sent"); err != nil {
		t.Fatal(err)
	}
	sent := filepath.Join(s.MaildirPath(mb), ".Sent", "cur", "1700000000.M1P1Q1.host,S=1000:2,S")
	if err := os.WriteFile(sent, make([]byte, 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	s.Forget(mb)
	bytes, count, err := s.Usage(mb)
	if err != nil || bytes != 1000 || count != 1 {
		t.Fatalf("usage %d bytes, %d messages, %v; want 1000, 1", bytes, count, err)
	}
}

// TestTwoProcessesOneFolder: two stores on the same root stand for the
// server and `agua import` running at once. Each has its own in-memory
// index; appends from both, interleaved, must get distinct UIDs that both
// agree on, with nothing lost.
func TestTwoProcessesOneFolder(t *testing.T) {
	a := openTest(t)
	b, err := Open(a.root, Options{Hostname: "other.test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if err := a.CreateFolder(box, "Shared"); err != nil {
		t.Fatal(err)
	}
	fa, err := a.Folder(box, "Shared")
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb, err := b.Folder(box, "Shared")
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	const n = 40
	uids := map[uint32]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, f := range []*Folder{fa, fb} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range n {
				body := fmt.Sprintf("Subject: %d-%d\r\n\r\nx\r\n", i, j)
				uid, _, err := f.Append(strings.NewReader(body), int64(len(body)), "S", time.Time{})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if prev, dup := uids[uid]; dup {
					t.Errorf("UID %d handed out twice: %s and %d-%d", uid, prev, i, j)
				}
				uids[uid] = fmt.Sprintf("%d-%d", i, j)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	la, err := fa.List()
	if err != nil {
		t.Fatal(err)
	}
	lb, err := fb.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(la.Messages) != 2*n || len(lb.Messages) != 2*n || la.UIDValidity != lb.UIDValidity {
		t.Fatalf("listings: %d and %d messages, validity %d and %d", len(la.Messages), len(lb.Messages), la.UIDValidity, lb.UIDValidity)
	}
	for i, m := range la.Messages {
		if lb.Messages[i].UID != m.UID {
			t.Fatalf("message %d: UID %d in one process, %d in the other", i, m.UID, lb.Messages[i].UID)
		}
		data, err := fb.ReadMessage(m.UID)
		if err != nil {
			t.Fatal(err)
		}
		if want := uids[m.UID]; !strings.Contains(string(data), "Subject: "+want+"\r\n") {
			t.Fatalf("UID %d reads %q, Append returned it for %s", m.UID, data, want)
		}
	}
}
