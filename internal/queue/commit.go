package queue

import (
	"context"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// rename moves a written file into the queue folder.
type rename struct{ from, to string }

// commit is one writer's request: its renames, made durable with the
// others of the batch.
type commit struct {
	renames []rename
	err     chan error
}

// commit hands renames to the committer and waits until they are durable
// (or failed). With no renames it waits for one fsync of the queue folder,
// which makes earlier removals durable.
func (q *File) commit(ctx context.Context, rs []rename) error {
	c := &commit{renames: rs, err: make(chan error, 1)}
	q.sendMu.RLock()
	if q.stopped {
		q.sendMu.RUnlock()
		return ErrClosed
	}
	select {
	case q.commits <- c:
	case <-ctx.Done():
		q.sendMu.RUnlock()
		return ctx.Err()
	}
	q.sendMu.RUnlock()
	// Once handed over the commit happens whatever the caller does: wait
	// for it, so a caller never removes a file the committer renames.
	return <-c.err
}

// committer runs group commits until the channel is closed: it takes
// whatever queued while the previous flush ran, without waiting for more
// (waiting would only add latency), in the way internal/maildir does.
func (q *File) committer() {
	defer close(q.done)
	Batches(q.commits, q.maxBatch, func(batch []*commit) {
		if q.testHookBatch != nil {
			q.testHookBatch(len(batch))
		}
		q.flush(batch)
		q.batches.Add(1)
		q.committed.Add(int64(len(batch)))
	})
}

// flush makes the batch durable:
//  1. the files' data: one syncfs(2), or nothing in FsyncEach mode, where
//     each writer fsynced its own file;
//  2. rename each file into msg/;
//  3. the names: one syncfs, or one fsync of msg/ in FsyncEach mode.
func (q *File) flush(batch []*commit) {
	errs := make([]error, len(batch))
	if !q.fsyncEach {
		if err := unix.Syncfs(int(q.msgFD.Fd())); err != nil {
			for _, c := range batch {
				c.err <- fmt.Errorf("queue: syncfs: %w", err)
			}
			return
		}
	}
	for i, c := range batch {
		for _, r := range c.renames {
			if err := os.Rename(r.from, r.to); err != nil {
				errs[i] = fmt.Errorf("queue: %w", err)
				break
			}
		}
	}
	var err error
	if q.fsyncEach {
		err = q.msgFD.Sync()
	} else {
		err = unix.Syncfs(int(q.msgFD.Fd()))
	}
	for i, c := range batch {
		if errs[i] == nil && err != nil {
			errs[i] = fmt.Errorf("queue: syncing %s: %w", q.msgDir, err)
		}
		c.err <- errs[i]
	}
}

// Batches runs flush on what arrives on c until c is closed: each batch is
// what queued while the previous flush ran (at most max), without waiting
// for more, since waiting would only add latency. It is the loop of a
// group committer; every queue implementation's committer uses it.
func Batches[T any](c <-chan T, max int, flush func([]T)) {
	batch := make([]T, 0, max)
	for first := range c {
		batch = append(batch[:0], first)
	more:
		for len(batch) < max {
			select {
			case x, ok := <-c:
				if !ok {
					break more
				}
				batch = append(batch, x)
			default:
				break more
			}
		}
		flush(batch)
		clear(batch)
	}
}
