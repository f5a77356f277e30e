package queue_test

import (
	"errors"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/queue"
	"github.com/agua-mail/agua/internal/queue/queuetest"
)

func TestFileConformance(t *testing.T) {
	for _, each := range []bool{false, true} {
		name := "syncfs"
		if each {
			name = "fsync"
		}
		t.Run(name, func(t *testing.T) {
			queuetest.Run(t, func(t *testing.T, now func() time.Time) queue.Queue {
				q, err := queue.Open(t.TempDir(), queue.Options{Now: now, FsyncEach: each})
				if err != nil {
					t.Fatal(err)
				}
				return q
			})
		})
	}
}

// TestFileNodes: the file queue belongs to one process (its state lives in
// that process's memory too), so a second node cannot open it: the
// multi-node cases do not apply. The test checks that it refuses with
// ErrLocked, then skips.
func TestFileNodes(t *testing.T) {
	queuetest.RunNodes(t, time.Minute, func(t *testing.T, now func() time.Time) (queue.Queue, queue.Queue) {
		dir := t.TempDir()
		a, err := queue.Open(dir, queue.Options{Now: now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Close() })
		b, err := queue.Open(dir, queue.Options{Now: now})
		if err == nil {
			b.Close()
			t.Fatal("a second process opened the file queue")
		}
		if !errors.Is(err, queue.ErrLocked) {
			t.Fatalf("second open = %v, want ErrLocked", err)
		}
		t.Skip("the file queue is one process's (ErrLocked): no second node shares it")
		return nil, nil
	})
}
