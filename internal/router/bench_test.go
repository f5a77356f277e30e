package router

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/directory"
	"github.com/agua-mail/agua/internal/dkim"
	"github.com/agua-mail/agua/internal/mailauth"
	"github.com/agua-mail/agua/internal/maildir"
	"github.com/agua-mail/agua/internal/resolver"
	"github.com/agua-mail/agua/internal/resolver/dnstest"
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

// BenchmarkAcceptAuth is one durable MX acceptance (MAIL, RCPT, DATA of a
// DKIM-signed message, delivery made durable) with sender authentication
// off, and on with every record in the resolver's cache: the cost the
// checks add to accepting mail.
//
//	go test -run '^$' -bench AcceptAuth -benchmem ./internal/router/
func BenchmarkAcceptAuth(b *testing.B) {
	b.Run("Off", func(b *testing.B) { benchAccept(b, false) })
	b.Run("On", func(b *testing.B) { benchAccept(b, true) })
}

func benchAccept(b *testing.B, auth bool) {
	ctx := context.Background()
	tmp := b.TempDir()
	dir, err := directory.Open(filepath.Join(tmp, "agua.db"), directory.Options{DefaultQuota: 1 << 40})
	if err != nil {
		b.Fatal(err)
	}
	defer dir.Close()
	store, err := maildir.Open(filepath.Join(tmp, "mail"), maildir.Options{Hostname: "test"})
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	if err := dir.AddDomain(ctx, "example.test"); err != nil {
		b.Fatal(err)
	}
	if err := dir.AddUser(ctx, "alice@example.test", "pw", 0); err != nil {
		b.Fatal(err)
	}
	// bank.example signs with ed25519 and sends from the session's address.
	keys := b.TempDir()
	k, err := dkim.Keygen(keys, "bank.example", dkim.Ed25519, "", time.Time{})
	if err != nil {
		b.Fatal(err)
	}
	dns := dnstest.Start(b, "127.0.0.1")
	dns.Add(b, `bank.example. 300 IN TXT "v=spf1 ip4:127.0.0.2 -all"`, `_dmarc.bank.example. 300 IN TXT "v=DMARC1; p=reject"`,
		k.Name()+` 300 IN TXT "`+strings.Join(k.RecordStrings(), `" "`)+`"`)
	res, err := resolver.New(resolver.Config{Servers: []string{dns.Addr}})
	if err != nil {
		b.Fatal(err)
	}
	cfg := Config{Hostname: "mx.example.test", Accounts: dir, Local: NewLocal(store)}
	if auth {
		if cfg.Auth, err = mailauth.New(mailauth.Config{Hostname: "mx.example.test", Resolver: res}); err != nil {
			b.Fatal(err)
		}
		cfg.AuthPolicy = mailauth.Policy{DMARCReject: true, DMARCQuarantine: true}
	}
	r, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	m := []byte("From: alice@bank.example\r\nTo: alice@example.test\r\nSubject: hi\r\nDate: Sat, 05 Dec 2026 20:00:00 +0000\r\n\r\n" + strings.Repeat("A line of a message of a few kilobytes.\r\n", 100))
	sig, err := dkim.NewSigner(dkim.Options{DataDir: keys}).Sign("alice@bank.example", m)
	if err != nil {
		b.Fatal(err)
	}
	m = append(sig, m...)
	accept := func() {
		tx, err := r.NewTransaction(ctx, mx, smtpd.Mail{From: "alice@bank.example"})
		if err == nil {
			err = tx.AddRcpt(ctx, "alice@example.test")
		}
		if err == nil {
			err = tx.Body(ctx, bytes.NewReader(m), int64(len(m)))
		}
		if err == nil {
			err = tx.Commit(ctx)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	accept() // fills the cache
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		accept()
	}
}
