package server

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/pg"
	"github.com/agua-mail/agua/internal/pgqueue"
)

// PostgresMigrations is every schema step of the parts that can live on
// PostgreSQL (each part's package owns its steps); agua db migrate and
// [postgres] migrate apply them, and serve checks them.
func PostgresMigrations() []pg.Migration {
	var ms []pg.Migration
	ms = append(ms, pgqueue.Migrations...)
	return ms
}

// OpenPostgres opens the pool of cfg's [postgres] url (also used by the
// CLI).
func OpenPostgres(ctx context.Context, cfg config.Config) (*pgxpool.Pool, error) {
	pool, err := pg.Open(ctx, cfg.Postgres.URL, pg.Options{MaxConns: cfg.Postgres.MaxConns})
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	return pool, nil
}

// openPostgres opens the pool when some part is on PostgreSQL, applies the
// pending migrations if the config says so, and otherwise refuses to serve
// from a schema that is not this binary's.
func (s *Server) openPostgres() error {
	if !s.cfg.Postgres.Enabled() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pool, err := OpenPostgres(ctx, s.cfg)
	if err != nil {
		return err
	}
	s.pg = pool
	ms := PostgresMigrations()
	if s.cfg.Postgres.Migrate {
		done, err := pg.Migrate(ctx, pool, ms)
		for _, m := range done {
			s.log.Info("postgres migration applied", "component", m.Component, "version", m.Version, "name", m.Name)
		}
		if err != nil {
			return fmt.Errorf("postgres: %w", err)
		}
	}
	if err := pg.Ready(ctx, pool, ms); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	return nil
}
