package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/maildir"
	"github.com/agua-mail/agua/internal/mailstore"
)

// useDBStore makes agua migrate take store as its PostgreSQL store.
func useDBStore(t *testing.T, store func(t *testing.T) mailstore.Store) {
	old := openDBStore
	openDBStore = func(context.Context, config.Config, *slog.Logger) (mailstore.Store, func(), error) {
		return store(t), func() {}, nil
	}
	t.Cleanup(func() { openDBStore = old })
}

// dataMaildir opens the Maildir store of a data folder.
func dataMaildir(t *testing.T, data string) mailstore.Store {
	t.Helper()
	s, err := maildir.Open(filepath.Join(data, "mail"), maildir.Options{Hostname: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s.MailStore()
}

// fillMail gives user mail in INBOX and two folders, with flags, dates and
// UID gaps.
func fillMail(t *testing.T, s mailstore.Store, user string, n int) {
	t.Helper()
	ctx := context.Background()
	for _, name := range []string{"", "Archive", "Archive.2025"} {
		if name != "" {
			if err := s.CreateFolder(ctx, user, name); err != nil {
				t.Fatal(err)
			}
		}
		f, err := s.Folder(ctx, user, name)
		if err != nil {
			t.Fatal(err)
		}
		var del []uint32
		for i := range n {
			body := fmt.Sprintf("Subject: %s %d\r\n\r\n%s\r\n", user, i, strings.Repeat("y", i))
			uid, _, err := f.Append(strings.NewReader(body), int64(len(body)), []string{"", "S", "FS"}[i%3],
				time.Date(2025, 1, 1+i%28, 0, 0, 0, 0, time.UTC))
			if err != nil {
				t.Fatal(err)
			}
			if i%4 == 1 {
				del = append(del, uid)
			}
		}
		if err := f.Delete(del); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
}

// mailOf is everything a client sees of user's mail: per folder
// UIDVALIDITY, UIDNEXT and each message's UID, size, flags, date, bytes.
func mailOf(t *testing.T, s mailstore.Store, user string) []string {
	t.Helper()
	ctx := context.Background()
	names, err := s.ListFolders(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, name := range append([]string{""}, names...) {
		f, err := s.Folder(ctx, user, name)
		if err != nil {
			t.Fatal(err)
		}
		l, err := f.List()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("folder %q V%d N%d", name, l.UIDValidity, l.UIDNext))
		for _, m := range l.Messages {
			r, _, err := f.Open(m.UID)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(r)
			r.Close()
			d, derr := f.ModTime(m.UID)
			if err != nil || derr != nil {
				t.Fatal(err, derr)
			}
			out = append(out, fmt.Sprintf("%d %d %q %d %q", m.UID, m.Size, m.Flags, d.Unix(), b))
		}
		f.Close()
	}
	return out
}

func sameMail(t *testing.T, what string, want, got []string) {
	t.Helper()
	if slices.Equal(want, got) {
		return
	}
	for i := range min(len(want), len(got)) {
		if want[i] != got[i] {
			t.Fatalf("%s: line %d is %s, want %s", what, i, got[i], want[i])
		}
	}
	t.Fatalf("%s: %d lines, want %d", what, len(got), len(want))
}

// agua migrate moves every user of the directory to the "database" store
// (a second Maildir here) and one user back into a new data folder, with
// identical UIDs and UIDVALIDITY; a second run copies nothing; it refuses
// while the server runs.
func TestMigrateThereAndBack(t *testing.T) {
	data, db, back := t.TempDir(), t.TempDir(), t.TempDir()
	useDBStore(t, func(t *testing.T) mailstore.Store { return dataMaildir(t, db) })
	mustAgua(t, "", "domain", "add", "example.test", "-data", data)
	users := []string{"carol@example.test", "dave@example.test"}
	for _, u := range users {
		mustAgua(t, "pass-word-1\n", "user", "add", u, "-data", data)
	}
	src := dataMaildir(t, data)
	for i, u := range users {
		fillMail(t, src, u, 10+i*7)
	}
	want := map[string][]string{}
	for _, u := range users {
		want[u] = mailOf(t, src, u)
	}

	out := mustAgua(t, "", "migrate", "maildir-to-db", "-progress", "-verify", "full", "-data", data)
	if !strings.Contains(out, "2 users, 6 folders;") || !strings.Contains(out, "0 already there") || !strings.Contains(out, "verified") {
		t.Fatalf("migrate maildir-to-db said %q", out)
	}
	for _, u := range users {
		sameMail(t, u+" in the db store", want[u], mailOf(t, dataMaildir(t, db), u))
	}
	out = mustAgua(t, "", "migrate", "maildir-to-db", "-data", data)
	if !strings.Contains(out, " 0 messages (0 bytes) copied") {
		t.Fatalf("second migrate maildir-to-db said %q", out)
	}
	mustAgua(t, "", "domain", "add", "example.test", "-data", back)
	if code, _, errs := agua(t, "", "migrate", "db-to-maildir", "-user", "carol@example.test", "-data", back); code == 0 || !strings.Contains(errs, "not a local user") {
		t.Fatalf("migrate of a user the directory does not know: exit %d %q", code, errs)
	}
	mustAgua(t, "pass-word-1\n", "user", "add", "carol@example.test", "-data", back)
	mustAgua(t, "", "migrate", "db-to-maildir", "-user", "Carol@Example.test", "-data", back)
	sameMail(t, "carol back in a Maildir", want[users[0]], mailOf(t, dataMaildir(t, back), users[0]))

	_, stop := startAgua(t, data)
	defer stop()
	if code, _, errs := agua(t, "", "migrate", "maildir-to-db", "-data", data); code == 0 || !strings.Contains(errs, "server is running") {
		t.Fatalf("migrate while the server runs: exit %d %q", code, errs)
	}
	if code, _, errs := agua(t, "", "migrate", "sideways", "-data", back); code != 2 || !strings.Contains(errs, "maildir-to-db|db-to-maildir") {
		t.Fatalf("migrate sideways: exit %d %q", code, errs)
	}
}

// A target folder that already holds other mail is refused, and the
// message says what that means and what to do, beyond the UID figures.
func TestMigrateIntoAFolderWithOtherMail(t *testing.T) {
	data, db := t.TempDir(), t.TempDir()
	useDBStore(t, func(t *testing.T) mailstore.Store { return dataMaildir(t, db) })
	mustAgua(t, "", "domain", "add", "example.test", "-data", data)
	mustAgua(t, "pass-word-1\n", "user", "add", "erin@example.test", "-data", data)
	fillMail(t, dataMaildir(t, data), "erin@example.test", 3)
	fillMail(t, dataMaildir(t, db), "erin@example.test", 4) // other mail, other UIDVALIDITY
	code, _, errs := agua(t, "", "migrate", "maildir-to-db", "-data", data)
	if code != 1 || !strings.Contains(errs, "folder is not empty") || !strings.Contains(errs, "Move that mail aside first") {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
}
