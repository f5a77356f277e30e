package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/mailstore"
	"github.com/agua-mail/agua/internal/pg"
	"github.com/agua-mail/agua/internal/pg/pgtest"
	"github.com/agua-mail/agua/internal/pgstore"
)

// fillLarge gives user's INBOX n messages under UIDVALIDITY 1234567 with
// UIDs 1..n less every seventh, UIDNEXT n+5, flags and dates varied, in
// batches (one commit each).
func fillLarge(t *testing.T, s mailstore.Store, user string, n int) {
	t.Helper()
	f, err := s.Folder(context.Background(), user, "")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.(mailstore.UIDKeeper).SetUIDs(1234567, uint32(n+5)); err != nil {
		t.Fatal(err)
	}
	var batch []mailstore.UIDMessage
	for i := 1; i <= n; i++ {
		if i%7 == 0 && i != n {
			continue
		}
		body := fmt.Sprintf("Subject: large %d\r\nFrom: a@example.test\r\n\r\n%s\r\n", i, strings.Repeat("z", i%101))
		batch = append(batch, mailstore.UIDMessage{R: strings.NewReader(body), Size: int64(len(body)), UID: uint32(i),
			Flags: []string{"", "S", "FS", "RS", "DS"}[i%5], Date: time.Date(2019, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Hour)})
		if len(batch) == 500 || i == n {
			if err := f.(mailstore.UIDBatcher).AppendUIDs(batch); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
}

// The "done when": a user with 10k messages (and folders with
// flags, dates and UID gaps) moves Maildir → PostgreSQL → Maildir with
// identical UIDs, UIDVALIDITY and UIDNEXT, on a real PostgreSQL (fsync
// off: this test is about what is copied, not about durability).
func TestMigratePostgresThereAndBack(t *testing.T) {
	n := 10000
	if testing.Short() {
		n = 500
	}
	url := pgtest.StartWith(t, pgtest.Options{NoFsync: true}).NewDatabase(t)
	data, back := t.TempDir(), t.TempDir()
	cfgFile := filepath.Join(t.TempDir(), "agua.toml")
	if err := os.WriteFile(cfgFile, fmt.Appendf(nil, "[postgres]\nurl = %q\n", url), 0o600); err != nil {
		t.Fatal(err)
	}
	const user = "erin@example.test"
	for _, d := range []string{data, back} {
		mustAgua(t, "", "domain", "add", "example.test", "-data", d)
		mustAgua(t, "pass-word-1\n", "user", "add", user, "-data", d)
	}
	mustAgua(t, "", "db", "migrate", "-config", cfgFile, "-data", data)
	src := dataMaildir(t, data)
	fillLarge(t, src, user, n)
	fillMail(t, src, user, 12)
	want := mailOf(t, src, user)

	out := mustAgua(t, "", "migrate", "maildir-to-db", "-progress", "-config", cfgFile, "-data", data)
	if !strings.Contains(out, "1 users, 3 folders;") || !strings.Contains(out, "verified") {
		t.Fatalf("migrate maildir-to-db said %q", out)
	}
	ctx := context.Background()
	pool, err := pg.Open(ctx, url, pg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	db := pgstore.Open(pool, pgstore.Options{})
	defer db.Close()
	sameMail(t, "in PostgreSQL", want, mailOf(t, db, user))

	out = mustAgua(t, "", "migrate", "db-to-maildir", "-user", user, "-config", cfgFile, "-data", back)
	if !strings.Contains(out, "0 already there") {
		t.Fatalf("migrate db-to-maildir said %q", out)
	}
	sameMail(t, "back in a Maildir", want, mailOf(t, dataMaildir(t, back), user))
}

// Without [postgres] url there is no database to move to, said plainly.
func TestMigrateNeedsPostgresURL(t *testing.T) {
	code, _, errs := agua(t, "", "migrate", "maildir-to-db", "-data", t.TempDir())
	if code == 0 || !strings.Contains(errs, "[postgres] url is not set") {
		t.Fatalf("migrate without [postgres] url: exit %d %q", code, errs)
	}
}
