package maildir

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
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
