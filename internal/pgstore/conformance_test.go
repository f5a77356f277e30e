package pgstore

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/agua-mail/agua/internal/mailstore"
	"github.com/agua-mail/agua/internal/mailstore/storetest"
	"github.com/agua-mail/agua/internal/pg"
	"github.com/agua-mail/agua/internal/pg/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// newDB returns the URL of a fresh, migrated database on the shared server.
func newDB(t testing.TB) string {
	t.Helper()
	url := pgtest.Shared(t).NewDatabase(t)
	pool := openPool(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := pg.Migrate(ctx, pool, Migrations); err != nil {
		t.Fatal(err)
	}
	pool.Close()
	return url
}

func openPool(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, err := pg.Open(ctx, url, pg.Options{MaxConns: 8})
	if err != nil {
		t.Fatal(err)
	}
	return pool
}

// deliver puts msg into user's INBOX as SMTP does.
func deliver(t testing.TB, s *Store, user, msg string) {
	t.Helper()
	err := s.Deliver(context.Background(), mailstore.Delivery{R: strings.NewReader(msg), Size: int64(len(msg))},
		[]mailstore.Recipient{{Mailbox: user, Quota: 1 << 30}})
	if err != nil {
		t.Fatal(err)
	}
}

// TestConformance runs the mail-store contract's suite on PostgreSQL, as
// internal/maildir runs it on Maildir. A reopen is a new pool and Store on
// the same database: a restarted node; OpenNode is a second node.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Env {
		url := newDB(t)
		var cur *Store
		open := func(t *testing.T) (mailstore.Store, func()) {
			pool := openPool(t, url)
			s := Open(pool, Options{})
			return s, func() { s.Close(); pool.Close() }
		}
		return storetest.Env{
			Open: func(t *testing.T) (mailstore.Store, func()) {
				s, close := open(t)
				cur = s.(*Store)
				return s, close
			},
			Deliver: func(t *testing.T, user, msg string) { t.Helper(); deliver(t, cur, user, msg) },
			OpenNode: func(t *testing.T) (mailstore.Store, func(t *testing.T, user, msg string), func()) {
				s, close := open(t)
				return s, func(t *testing.T, user, msg string) { t.Helper(); deliver(t, s.(*Store), user, msg) }, close
			},
		}
	})
}
