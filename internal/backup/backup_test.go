package backup

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agua-mail/agua/internal/directory"
)

// A data folder on a tmpfs backed up to the disk: hard links are
// impossible (EXDEV), so every message is copied, with its time; tmp/
// (unacknowledged deliveries) is left out, the manifest counts what is in.
func TestCopiesAcrossFileSystems(t *testing.T) {
	shm, err := os.MkdirTemp("/dev/shm", "agua-backup-test-")
	if err != nil {
		t.Skip("no /dev/shm:", err)
	}
	t.Cleanup(func() { os.RemoveAll(shm) })
	data := filepath.Join(shm, "data")
	db := filepath.Join(data, "agua.db")
	os.MkdirAll(data, 0o750)
	d, err := directory.Open(db, directory.Options{DefaultQuota: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	d.AddDomain(context.Background(), "example.test")
	d.Close()
	box := filepath.Join(data, "mail", "example.test", "ann")
	for _, sub := range []string{"new", "cur", "tmp", ".Sent/new", ".Sent/cur", ".Sent/tmp"} {
		os.MkdirAll(filepath.Join(box, sub), 0o750)
	}
	files := map[string]string{
		"new/1.M1P1Q1.host,S=5":      "hello",
		"cur/2.M1P1Q2.host,S=3:2,S":  "abc",
		".Sent/cur/3.M1P1Q3.host:2,": "sent",
		"tmp/4.M1P1Q4.host":          "unacknowledged",
		"agua-uidlist":               "3 V1 N3\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(box, name), []byte(body), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	os.MkdirAll(filepath.Join(data, "dkim", "example.test"), 0o700)
	os.Chmod(filepath.Join(data, "dkim"), 0o700)
	os.WriteFile(filepath.Join(data, "dkim", "example.test", "sel.key"), []byte("private"), 0o600)
	os.MkdirAll(filepath.Join(data, "shield"), 0o750)
	os.WriteFile(filepath.Join(data, "shield", "shield-state.json"), []byte("{}"), 0o640)

	dest := filepath.Join(t.TempDir(), "bk")
	m, err := Create(context.Background(), dest, Options{DataDir: data, Database: db, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if m.Mail.Messages != 3 || m.Mail.Folders != 2 || m.Linked != 0 || m.Accounts.Domains != 1 {
		t.Fatalf("manifest: %+v", m)
	}
	if _, err := os.Stat(filepath.Join(dest, DataFolder, "mail", "example.test", "ann", "tmp", "4.M1P1Q4.host")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("tmp/ file backed up: %v", err)
	}
	src, _ := os.Stat(filepath.Join(box, "new/1.M1P1Q1.host,S=5"))
	got, err := os.Stat(filepath.Join(dest, DataFolder, "mail", "example.test", "ann", "new/1.M1P1Q1.host,S=5"))
	if err != nil || !got.ModTime().Equal(src.ModTime()) {
		t.Fatalf("copied message: %v, time %v want %v", err, got, src.ModTime())
	}
	// Private keys keep their modes, and their folder too.
	if fi, err := os.Stat(filepath.Join(dest, DataFolder, "dkim")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("dkim folder: %v %v", fi.Mode(), err)
	}
	if fi, err := os.Stat(filepath.Join(dest, DataFolder, "dkim", "example.test", "sel.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("dkim key: %v %v", fi.Mode(), err)
	}
	// A second backup into the same folder is refused.
	if _, err := Create(context.Background(), dest, Options{DataDir: data, Database: db}); !errors.Is(err, ErrNotEmpty) ||
		!strings.HasPrefix(err.Error(), "backup: the target is not empty: ") {
		t.Fatalf("backup into a non-empty folder: %v", err)
	}
	// A backup inside the data folder would copy itself.
	if _, err := Create(context.Background(), filepath.Join(data, "bk"), Options{DataDir: data, Database: db}); err == nil {
		t.Fatal("backup inside the data folder accepted")
	}
	// Restore refuses a folder without a manifest.
	if _, err := Restore(context.Background(), t.TempDir(), RestoreOptions{DataDir: t.TempDir(), Database: filepath.Join(t.TempDir(), "a.db")}); !errors.Is(err, ErrNotBackup) ||
		!strings.HasPrefix(err.Error(), "restore: not a finished backup (no manifest.json): ") {
		t.Fatalf("restore from a non-backup: %v (want it named restore:)", err)
	}
}

// A reader moves mail while the backup lists it: a message moved from
// new/ to cur/ right after new/ was listed (an IMAP SELECT), and one
// renamed in cur/ right after cur/ was listed (a flag change), are both
// in the backup, under their new names.
func TestMessagesMovedDuringBackup(t *testing.T) {
	data := t.TempDir()
	db := filepath.Join(data, "agua.db")
	d, err := directory.Open(db, directory.Options{DefaultQuota: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	box := filepath.Join(data, "mail", "example.test", "ann")
	for _, sub := range []string{"new", "cur", "tmp"} {
		os.MkdirAll(filepath.Join(box, sub), 0o750)
	}
	os.WriteFile(filepath.Join(box, "new", "1.A.host,S=3"), []byte("one"), 0o640)
	os.WriteFile(filepath.Join(box, "cur", "2.B.host,S=3:2,"), []byte("two"), 0o640)
	moved := map[string]bool{}
	testHookListed = func(dir string) {
		switch filepath.Base(dir) {
		case "new":
			if !moved["new"] {
				moved["new"] = true
				os.Rename(filepath.Join(box, "new", "1.A.host,S=3"), filepath.Join(box, "cur", "1.A.host,S=3:2,S"))
			}
		case "cur":
			if !moved["cur"] {
				moved["cur"] = true
				os.Rename(filepath.Join(box, "cur", "2.B.host,S=3:2,"), filepath.Join(box, "cur", "2.B.host,S=3:2,F"))
			}
		}
	}
	t.Cleanup(func() { testHookListed = nil })
	dest := filepath.Join(t.TempDir(), "bk")
	m, err := Create(context.Background(), dest, Options{DataDir: data, Database: db})
	if err != nil {
		t.Fatal(err)
	}
	if m.Mail.Messages != 2 {
		t.Fatalf("%d messages in the backup, want 2", m.Mail.Messages)
	}
	for _, name := range []string{"cur/1.A.host,S=3:2,S", "cur/2.B.host,S=3:2,F"} {
		if _, err := os.Stat(filepath.Join(dest, DataFolder, "mail", "example.test", "ann", name)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
