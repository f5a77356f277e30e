package pg

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Migration is one step of a component's schema. Versions of a component
// start at 1 and have no gaps; a step, once released, never changes (a
// later step alters what it made).
type Migration struct {
	Component string // "accounts", "mailstore", "queue"
	Version   int
	Name      string // what the step does, for agua db migrate's output
	SQL       string // one or more statements, run in one transaction
}

// ErrPending: the database lacks migrations this binary needs.
var ErrPending = errors.New("schema migrations pending")

// ErrNewer: the database has migrations this binary does not know (a newer
// agua migrated it); it refuses to run against a schema it cannot read.
var ErrNewer = errors.New("database schema is newer than this agua")

// migrateLock is the advisory lock key Migrate holds ("agua" in ASCII), so
// nodes starting together migrate one after the other.
const migrateLock = 0x61677561

const schemaTable = `CREATE TABLE IF NOT EXISTS agua_schema (
	component  text        NOT NULL,
	version    integer     NOT NULL,
	name       text        NOT NULL,
	applied_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (component, version)
)`

// Applied lists the migrations recorded in the database, by component and
// version.
func Applied(ctx context.Context, pool *pgxpool.Pool) ([]Migration, error) {
	if _, err := pool.Exec(ctx, schemaTable); err != nil {
		return nil, Classify(err)
	}
	rows, err := pool.Query(ctx, `SELECT component, version, name FROM agua_schema ORDER BY component, version`)
	if err != nil {
		return nil, Classify(err)
	}
	ms, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Migration, error) {
		var m Migration
		err := r.Scan(&m.Component, &m.Version, &m.Name)
		return m, err
	})
	return ms, Classify(err)
}

// Pending returns the migrations of ms the database lacks, in the order
// Migrate applies them; ErrNewer when the database has a version of a
// component beyond the last of ms.
func Pending(ctx context.Context, pool *pgxpool.Pool, ms []Migration) ([]Migration, error) {
	if err := check(ms); err != nil {
		return nil, err
	}
	applied, err := Applied(ctx, pool)
	if err != nil {
		return nil, err
	}
	return pending(applied, ms)
}

func pending(applied, ms []Migration) ([]Migration, error) {
	have := map[string]int{}
	for _, a := range applied {
		have[a.Component] = max(have[a.Component], a.Version)
	}
	last := map[string]int{}
	var out []Migration
	for _, m := range ms {
		last[m.Component] = max(last[m.Component], m.Version)
		if m.Version > have[m.Component] {
			out = append(out, m)
		}
	}
	for c, v := range have {
		if l, known := last[c]; known && v > l {
			return nil, fmt.Errorf("%w: component %s is at version %d, this agua knows up to %d", ErrNewer, c, v, l)
		}
	}
	return out, nil
}

// check refuses a list with a gap or a repeated version in a component.
func check(ms []Migration) error {
	next := map[string]int{}
	sorted := slices.Clone(ms)
	slices.SortStableFunc(sorted, func(a, b Migration) int {
		if c := strings.Compare(a.Component, b.Component); c != 0 {
			return c
		}
		return a.Version - b.Version
	})
	for _, m := range sorted {
		if m.Component == "" || m.Version != next[m.Component]+1 {
			return fmt.Errorf("pg: migration %s/%d out of sequence", m.Component, m.Version)
		}
		next[m.Component] = m.Version
	}
	return nil
}

// Migrate applies the migrations of ms the database lacks, each in its own
// transaction, one node at a time (an advisory lock), and returns those it
// applied. It is safe to run again: nothing pending, nothing done.
func Migrate(ctx context.Context, pool *pgxpool.Pool, ms []Migration) ([]Migration, error) {
	if err := check(ms); err != nil {
		return nil, err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, Classify(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, int64(migrateLock)); err != nil {
		return nil, Classify(err)
	}
	defer func() {
		// A fresh context: the caller's may be done, the lock must go.
		uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn.Exec(uctx, `SELECT pg_advisory_unlock($1)`, int64(migrateLock))
	}()
	todo, err := Pending(ctx, pool, ms)
	if err != nil {
		return nil, err
	}
	var done []Migration
	for _, m := range todo {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO agua_schema (component, version, name) VALUES ($1, $2, $3)`, m.Component, m.Version, m.Name)
			return err
		})
		if err != nil {
			return done, fmt.Errorf("migration %s/%d (%s): %w", m.Component, m.Version, m.Name, Classify(err))
		}
		done = append(done, m)
	}
	return done, nil
}

// Ready returns nil when the database has every migration of ms, and
// ErrPending (naming the first missing step) or ErrNewer otherwise: what a
// node checks before serving from it.
func Ready(ctx context.Context, pool *pgxpool.Pool, ms []Migration) error {
	todo, err := Pending(ctx, pool, ms)
	if err != nil {
		return err
	}
	if len(todo) > 0 {
		return fmt.Errorf("%w: %d, first %s/%d (%s); run agua db migrate or set [postgres] migrate = true", ErrPending, len(todo), todo[0].Component, todo[0].Version, todo[0].Name)
	}
	return nil
}
