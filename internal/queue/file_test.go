package queue_test

import (
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
