package maildir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"
)

// errLead is sent to a waiting delivery instead of its outcome when it is
// to lead the next group commit.
var errLead = errors.New("maildir: lead the next commit")

// commit makes c durable in a group commit and returns its outcome.
//
// The deliveries elect their committer among themselves (the leader/
// follower scheme of LevelDB's write queue): a delivery that finds no
// commit running leads one itself, on its own goroutine; deliveries that
// arrive meanwhile queue and wait. When its commit is done the leader hands
// the lead to the first waiting delivery, which commits everything that
// queued (up to maxBatch) in the next one, without waiting for more:
// waiting would only add latency, and a single sender never has a companion
// to wait for. A lone delivery thus commits without waking any other
// goroutine; before, handing each one to a committer goroutine and back
// cost two goroutine switches per message, most of a lone sender's
// scheduler time on a 2-core machine (BENCHMARKS.md, session 6).
//
// s.pending holds one entry per delivery waiting in Deliver, so it is
// bounded by the deliveries running at once (the servers' session limits).
func (s *Store) commit(c *commit) error {
	s.cmu.Lock()
	s.pending = append(s.pending, c)
	if s.leading {
		s.cmu.Unlock()
		if err := <-c.err; err != errLead {
			return err
		}
		s.cmu.Lock() // the previous leader left s.leading set for us
	} else {
		s.leading = true
	}
	// c is s.pending[0]: the lead goes to the first waiting delivery, and a
	// new leader found the queue empty.
	n := min(len(s.pending), s.maxBatch)
	batch := append(s.batch[:0], s.pending[:n]...)
	rest := copy(s.pending, s.pending[n:])
	clear(s.pending[rest:])
	s.pending = s.pending[:rest]
	s.cmu.Unlock()

	s.batches.Add(1)
	s.committed.Add(int64(len(batch)))
	s.run(batch)
	clear(batch)
	s.cmu.Lock()
	s.batch = batch[:0]
	if len(s.pending) > 0 {
		s.pending[0].err <- errLead
	} else {
		s.leading = false
	}
	s.cmu.Unlock()
	return <-c.err
}

// run commits batch in the Store's mode. A panic inside a commit would
// leave the batch's outcomes unsent and the lead held, so that every later
// delivery waited forever; and the leader runs on a session's goroutine,
// whose recover (connsrv) would turn the panic into that hang. So run
// crashes the process instead, as a panic in the committer goroutine of
// earlier versions did: acknowledged messages are on disk, and the clients
// of the others retry.
func (s *Store) run(batch []*commit) {
	defer func() {
		if r := recover(); r != nil {
			go func() { panic(fmt.Sprintf("maildir: group commit: %v", r)) }()
			select {} // until the process dies
		}
	}()
	if s.fsyncEach {
		s.flushEach(batch)
	} else {
		s.step(batch)
	}
}

// step is one syncfs-mode commit (doc.go, "Durability"):
//
//  1. syncfs(2) of every file system the batch wrote to: the data of its
//     files and their entries in tmp/ are on disk, and each file's name
//     carries the checksum that lets Open tell it from a torn one;
//  2. every file of the batch is renamed from tmp/ to new/;
//  3. the batch is acknowledged.
//
// The renames are made durable by the next syncfs, or redone by Open
// (recover.go) after a crash that lost them: the acknowledged message is
// complete in tmp/. A delivery whose rename fails gets the error, with its
// files already in new/ removed again; when the syncfs fails every delivery
// gets the error (their tmp/ files are removed by Deliver).
func (s *Store) step(batch []*commit) {
	var fss []*os.File // the file systems written to, usually one
	for _, c := range batch {
		for i := range c.files {
			if fs := c.files[i].fs; !slices.Contains(fss, fs) {
				fss = append(fss, fs)
			}
		}
	}
	if s.beforeSyncfs != nil {
		s.beforeSyncfs()
	}
	if err := syncfs(fss); err != nil {
		for _, c := range batch {
			c.err <- err
		}
		return
	}
	for _, c := range batch {
		if err := c.rename(); err != nil {
			c.fail(s, err)
			continue
		}
		c.err <- nil
	}
}

// rename moves every file of c from tmp/ to new/, stopping at the first
// failure.
func (c *commit) rename() error {
	for i := range c.files {
		if err := c.files[i].mb.commitRename(&c.files[i]); err != nil {
			return err
		}
	}
	return nil
}

// fail removes c's files from new/ again and gives c its error.
func (c *commit) fail(s *Store, err error) {
	for i := range c.files {
		c.files[i].mb.undo(s, &c.files[i])
	}
	c.err <- err
}

// flushEach commits a batch in FsyncEach mode, where each delivering
// goroutine fsynced its own files: rename every file from tmp/ to new/,
// then fsync each distinct new/ folder once. A delivery whose rename or
// folder sync fails gets the error, and any of its files already in new/
// are removed again.
func (s *Store) flushEach(batch []*commit) {
	if s.beforeFlushEach != nil {
		s.beforeFlushEach()
	}
	errs := make([]error, len(batch))
	dirs := map[string][]int{} // new/ folder → deliveries with a file in it
	for i, c := range batch {
		for j := range c.files {
			f := &c.files[j]
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
			c.fail(s, errs[i])
			continue
		}
		c.err <- nil
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
