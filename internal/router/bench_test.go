package router

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/agua-mail/agua/internal/directory"
	"github.com/agua-mail/agua/internal/maildir"
	"github.com/agua-mail/agua/internal/smtpd"
)

// BenchmarkRCPT measures one MX transaction with one RCPT TO (known user,
// unknown user, alias) on the directory as agua serve opens it (with the
// in-memory snapshot), and with every lookup in SQL:
//
//	go test -run '^$' -bench RCPT -benchmem ./internal/router/
func BenchmarkRCPT(b *testing.B) {
	b.Run("Snapshot", func(b *testing.B) { benchRCPT(b, 1000) })
	b.Run("SQL", func(b *testing.B) { benchRCPT(b, 0) })
}

func benchRCPT(b *testing.B, snapshotMax int) {
	ctx := context.Background()
	tmp := b.TempDir()
	dir, err := directory.Open(filepath.Join(tmp, "agua.db"), directory.Options{DefaultQuota: 1 << 20, SnapshotMaxEntries: snapshotMax})
	if err != nil {
		b.Fatal(err)
	}
	defer dir.Close()
	store, err := maildir.Open(filepath.Join(tmp, "mail"), maildir.Options{Hostname: "test"})
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	for _, err := range []error{
		dir.AddDomain(ctx, "example.test"),
		dir.AddUser(ctx, "alice@example.test", "pw", 0),
		dir.AddAlias(ctx, "team@example.test", "alice@example.test"),
	} {
		if err != nil {
			b.Fatal(err)
		}
	}
	r, err := New(Config{Hostname: "mx.example.test", Accounts: dir, Local: NewLocal(store)})
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name, rcpt string
		ok         bool
	}{
		{"User", "alice@example.test", true},
		{"Unknown", "guess42@example.test", false},
		{"Alias", "team@example.test", true},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				tx, err := r.NewTransaction(ctx, mx, smtpd.Mail{From: "someone@elsewhere.example"})
				if err != nil {
					b.Fatal(err)
				}
				if err := tx.AddRcpt(ctx, c.rcpt); (err == nil) != c.ok {
					b.Fatal(err)
				}
				tx.Abort()
			}
		})
	}
}
