package maildir

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
)

// benchMessage is a 2 KiB message with CRLF line endings.
func benchMessage() Message {
	var b bytes.Buffer
	b.WriteString("From: a@example.net\r\nTo: b@example.org\r\nSubject: benchmark\r\n\r\n")
	for b.Len() < 2048-80 {
		b.WriteString("The quick brown fox jumps over the lazy dog, again and again.\r\n")
	}
	for b.Len() < 2048 {
		b.WriteByte('x')
	}
	return Message{R: bytes.NewReader(b.Bytes()), Size: int64(b.Len())}
}

// BenchmarkDeliverSerial measures one sender: every delivery pays a full
// commit of its own (one syncfs and a rename; in FsyncEach mode a file
// fsync, a rename and a directory fsync).
func BenchmarkDeliverSerial(b *testing.B) {
	s := openTest(b)
	msg := benchMessage()
	rcpts := []Recipient{{Mailbox: "bench@example.org", Quota: 1 << 40, Prefix: []byte("Delivered-To: bench@example.org\r\n")}}
	ctx := context.Background()
	b.SetBytes(msg.Size)
	b.ResetTimer()
	for b.Loop() {
		if err := s.Deliver(ctx, msg, rcpts); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(s.committed.Load())/float64(max(s.batches.Load(), 1)), "msgs/batch")
}

// BenchmarkDeliverParallel measures 20 concurrent senders, each to its own
// mailbox among 20, as an SMTP server would see them; the commits are
// shared.
func BenchmarkDeliverParallel(b *testing.B) {
	s := openTest(b)
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
		rcpts := []Recipient{{Mailbox: box, Quota: 1 << 40, Prefix: []byte("Delivered-To: " + box + "\r\n")}}
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

func BenchmarkDeliverParallelFsyncEach(b *testing.B) {
	testFsyncEach = true
	defer func() { testFsyncEach = false }()
	BenchmarkDeliverParallel(b)
}

func BenchmarkDeliverSerialFsyncEach(b *testing.B) {
	testFsyncEach = true
	defer func() { testFsyncEach = false }()
	BenchmarkDeliverSerial(b)
}
