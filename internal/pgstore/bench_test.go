package pgstore

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/agua-mail/agua/internal/mailstore"
)

// benchMessage is a 2 KiB message with CRLF line endings, as the Maildir
// benchmarks deliver.
func benchMessage() mailstore.Delivery {
	var b bytes.Buffer
	b.WriteString("From: a@example.net\r\nTo: b@example.org\r\nSubject: benchmark\r\n\r\n")
	for b.Len() < 2048-80 {
		b.WriteString("The quick brown fox jumps over the lazy dog, again and again.\r\n")
	}
	for b.Len() < 2048 {
		b.WriteByte('x')
	}
	return mailstore.Delivery{R: bytes.NewReader(b.Bytes()), Size: int64(b.Len())}
}

func openBench(b *testing.B) *Store {
	b.Helper()
	pool := openPool(b, newDB(b))
	s := Open(pool, Options{})
	b.Cleanup(func() { s.Close(); pool.Close() })
	return s
}

// BenchmarkDeliverParallel measures durable delivery (250 after COMMIT,
// PostgreSQL's fsync on) with 20 concurrent senders, each to its own
// mailbox among 20, as BenchmarkDeliverParallel of internal/maildir does:
// the group commit shares one transaction among what queued meanwhile.
func BenchmarkDeliverParallel(b *testing.B) {
	s := openBench(b)
	msg := benchMessage()
	const senders = 20
	procs := runtime.GOMAXPROCS(0)
	b.SetParallelism((senders + procs - 1) / procs)
	var id atomic.Int64
	ctx := context.Background()
	b.SetBytes(msg.Size)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		box := fmt.Sprintf("user%d@example.org", id.Add(1)%senders)
		rcpts := []mailstore.Recipient{{Mailbox: box, Quota: 1 << 40, Prefix: []byte("Delivered-To: " + box + "\r\n")}}
		for pb.Next() {
			if err := s.Deliver(ctx, msg, rcpts); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(s.committed.Load())/float64(max(s.batches.Load(), 1)), "msgs/batch")
}

// BenchmarkDeliverSerial measures one sender: every delivery pays a whole
// transaction and its WAL flush.
func BenchmarkDeliverSerial(b *testing.B) {
	s := openBench(b)
	msg := benchMessage()
	rcpts := []mailstore.Recipient{{Mailbox: "bench@example.org", Quota: 1 << 40, Prefix: []byte("Delivered-To: bench@example.org\r\n")}}
	ctx := context.Background()
	b.SetBytes(msg.Size)
	for b.Loop() {
		if err := s.Deliver(ctx, msg, rcpts); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkList10k measures listing a folder of 10,000 messages, what a
// POP3 login or an IMAP SELECT costs (internal/maildir's
// BenchmarkList10k* is the Maildir side).
func BenchmarkList10k(b *testing.B) {
	s := openBench(b)
	const user, n, senders = "bench@example.org", 10000, 32
	msg := benchMessage()
	rcpts := []mailstore.Recipient{{Mailbox: user, Quota: 1 << 40}}
	var wg sync.WaitGroup
	for range senders {
		wg.Go(func() {
			for range n / senders {
				if err := s.Deliver(context.Background(), msg, rcpts); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	f, err := s.Folder(context.Background(), user, "")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	for b.Loop() {
		l, err := f.List()
		if err != nil || len(l.Messages) != n/senders*senders {
			b.Fatalf("listing of %d messages: %v", len(l.Messages), err)
		}
	}
}
