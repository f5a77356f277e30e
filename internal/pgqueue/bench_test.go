package pgqueue_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/agua-mail/agua/internal/pg/pgtest"
	"github.com/agua-mail/agua/internal/pgqueue"
	"github.com/agua-mail/agua/internal/queue"
)

// BenchmarkEnqueue measures durable enqueues of 2 KiB messages from many
// concurrent writers (as SMTP sessions would), PostgreSQL's fsync on: one
// group transaction carries what queued while the previous one committed.
//
//	go test -run '^$' -bench Enqueue -benchtime 5000x ./internal/pgqueue/
func BenchmarkEnqueue(b *testing.B) {
	srv := pgtest.Shared(b)
	q := newQueue(b, openPool(b, srv.NewDatabase(b)), pgqueue.Options{})
	body := bytes.Repeat([]byte("0123456789abcdef"), 128) // 2 KiB
	env := queue.Envelope{From: "a@local.test", To: []string{"b@remote.test"}}
	b.SetParallelism(20) // 20 writers per core
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := q.Enqueue(context.Background(), env, bytes.NewReader(body)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
