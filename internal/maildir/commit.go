package maildir

import (
	"fmt"
	"os"
	"path/filepath"
)

// committer runs the group commits until the queue is closed and empty.
func (s *Store) committer() {
	defer close(s.done)
	batch := make([]*commit, 0, s.maxBatch)
	for c := range s.queue {
		batch = append(batch[:0], c)
		// Take whatever queued while the previous flush ran, without
		// waiting for more: waiting would only add latency.
	more:
		for len(batch) < s.maxBatch {
			select {
			case c, ok := <-s.queue:
				if !ok {
					break more
				}
				batch = append(batch, c)
			default:
				break more
			}
		}
		s.flush(batch)
		clear(batch)
	}
}

// flush commits a batch: rename every file from tmp/ to new/, fsync each
// distinct new/ folder once, then tell each delivery its outcome. The file
// data was fsynced by the delivering goroutine before it queued.
func (s *Store) flush(batch []*commit) {
	errs := make([]error, len(batch))
	dirs := map[string][]int{} // new/ folder → deliveries with a file in it
	for i, c := range batch {
		for _, f := range c.files {
			if err := f.mb.commitRename(f); err != nil {
				errs[i] = err
				break
			}
			dir := filepath.Dir(f.newPath)
			if l := dirs[dir]; len(l) == 0 || l[len(l)-1] != i {
				dirs[dir] = append(l, i)
			}
		}
	}
	for dir, users := range dirs {
		if err := syncDir(dir); err != nil {
			for _, i := range users {
				if errs[i] == nil {
					errs[i] = err
				}
			}
		}
	}
	for i, c := range batch {
		if errs[i] != nil {
			s.undo(c)
		}
		c.err <- errs[i]
	}
}

// undo removes every file of a failed delivery, from new/ or tmp/, and gives
// back its quota.
func (s *Store) undo(c *commit) {
	for _, f := range c.files {
		f.mb.undo(s, f)
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("maildir: opening %s: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("maildir: syncing %s: %w", dir, err)
	}
	return nil
}
