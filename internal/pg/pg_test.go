package pg_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/pg"
	"github.com/agua-mail/agua/internal/pg/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var steps = []pg.Migration{
	{Component: "t", Version: 1, Name: "notes", SQL: `CREATE TABLE notes (id bigserial PRIMARY KEY, body text NOT NULL)`},
	{Component: "t", Version: 2, Name: "notes.author", SQL: `ALTER TABLE notes ADD COLUMN author text NOT NULL DEFAULT ''`},
	{Component: "u", Version: 1, Name: "other", SQL: `CREATE TABLE other (x int)`},
}

func TestMigrate(t *testing.T) {
	srv := pgtest.Shared(t)
	ctx := context.Background()
	pool, err := pg.Open(ctx, srv.NewDatabase(t), pg.Options{MaxConns: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()

	if err := pg.Ready(ctx, pool, steps); !errors.Is(err, pg.ErrPending) {
		t.Fatalf("Ready on an empty database = %v, want ErrPending", err)
	}
	// Several nodes migrating at once apply each step once.
	var wg sync.WaitGroup
	applied := make([][]pg.Migration, 4)
	errs := make([]error, 4)
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			applied[i], errs[i] = pg.Migrate(ctx, pool, steps[:2])
		}()
	}
	wg.Wait()
	total := 0
	for i := range 4 {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		total += len(applied[i])
	}
	if total != 2 {
		t.Fatalf("4 concurrent Migrate applied %d steps in all, want 2", total)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO notes (body, author) VALUES ('x', 'y')`); err != nil {
		t.Fatal(err)
	}
	// A new component's step is pending; the others are not.
	todo, err := pg.Pending(ctx, pool, steps)
	if err != nil || len(todo) != 1 || todo[0].Component != "u" {
		t.Fatalf("Pending = %v, %v; want u/1 only", todo, err)
	}
	if _, err := pg.Migrate(ctx, pool, steps); err != nil {
		t.Fatal(err)
	}
	if err := pg.Ready(ctx, pool, steps); err != nil {
		t.Fatalf("Ready after Migrate = %v", err)
	}
	// An older binary that knows only t/1 refuses a database at t/2.
	if err := pg.Ready(ctx, pool, steps[:1]); !errors.Is(err, pg.ErrNewer) {
		t.Fatalf("Ready with an older list = %v, want ErrNewer", err)
	}
	// A list with a gap is refused before touching the database.
	gap := []pg.Migration{steps[0], {Component: "t", Version: 3, Name: "gap", SQL: "SELECT 1"}}
	if _, err := pg.Migrate(ctx, pool, gap); err == nil {
		t.Fatal("Migrate accepted a list with a gap")
	}
}

func TestFailedStepRollsBack(t *testing.T) {
	srv := pgtest.Shared(t)
	ctx := context.Background()
	pool, err := pg.Open(ctx, srv.NewDatabase(t), pg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	bad := []pg.Migration{
		{Component: "t", Version: 1, Name: "ok", SQL: `CREATE TABLE a (x int)`},
		{Component: "t", Version: 2, Name: "half", SQL: `CREATE TABLE b (x int); SELECT no_such_function()`},
	}
	done, err := pg.Migrate(ctx, pool, bad)
	if err == nil || len(done) != 1 {
		t.Fatalf("Migrate = %v, %v; want step 1 applied and step 2's error", done, err)
	}
	var exists bool
	if err := pool.QueryRow(ctx, `SELECT to_regclass('b') IS NOT NULL`).Scan(&exists); err != nil || exists {
		t.Fatalf("table b of the failed step exists=%v (%v): the step was not one transaction", exists, err)
	}
	if todo, _ := pg.Pending(ctx, pool, bad); len(todo) != 1 || todo[0].Version != 2 {
		t.Fatalf("Pending after the failure = %v, want t/2", todo)
	}
}

// A database that goes away gives ErrUnavailable, never a wrong answer, and
// the pool serves again once it is back, without being reopened.
func TestUnavailableAndReconnect(t *testing.T) {
	srv := pgtest.Start(t)
	ctx := context.Background()
	pool, err := pg.Open(ctx, srv.URL("postgres"), pg.Options{ConnectTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var one int
	if err := pool.QueryRow(ctx, `SELECT 1`).Scan(&one); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = pg.Classify(pool.QueryRow(qctx, `SELECT 1`).Scan(&one))
	cancel()
	if !errors.Is(err, pg.ErrUnavailable) {
		t.Fatalf("query with the server killed = %v, want ErrUnavailable", err)
	}
	srv.Restart()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err = pool.QueryRow(ctx, `SELECT 2`).Scan(&one)
		if err == nil && one == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool did not reconnect after the restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := pg.Open(ctx, "postgres://agua@127.0.0.1:1/x?sslmode=disable", pg.Options{ConnectTimeout: time.Second}); !errors.Is(err, pg.ErrUnavailable) {
		t.Fatalf("Open of a closed port = %v, want ErrUnavailable", err)
	}
}
