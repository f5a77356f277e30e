package maildir

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"
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
		s.batches.Add(1)
		s.committed.Add(int64(len(batch)))
		clear(batch)
	}
}

// flush commits a batch and tells each delivery its outcome:
//
//  1. make the files' data durable: one syncfs(2), or nothing in FsyncEach
//     mode, where each delivering goroutine fsynced its own files;
//  2. rename every file from tmp/ to new/;
//  3. make the new names durable: one more syncfs, or one fsync per distinct
//     new/ folder in FsyncEach mode.
//
// A delivery whose step fails gets the error, and any of its files already
// in new/ are removed again.
func (s *Store) flush(batch []*commit) {
	errs := make([]error, len(batch))
	var fss []*os.File // the file systems the batch wrote to, usually one
	if !s.fsyncEach {
		for _, c := range batch {
			for i := range c.files {
				if fs := c.files[i].fs; !slices.Contains(fss, fs) {
					fss = append(fss, fs)
				}
			}
		}
		if err := syncfs(fss); err != nil {
			// Nothing was renamed: Deliver removes the tmp/ files.
			for _, c := range batch {
				c.err <- err
			}
			return
		}
	}
	var dirs map[string][]int // FsyncEach: new/ folder → deliveries with a file in it
	if s.fsyncEach {
		dirs = map[string][]int{}
	}
	for i, c := range batch {
		for j := range c.files {
			f := &c.files[j]
			if err := f.mb.commitRename(f); err != nil {
				errs[i] = err
				break
			}
			if dirs != nil {
				dir := filepath.Dir(f.newPath)
				if l := dirs[dir]; len(l) == 0 || l[len(l)-1] != i {
					dirs[dir] = append(l, i)
				}
			}
		}
	}
	if s.fsyncEach {
		for dir, users := range dirs {
			if err := syncDir(dir); err != nil {
				for _, i := range users {
					if errs[i] == nil {
						errs[i] = err
					}
				}
			}
		}
	} else if err := syncfs(fss); err != nil {
		for i := range errs {
			if errs[i] == nil {
				errs[i] = err
			}
		}
	}
	for i, c := range batch {
		if errs[i] != nil {
			for j := range c.files {
				c.files[j].mb.undo(s, &c.files[j])
			}
		}
		c.err <- errs[i]
	}
}

// syncfs flushes the given file systems. Since Linux 5.8 syncfs reports the
// writeback errors that happened on a file system since the last call on the
// same open file, so a failed write of any batch file is seen: the Store
// keeps one open file per file system for its whole life.
func syncfs(fss []*os.File) error {
	for _, fd := range fss {
		if err := unix.Syncfs(int(fd.Fd())); err != nil {
			return fmt.Errorf("maildir: syncfs %s: %w", fd.Name(), err)
		}
	}
	return nil
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
