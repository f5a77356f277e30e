package maildir

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/agua-mail/agua/internal/mailstore"
)

// SetUIDs gives the folder UIDVALIDITY validity and UIDNEXT next, written
// to its agua-uidlist durably (mailstore.UIDKeeper). A folder holding
// messages keeps them only under its own validity and a next not below
// its own: mailstore.ErrNotEmpty otherwise. An empty folder that keeps its
// validity does not lower its next either, so no UID is handed out twice.
func (f *Folder) SetUIDs(validity, next uint32) error {
	if validity == 0 || next == 0 {
		return fmt.Errorf("maildir: UIDVALIDITY %d, UIDNEXT %d: both must be above 0", validity, next)
	}
	ix := f.ix
	ix.mu.Lock()
	defer ix.mu.Unlock()
	return ix.update(f.s.now(), func() error {
		if len(ix.entries) > 0 && (validity != ix.validity || next < ix.next) {
			return fmt.Errorf("%w: %s holds %d messages under UIDVALIDITY %d, UIDNEXT %d; asked for %d, %d",
				mailstore.ErrNotEmpty, ix.dir, len(ix.entries), ix.validity, ix.next, validity, next)
		}
		if validity == ix.validity {
			next = max(next, ix.next)
		}
		ix.validity, ix.next = validity, next
		return nil
	})
}

// AppendUID stores a message under uid (mailstore.UIDKeeper): AppendUIDs
// of one message.
func (f *Folder) AppendUID(m mailstore.UIDMessage) error {
	return f.AppendUIDs([]mailstore.UIDMessage{m})
}

// AppendUIDs stores messages under their UIDs in cur/ with their flags and
// dates (mailstore.UIDBatcher), at the cost of one commit:
//
//  1. every file is written to tmp/, then made durable by one syncfs(2)
//     (an fsync each in FsyncEach mode);
//  2. the UIDs are written to agua-uidlist, durably, under its lock;
//  3. the files are renamed into cur/, and cur/ is fsynced.
//
// A crash between 2 and 3 leaves UIDs whose files are not in cur/: the
// next listing drops them, so the folder's highest UID is that of the last
// message really stored, and a resumed move copies the rest again. The
// files left in tmp/ go with the 36-hour cleanup.
func (f *Folder) AppendUIDs(msgs []mailstore.UIDMessage) error {
	if len(msgs) == 0 {
		return nil
	}
	for i := 1; i < len(msgs); i++ {
		if msgs[i].UID <= msgs[i-1].UID {
			return fmt.Errorf("%w: %d after %d", mailstore.ErrBadUID, msgs[i].UID, msgs[i-1].UID)
		}
	}
	if msgs[0].UID == 0 {
		return fmt.Errorf("%w: 0", mailstore.ErrBadUID)
	}
	if msgs[len(msgs)-1].UID == maxUID {
		// agua-uidlist keeps UIDNEXT, which must be above every UID.
		return fmt.Errorf("maildir: UID %d cannot be kept: no UIDNEXT above it", uint32(maxUID))
	}
	dir := f.ix.dir
	type staged struct {
		tmp, key, name string
		size           int64
	}
	files := make([]staged, 0, len(msgs))
	defer func() {
		for _, s := range files {
			if s.tmp != "" {
				os.Remove(s.tmp)
			}
		}
	}()
	for _, m := range msgs {
		key := f.s.uniqueName(m.Size)
		tmp := filepath.Join(dir, "tmp", key)
		files = append(files, staged{tmp: tmp, key: key, name: key + ":2," + cleanFlags(m.Flags), size: m.Size})
		if err := f.writeTmp(tmp, m); err != nil {
			return err
		}
	}
	if !f.s.fsyncEach {
		var st unix.Stat_t
		if err := unix.Stat(dir, &st); err != nil {
			return fmt.Errorf("maildir: stat %s: %w", dir, err)
		}
		fs, err := f.s.fsFor(uint64(st.Dev), dir)
		if err != nil {
			return err
		}
		if err := syncfs([]*os.File{fs}); err != nil {
			return err
		}
	}

	ix := f.ix
	ix.mu.Lock()
	defer ix.mu.Unlock()
	var added []*entry
	err := ix.update(f.s.now(), func() error {
		if n := len(ix.entries); n > 0 && ix.entries[n-1].uid >= msgs[0].UID {
			return fmt.Errorf("%w: %d, the folder holds %d", mailstore.ErrBadUID, msgs[0].UID, ix.entries[n-1].uid)
		}
		for i, s := range files {
			e := &entry{uid: msgs[i].UID, key: s.key, name: s.name, size: s.size} // no sub: not in cur/ yet
			ix.entries = append(ix.entries, e)
			ix.keys[e.key] = e
			added = append(added, e)
		}
		ix.next = max(ix.next, msgs[len(msgs)-1].UID+1)
		return nil
	})
	if err != nil {
		return err
	}
	cur := filepath.Join(dir, "cur")
	var errs []error
	for i, e := range added {
		if err := renameNoReplace(files[i].tmp, filepath.Join(cur, e.name)); err != nil {
			errs = append(errs, fmt.Errorf("maildir: %w", err))
			continue
		}
		files[i].tmp = ""
		e.sub = "cur"
	}
	if err := syncDir(cur); err != nil {
		errs = append(errs, err)
	}
	f.s.Forget(f.mailbox)
	return errors.Join(errs...)
}

// writeTmp writes one message to tmp, with its date as modification time.
func (f *Folder) writeTmp(tmp string, m mailstore.UIDMessage) error {
	fd, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, filePerm)
	if err != nil {
		return fmt.Errorf("maildir: creating %s: %w", tmp, err)
	}
	n, err := io.Copy(fd, io.LimitReader(m.R, m.Size+1))
	if err == nil && n != m.Size {
		err = fmt.Errorf("message is %d bytes, expected %d", n, m.Size)
	}
	if err == nil && f.s.fsyncEach {
		err = fd.Sync()
	}
	if cerr := fd.Close(); err == nil {
		err = cerr
	}
	if err == nil && !m.Date.IsZero() {
		err = os.Chtimes(tmp, m.Date, m.Date)
	}
	if err != nil {
		return fmt.Errorf("maildir: writing %s: %w", tmp, err)
	}
	return nil
}

// cleanFlags keeps the flag letters, sorted, each once.
func cleanFlags(flags string) string {
	b := []byte(flags)
	b = slices.DeleteFunc(b, func(c byte) bool { return !isFlag(c) })
	slices.Sort(b)
	return string(slices.Compact(b))
}
