package queue

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestGroupCommit: enqueues that arrive while a flush runs share the next
// one. The first flush is held until the others are waiting, so the test
// does not depend on timing.
func TestGroupCommit(t *testing.T) {
	q, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	const waiting = 10
	first := true
	q.testHookBatch = func(n int) {
		if !first {
			return
		}
		first = false
		deadline := time.Now().Add(10 * time.Second)
		for len(q.commits) < waiting+1-n && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
	var wg sync.WaitGroup
	for i := range waiting + 1 {
		wg.Go(func() {
			if _, err := q.Enqueue(context.Background(), Envelope{To: []string{fmt.Sprintf("r%d@x.test", i)}}, strings.NewReader("x")); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	// The first flush took what had arrived (one or more), the second
	// everything that waited behind it.
	if b, c := q.batches.Load(), q.committed.Load(); c != waiting+1 || b > 2 {
		t.Fatalf("%d writes in %d flushes, want %d in at most 2", c, b, waiting+1)
	}
}
