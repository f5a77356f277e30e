package server

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/agua-mail/agua/internal/config"

	"github.com/agua-mail/agua/internal/maildir"
	"github.com/agua-mail/agua/internal/mailstore"
	"github.com/agua-mail/agua/internal/pg"
	"github.com/agua-mail/agua/internal/pgstore"
	"github.com/agua-mail/agua/internal/router"
)

// mailStore is the store the mailboxes live in, as its two consumers see
// it: POP3 and IMAP read through the mail-store contract, SMTP's local
// delivery writes through router.MailboxWriter.
type mailStore struct {
	read    mailstore.Store
	deliver router.MailboxWriter
	close   func() error
}

var (
	_ router.MailboxWriter = (*maildir.Store)(nil)
	_ router.MailboxWriter = (*pgstore.Store)(nil)
)

// openMailStore opens Maildir folders in <data_dir>/mail, or the store on
// PostgreSQL with [postgres] mail (the pool is open by then).
func (s *Server) openMailStore() error {
	m, err := openMailStore(s.cfg, s.pg, s.log)
	s.mail = m
	return err
}

func openMailStore(cfg config.Config, pool *pgxpool.Pool, log *slog.Logger) (*mailStore, error) {
	if cfg.Postgres.Mail {
		st := pgstore.Open(pool, pgstore.Options{Logger: log})
		return &mailStore{read: st, deliver: st, close: st.Close}, nil
	}
	st, err := maildir.Open(filepath.Join(cfg.DataDir, "mail"), maildir.Options{Logger: log, Hostname: cfg.Hostname, FsyncEach: cfg.Store.Sync == "fsync"})
	if err != nil {
		return nil, fmt.Errorf("mail store: %w", err)
	}
	return &mailStore{read: st.MailStore(), deliver: st, close: st.Close}, nil
}

// OpenMailStore opens cfg's mail store for the CLI (agua import): Maildir
// in <data_dir>/mail, or PostgreSQL with [postgres] mail, whose schema
// must be migrated. close releases it.
func OpenMailStore(ctx context.Context, cfg config.Config, log *slog.Logger) (store mailstore.Store, close func(), err error) {
	var pool *pgxpool.Pool
	if cfg.Postgres.Mail {
		if pool, err = OpenPostgres(ctx, cfg); err != nil {
			return nil, nil, err
		}
		if err := pg.Ready(ctx, pool, PostgresMigrations()); err != nil {
			pool.Close()
			return nil, nil, fmt.Errorf("postgres: %w", err)
		}
	}
	m, err := openMailStore(cfg, pool, log)
	if err != nil {
		return nil, nil, err
	}
	return m.read, func() {
		m.close()
		if pool != nil {
			pool.Close()
		}
	}, nil
}
