package maildir

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/agua-mail/agua/internal/mailstore"
)

// Folder management and writing for IMAP: Maildir++ folders are the
// directories "<maildir>/.<name>" with their own tmp/, new/ and cur/, and a
// "maildirfolder" marker file (the Maildir++ convention Dovecot and Courier
// follow). Levels of a name are separated by ".", so "Archive.2024" is
// "<maildir>/.Archive.2024", a sibling of ".Archive" on disk.

// ErrFolderExists: CreateFolder or RenameFolder found the name taken.
var ErrFolderExists = mailstore.ErrFolderExists

// defaultFoldersMarker records that a mailbox got its default folders, so
// that a folder the user deleted is not created again at the next login.
const defaultFoldersMarker = "agua-default-folders"

// scratchName names a folder being created or removed: it starts with
// "..", which no folder name can (an empty first level), so ListFolders
// never shows it and no client can name it.
func scratchName(what, unique string) string {
	return "..agua-" + what + "-" + strings.ReplaceAll(unique, ",", "_")
}

func (s *Store) folderDir(mailbox, name string) (string, error) {
	if !validFolderName(name) || strings.EqualFold(name, "INBOX") {
		return "", fmt.Errorf("%w: %q", ErrBadFolder, name)
	}
	return filepath.Join(s.MaildirPath(mailbox), "."+name), nil
}

// CreateFolder creates the Maildir++ folder name of mailbox durably (the
// mailbox itself is created if needed); ErrFolderExists if it exists.
func (s *Store) CreateFolder(mailbox, name string) error {
	dir, err := s.folderDir(mailbox, name)
	if err != nil {
		return err
	}
	if _, _, err := s.mailbox(mailbox).ensureDirs(s); err != nil {
		return err
	}
	tmp := filepath.Join(s.MaildirPath(mailbox), scratchName("new", s.uniqueName(0)))
	// Build the folder under a temporary name, then rename it into place:
	// a crash never leaves a half-made folder under the real name.
	for _, sub := range []string{"tmp", "new", "cur"} {
		if err := os.MkdirAll(filepath.Join(tmp, sub), dirPerm); err != nil {
			os.RemoveAll(tmp)
			return fmt.Errorf("maildir: creating folder: %w", err)
		}
	}
	if err := os.WriteFile(filepath.Join(tmp, "maildirfolder"), nil, filePerm); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("maildir: creating folder: %w", err)
	}
	if err := syncDir(tmp); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	if err := renameNoReplace(tmp, dir); err != nil {
		os.RemoveAll(tmp)
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%w: %s", ErrFolderExists, name)
		}
		return fmt.Errorf("maildir: creating folder: %w", err)
	}
	return syncDir(filepath.Dir(dir))
}

// DeleteFolder removes the Maildir++ folder name of mailbox with its
// messages. Folders below it (name.x) are separate folders and stay.
func (s *Store) DeleteFolder(mailbox, name string) error {
	dir, err := s.folderDir(mailbox, name)
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, "cur")); err != nil {
		return fmt.Errorf("%w: %s", ErrNoFolder, name)
	}
	// Rename away first (atomic: the name is gone at once), then remove.
	gone := filepath.Join(s.MaildirPath(mailbox), scratchName("deleted", s.uniqueName(0)))
	if err := os.Rename(dir, gone); err != nil {
		return fmt.Errorf("maildir: deleting folder: %w", err)
	}
	if err := syncDir(filepath.Dir(dir)); err != nil {
		return err
	}
	if err := os.RemoveAll(gone); err != nil {
		s.log.Warn("maildir: removing deleted folder", "dir", gone, "err", err)
	}
	s.Forget(mailbox)
	return nil
}

// RenameFolder renames folder from to to, and every folder below it
// (from.x becomes to.x). Renaming INBOX is not supported (ErrBadFolder).
func (s *Store) RenameFolder(mailbox, from, to string) error {
	src, err := s.folderDir(mailbox, from)
	if err != nil {
		return err
	}
	dst, err := s.folderDir(mailbox, to)
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(src, "cur")); err != nil {
		return fmt.Errorf("%w: %s", ErrNoFolder, from)
	}
	if strings.HasPrefix(to+".", from+".") {
		return fmt.Errorf("%w: cannot move %q below itself", ErrBadFolder, from)
	}
	names, err := s.ListFolders(mailbox)
	if err != nil {
		return err
	}
	type move struct{ from, to string }
	moves := []move{{src, dst}}
	for _, n := range names {
		if strings.HasPrefix(n, from+".") {
			d, err := s.folderDir(mailbox, to+n[len(from):])
			if err != nil {
				return err
			}
			moves = append(moves, move{filepath.Join(s.MaildirPath(mailbox), "."+n), d})
		}
	}
	for _, m := range moves {
		if _, err := os.Lstat(m.to); err == nil {
			return fmt.Errorf("%w: %s", ErrFolderExists, filepath.Base(m.to)[1:])
		}
	}
	for _, m := range moves {
		if err := renameNoReplace(m.from, m.to); err != nil {
			if errors.Is(err, os.ErrExist) {
				return fmt.Errorf("%w: %s", ErrFolderExists, filepath.Base(m.to)[1:])
			}
			return fmt.Errorf("maildir: renaming folder: %w", err)
		}
	}
	return syncDir(s.MaildirPath(mailbox))
}

// ListFolders returns the names of mailbox's Maildir++ folders, sorted;
// INBOX is not among them.
func (s *Store) ListFolders(mailbox string) ([]string, error) {
	entries, err := os.ReadDir(s.MaildirPath(mailbox))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("maildir: listing folders: %w", err)
	}
	var out []string
	for _, e := range entries {
		n := e.Name()
		if !e.IsDir() || !strings.HasPrefix(n, ".") || !validFolderName(n[1:]) {
			continue
		}
		out = append(out, n[1:])
	}
	slices.Sort(out)
	return out, nil
}

// ensureFolder returns the folder name of mailbox for a delivery,
// creating it if it does not exist (a Junk folder for quarantined mail
// that the user's IMAP client never made).
func (s *Store) ensureFolder(mailbox, name string) (string, error) {
	dir, err := s.folderDir(mailbox, name)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(dir, "new")); err == nil {
		return dir, nil
	}
	if err := s.CreateFolder(mailbox, name); err != nil && !errors.Is(err, ErrFolderExists) {
		return "", err
	}
	return dir, nil
}

// CreateDefaultFolders creates the given folders the first time it is
// called for mailbox (a marker file records it), so that folders a user
// deleted later are not made again. Folders that exist are kept.
func (s *Store) CreateDefaultFolders(mailbox string, names []string) error {
	marker := filepath.Join(s.MaildirPath(mailbox), defaultFoldersMarker)
	if _, err := os.Stat(marker); err == nil {
		return nil
	}
	for _, n := range names {
		if err := s.CreateFolder(mailbox, n); err != nil && !errors.Is(err, ErrFolderExists) {
			return err
		}
	}
	if err := os.WriteFile(marker, nil, filePerm); err != nil {
		return fmt.Errorf("maildir: %w", err)
	}
	return syncDir(filepath.Dir(marker))
}

// DefaultFoldersMade reports whether CreateDefaultFolders has run for
// mailbox (its marker file exists).
func (s *Store) DefaultFoldersMade(mailbox string) (bool, error) {
	_, err := os.Stat(filepath.Join(s.MaildirPath(mailbox), defaultFoldersMarker))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	}
	return false, fmt.Errorf("maildir: %w", err)
}

// FolderUsage returns the bytes and messages in every folder of mailbox,
// INBOX and Maildir++ folders together (Usage counts INBOX only, which is
// what SMTP's quota check has always done).
func (s *Store) FolderUsage(mailbox string) (int64, int, error) {
	s.Forget(mailbox) // exact now, not up to a minute old
	return s.Usage(mailbox)
}

// Append writes a message of size bytes read from r into the folder, in
// cur/ with the given Maildir info flags (e.g. "S"), durably: the file is
// fsynced before it is renamed into cur/, and cur/ after. date, if not
// zero, becomes the file's modification time (the IMAP internal date). It
// returns the message's UID and the folder's UIDVALIDITY.
func (f *Folder) Append(r io.Reader, size int64, flags string, date time.Time) (uid, validity uint32, err error) {
	dir := f.ix.dir
	name := f.s.uniqueName(size)
	tmp := filepath.Join(dir, "tmp", name)
	fd, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, filePerm)
	if err != nil {
		return 0, 0, fmt.Errorf("maildir: creating %s: %w", name, err)
	}
	n, err := io.Copy(fd, io.LimitReader(r, size+1))
	if err == nil && n != size {
		err = fmt.Errorf("message is %d bytes, expected %d", n, size)
	}
	if err == nil {
		err = fd.Sync()
	}
	if cerr := fd.Close(); err == nil {
		err = cerr
	}
	if err == nil && !date.IsZero() {
		err = os.Chtimes(tmp, date, date)
	}
	if err != nil {
		os.Remove(tmp)
		return 0, 0, fmt.Errorf("maildir: writing %s: %w", name, err)
	}
	if err := f.commitFile(tmp, name, flags); err != nil {
		os.Remove(tmp)
		return 0, 0, err
	}
	return f.uidOf(name)
}

// commitFile renames a complete file into cur/ with flags and fsyncs cur/.
func (f *Folder) commitFile(from, key, flags string) error {
	cur := filepath.Join(f.ix.dir, "cur")
	if err := renameNoReplace(from, filepath.Join(cur, key+":2,"+cleanFlags(flags))); err != nil {
		return fmt.Errorf("maildir: %w", err)
	}
	if err := syncDir(cur); err != nil {
		return err
	}
	if f.name == "" {
		f.s.Forget(f.mailbox)
	}
	return nil
}

// uidOf lists the folder and returns the UID of the message with key.
func (f *Folder) uidOf(key string) (uint32, uint32, error) {
	ix := f.ix
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.forceRescan()
	if err := ix.sync(f.s.now()); err != nil {
		return 0, 0, err
	}
	e := ix.keys[key]
	if e == nil {
		return 0, 0, fmt.Errorf("maildir: appended message %s vanished", key)
	}
	return e.uid, ix.validity, nil
}

// CopyTo copies messages uids of f into dst (hard links where the file
// system allows, else a durable copy), keeping their flags, and returns
// for each copied source UID its UID in dst. UIDs not in f are skipped.
func (f *Folder) CopyTo(dst *Folder, uids []uint32) (src, dest []uint32, validity uint32, err error) {
	type job struct {
		uid   uint32
		path  string
		flags string
		size  int64
	}
	var jobs []job
	f.ix.mu.Lock()
	for _, u := range uids {
		if e := f.ix.byUID(u); e != nil {
			jobs = append(jobs, job{u, f.ix.pathOf(e), e.flags(), e.size})
		}
	}
	f.ix.mu.Unlock()
	var keys []string
	for _, j := range jobs {
		name := f.s.uniqueName(j.size)
		tmp := filepath.Join(dst.ix.dir, "tmp", name)
		if err := os.Link(j.path, tmp); err != nil {
			if err := copyFile(j.path, tmp); err != nil {
				return nil, nil, 0, err
			}
		}
		if err := dst.commitFile(tmp, name, j.flags); err != nil {
			os.Remove(tmp)
			return nil, nil, 0, err
		}
		src = append(src, j.uid)
		keys = append(keys, name)
	}
	if len(keys) == 0 {
		l, err := dst.List()
		return nil, nil, l.UIDValidity, err
	}
	dst.ix.mu.Lock()
	defer dst.ix.mu.Unlock()
	dst.ix.forceRescan()
	if err := dst.ix.sync(f.s.now()); err != nil {
		return nil, nil, 0, err
	}
	for _, k := range keys {
		e := dst.ix.keys[k]
		if e == nil {
			return nil, nil, 0, fmt.Errorf("maildir: copied message %s vanished", k)
		}
		dest = append(dest, e.uid)
	}
	return src, dest, dst.ix.validity, nil
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return fmt.Errorf("maildir: copying message: %w", err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, filePerm)
	if err != nil {
		return fmt.Errorf("maildir: copying message: %w", err)
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(to)
		return fmt.Errorf("maildir: copying message: %w", err)
	}
	return nil
}

// ModTime returns the modification time of message uid's file: the
// delivery or APPEND time (IMAP INTERNALDATE).
func (f *Folder) ModTime(uid uint32) (time.Time, error) {
	ix := f.ix
	ix.mu.Lock()
	e := ix.byUID(uid)
	var p string
	if e != nil {
		p = ix.pathOf(e)
	}
	ix.mu.Unlock()
	if e == nil {
		return time.Time{}, ErrNoMessage
	}
	info, err := os.Stat(p)
	if err != nil {
		return time.Time{}, fmt.Errorf("maildir: %w", err)
	}
	return info.ModTime(), nil
}

// Stamp identifies a state of a folder's new/ and cur/ listings (their
// modification times and inodes).
type Stamp struct {
	newTime, curTime int64
	newIno, curIno   uint64
}

// Stamp returns the folder's stamp, and whether it is settled: both times
// older than the clock's granularity window, so that an equal stamp later
// means nothing was added, removed or re-flagged in between. A session
// that polls (IMAP IDLE) lists the folder only when the stamp changed or
// was not settled.
func (f *Folder) Stamp() (Stamp, bool, error) {
	var st Stamp
	var a, b unix.Stat_t
	if err := unix.Stat(filepath.Join(f.ix.dir, "new"), &a); err != nil {
		return st, false, fmt.Errorf("maildir: %w", err)
	}
	if err := unix.Stat(filepath.Join(f.ix.dir, "cur"), &b); err != nil {
		return st, false, fmt.Errorf("maildir: %w", err)
	}
	st = Stamp{newTime: a.Mtim.Nano(), curTime: b.Mtim.Nano(), newIno: a.Ino, curIno: b.Ino}
	now := f.s.now()
	settled := now.Sub(time.Unix(0, st.newTime)) > racyWindow && now.Sub(time.Unix(0, st.curTime)) > racyWindow
	return st, settled, nil
}
