package pgqueue_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/agua-mail/agua/internal/pg"
	"github.com/agua-mail/agua/internal/pg/pgtest"
	"github.com/agua-mail/agua/internal/pgqueue"
	"github.com/agua-mail/agua/internal/queue"
	"github.com/agua-mail/agua/internal/queue/queuetest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// openPool opens a pool to url with the queue's schema applied; it is
// closed when the test ends.
func openPool(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, err := pg.Open(ctx, url, pg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := pg.Migrate(ctx, pool, pgqueue.Migrations); err != nil {
		t.Fatal(err)
	}
	return pool
}

func newQueue(t testing.TB, pool *pgxpool.Pool, o pgqueue.Options) *pgqueue.Queue {
	t.Helper()
	q, err := pgqueue.New(pool, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

func TestConformance(t *testing.T) {
	srv := pgtest.Shared(t)
	queuetest.Run(t, func(t *testing.T, now func() time.Time) queue.Queue {
		return newQueue(t, openPool(t, srv.NewDatabase(t)), pgqueue.Options{Now: now})
	})
}

// TestNodes: two queues on one database are two nodes.
func TestNodes(t *testing.T) {
	srv := pgtest.Shared(t)
	const lease = time.Minute // on the test's clock
	queuetest.RunNodes(t, lease, func(t *testing.T, now func() time.Time) (queue.Queue, queue.Queue) {
		url := srv.NewDatabase(t)
		a := newQueue(t, openPool(t, url), pgqueue.Options{Now: now, Lease: lease, Node: "a"})
		b := newQueue(t, openPool(t, url), pgqueue.Options{Now: now, Lease: lease, Node: "b"})
		return a, b
	})
}

// TestWakeAcrossNodes: node b, which never polls within the test, is woken
// by node a's enqueues through LISTEN/NOTIFY. (The first round may be
// answered by the wake-up b gives itself when its LISTEN starts; the
// second can only come from a notification.)
func TestWakeAcrossNodes(t *testing.T) {
	srv := pgtest.Shared(t)
	url := srv.NewDatabase(t)
	a := newQueue(t, openPool(t, url), pgqueue.Options{})
	b := newQueue(t, openPool(t, url), pgqueue.Options{Poll: time.Hour})
	for round := range 2 {
		for drained := false; !drained; {
			select {
			case <-b.Wake():
			default:
				drained = true
			}
		}
		if _, err := a.Enqueue(t.Context(), queue.Envelope{From: "a@local.test", To: []string{"b@remote.test"}}, strings.NewReader("x")); err != nil {
			t.Fatal(err)
		}
		select {
		case <-b.Wake():
		case <-time.After(time.Minute):
			t.Fatalf("round %d: node b not woken by node a's enqueue", round)
		}
	}
}
