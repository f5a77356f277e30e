package maildir

import (
	"context"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// mailbox is the in-memory state of one Maildir: whether its folders exist
// and its usage. The fields after mu are guarded by it.
type mailbox struct {
	name string
	path string
	// made is an open folder on the mailbox's file system (Store.fsFor)
	// once its tmp/, new/ and cur/ exist, nil before and after Forget: read
	// without the lock, so that a delivery does not wait for the
	// group commit's renames (which hold mu) to learn that they exist.
	made atomic.Pointer[os.File]

	mu       sync.Mutex
	loaded   bool      // bytes and count are valid as of scanned
	scanned  time.Time // when new/ and cur/ were last listed
	bytes    int64     // committed bytes in new/ and cur/
	count    int       // committed messages
	reserved int64     // bytes of deliveries in progress
	// scan is the listing of the folders running without mu, nil when
	// none runs.
	scan *usageScan
}

// usageScan is one listing of a mailbox's folders. It runs without the
// mailbox lock: listing 100,000 messages takes a few hundred milliseconds
// on a busy disk, and under the lock every delivery to the mailbox waited
// for it — all of them at once after a start (legit p99 ×40 in the first
// second of `agua bench` against a mailbox its earlier runs had filled)
// and again once a minute. The files this store moves into or out of new/
// meanwhile are noted in touched, so that the listing's figure can be
// corrected for what it saw of them.
type usageScan struct {
	done    chan struct{} // closed when the figure is installed (or err set)
	touched map[string]touchedFile
	forgot  bool  // Forget was called meanwhile: the listing may predate deletions
	err     error // set before done is closed
}

// touchedFile is a file committed to new/ (present) or removed again by a
// failed delivery while a listing ran.
type touchedFile struct {
	size    int64
	present bool
}

// touch notes a file moved into or out of new/ for a running listing.
// mb.mu is held.
func (mb *mailbox) touch(path string, size int64, present bool) {
	if mb.scan != nil {
		mb.scan.touched[path] = touchedFile{size: size, present: present}
	}
}

// mailbox returns the state of name, creating it on first use.
func (s *Store) mailbox(name string) *mailbox {
	s.mu.Lock()
	defer s.mu.Unlock()
	mb := s.mailboxes[name]
	if mb == nil {
		mb = &mailbox{name: name, path: s.MaildirPath(name)}
		s.mailboxes[name] = mb
	}
	return mb
}

// Usage returns the bytes and number of messages in mailbox — INBOX and
// its Maildir++ folders — from memory when the figure is less than a minute
// old (Forget makes the next call list them again).
func (s *Store) Usage(mailbox string) (bytes int64, count int, err error) {
	mb := s.mailbox(mailbox)
	mb.mu.Lock()
	defer mb.mu.Unlock()
	if err := mb.refresh(s); err != nil {
		return 0, 0, err
	}
	return mb.bytes, mb.count, nil
}

// Used returns the bytes in mailbox as Usage does (up to a minute old):
// the quota check of internal/router's MailboxWriter. ctx is not consulted.
func (s *Store) Used(_ context.Context, mailbox string) (int64, error) {
	bytes, _, err := s.Usage(mailbox)
	return bytes, err
}

// Forget drops the usage of mailbox so that the next use lists its folders
// again: call it after deleting messages (POP3, IMAP, user removal).
// Reservations of deliveries in progress are kept.
func (s *Store) Forget(mailbox string) {
	s.mu.Lock()
	mb := s.mailboxes[mailbox]
	s.mu.Unlock()
	if mb == nil {
		return
	}
	mb.mu.Lock()
	mb.loaded = false
	if mb.scan != nil {
		mb.scan.forgot = true
	}
	mb.made.Store(nil) // the folders may have been removed too
	mb.mu.Unlock()
}

// refresh makes sure the usage is known, listing the folders when it is
// unknown or stale. mb.mu is held (and released while waiting).
//
// The listing runs in a goroutine of its own, without the lock. A stale
// figure (over usageMaxAge old) is used meanwhile, with the deliveries'
// own commits added as they happen, so a delivery never waits for the
// listing; only a delivery to a mailbox whose usage was never listed (see
// Store.warmUsage, which lists every mailbox after Open) waits for it.
func (mb *mailbox) refresh(s *Store) error {
	for {
		now := s.now()
		if mb.loaded && now.Sub(mb.scanned) < usageMaxAge {
			return nil
		}
		sc := mb.scan
		if sc == nil {
			sc = &usageScan{done: make(chan struct{}), touched: map[string]touchedFile{}}
			mb.scan = sc
			go mb.runScan(s, sc, now)
		}
		if mb.loaded {
			return nil // stale: go on with it while the folders are listed
		}
		mb.mu.Unlock()
		<-sc.done
		mb.mu.Lock()
		if sc.err != nil {
			return sc.err
		}
	}
}

// runScan lists mb's folders without the lock and installs the figure,
// corrected for the files committed or removed meanwhile, under it.
func (mb *mailbox) runScan(s *Store, sc *usageScan, now time.Time) {
	if s.beforeList != nil {
		s.beforeList(mb.path)
	}
	l, err := listUsage(mb.path)
	if s.afterList != nil {
		s.afterList(mb.path)
	}
	mb.mu.Lock()
	mb.scan = nil
	sc.err = err
	if err == nil && !sc.forgot {
		bytes, count := l.bytes, l.count
		for path, t := range sc.touched {
			switch seen := l.has(path); {
			case t.present && !seen:
				bytes += t.size
				count++
			case !t.present && seen:
				bytes -= t.size
				count--
			}
		}
		mb.bytes, mb.count = bytes, count
		mb.loaded, mb.scanned = true, now
	}
	mb.mu.Unlock()
	close(sc.done)
}

// listing is what listUsage found: the totals and each folder's entries
// (sorted by name, as os.ReadDir returns them).
type listing struct {
	bytes   int64
	count   int
	entries map[string][]os.DirEntry // by folder path
}

// has reports whether the listing saw the file at path.
func (l *listing) has(path string) bool {
	entries := l.entries[filepath.Dir(path)]
	name := filepath.Base(path)
	i := sort.Search(len(entries), func(i int) bool { return entries[i].Name() >= name })
	return i < len(entries) && entries[i].Name() == name
}

// listUsage lists new/ and cur/ of a mailbox and of its Maildir++ folders
// (.Sent, .Trash, …: the quota covers the whole mailbox, as IMAP clients
// see it), reading ",S=" from names and calling stat only for names
// without it.
func listUsage(path string) (*listing, error) {
	var dirs []string
	for _, dir := range withFolders(path) {
		dirs = append(dirs, filepath.Join(dir, "new"), filepath.Join(dir, "cur"))
	}
	l := &listing{entries: make(map[string][]os.DirEntry, len(dirs))}
	for _, dir := range dirs {
		entries, err := os.ReadDir(dir)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("maildir: listing %s: %w", dir, err)
		}
		l.entries[dir] = entries
		for _, e := range entries {
			name := e.Name()
			if strings.HasPrefix(name, ".") {
				continue
			}
			if size, ok := sizeFromName(name); ok {
				l.bytes += size
				l.count++
				continue
			}
			info, err := os.Lstat(filepath.Join(dir, name))
			if err != nil {
				continue // deleted while we listed
			}
			if info.Mode().IsRegular() {
				l.bytes += info.Size()
				l.count++
			}
		}
	}
	return l, nil
}

// withFolders returns the Maildir at path followed by its Maildir++
// folders (.Sent, .Trash, …), which may not exist.
func withFolders(path string) []string {
	dirs := []string{path}
	if entries, err := os.ReadDir(path); err == nil {
		for _, e := range entries {
			if n := e.Name(); e.IsDir() && strings.HasPrefix(n, ".") && n != "." && n != ".." {
				dirs = append(dirs, filepath.Join(path, n))
			}
		}
	}
	return dirs
}

// sizeFromName reads the Dovecot ",S=<size>" field of a Maildir file name,
// which sits in the part before the ":2," info.
func sizeFromName(name string) (int64, bool) {
	base, _, _ := strings.Cut(name, ":")
	i := strings.Index(base, ",S=")
	if i < 0 {
		return 0, false
	}
	digits := base[i+3:]
	if j := strings.IndexByte(digits, ','); j >= 0 {
		digits = digits[:j]
	}
	size, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || size < 0 {
		return 0, false
	}
	return size, true
}

// reserve sets aside size bytes for a delivery if the quota allows it.
func (mb *mailbox) reserve(s *Store, size, quota int64) error {
	if size > quota {
		return &QuotaError{Mailbox: mb.name, Permanent: true}
	}
	mb.mu.Lock()
	defer mb.mu.Unlock()
	if err := mb.refresh(s); err != nil {
		return err
	}
	if mb.bytes+mb.reserved+size > quota {
		return &QuotaError{Mailbox: mb.name}
	}
	mb.reserved += size
	return nil
}

// release gives back a reservation of a delivery that did not happen.
func (mb *mailbox) release(size int64) {
	mb.mu.Lock()
	mb.reserved -= size
	mb.mu.Unlock()
}

// commitRename moves f from tmp/ to new/ and turns its reservation into
// usage, under the lock so that a concurrent listing counts it exactly once.
func (mb *mailbox) commitRename(f *file) error {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	if err := renameNoReplace(f.tmpPath, f.newPath); err != nil {
		return fmt.Errorf("maildir: moving %s to new/: %w", f.tmpPath, err)
	}
	f.renamed = true
	mb.reserved -= f.size
	mb.bytes += f.size
	mb.count++
	mb.touch(f.newPath, f.size, true)
	return nil
}

// undo removes a renamed file of a failed delivery from new/ and its usage.
// Files not renamed are left to Deliver, which removes them from tmp/.
func (mb *mailbox) undo(s *Store, f *file) {
	if !f.renamed {
		return
	}
	mb.mu.Lock()
	defer mb.mu.Unlock()
	if err := os.Remove(f.newPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		// The message stays visible although the sender was told it
		// failed; it will retry, and the recipient may see it twice.
		s.log.Error("maildir: cannot remove file of failed delivery from new/", "file", f.newPath, "err", err)
		mb.loaded = false
		return
	}
	mb.bytes -= f.size
	mb.count--
	mb.touch(f.newPath, f.size, false)
}

// ensureDirs creates the mailbox's tmp/, new/ and cur/ folders on first use
// and returns the mailbox folder and an open folder on its file system.
// Newly created folders are fsynced into their parents so that the first
// delivery's directory entries are durable.
func (mb *mailbox) ensureDirs(s *Store) (string, *os.File, error) {
	if fs := mb.made.Load(); fs != nil {
		return mb.path, fs, nil
	}
	mb.mu.Lock()
	defer mb.mu.Unlock()
	if fs := mb.made.Load(); fs != nil {
		return mb.path, fs, nil
	}
	if _, err := os.Stat(filepath.Join(mb.path, "cur")); err != nil {
		// Find the folders that are missing, create everything, then sync
		// each parent whose entries changed.
		var created []string
		for p := mb.path; ; p = filepath.Dir(p) {
			if _, err := os.Stat(p); err == nil {
				break
			}
			created = append(created, p)
			if filepath.Dir(p) == p {
				break
			}
		}
		for _, sub := range []string{"tmp", "new", "cur"} {
			if err := os.MkdirAll(filepath.Join(mb.path, sub), dirPerm); err != nil {
				return "", nil, fmt.Errorf("maildir: creating %s: %w", mb.path, err)
			}
		}
		if err := syncDir(mb.path); err != nil {
			return "", nil, err
		}
		for _, p := range created {
			if err := syncDir(filepath.Dir(p)); err != nil {
				return "", nil, err
			}
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(mb.path, &st); err != nil {
		return "", nil, fmt.Errorf("maildir: stat %s: %w", mb.path, err)
	}
	fs, err := s.fsFor(uint64(st.Dev), mb.path)
	if err != nil {
		return "", nil, err
	}
	mb.made.Store(fs)
	return mb.path, fs, nil
}

// renameNoReplace renames old to new but never replaces an existing new:
// a name collision must fail loudly rather than lose a message.
func renameNoReplace(old, new string) error {
	err := unix.Renameat2(unix.AT_FDCWD, old, unix.AT_FDCWD, new, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) {
		// Old kernels and some file systems lack RENAME_NOREPLACE; the
		// unique names make a collision practically impossible.
		if _, serr := os.Lstat(new); serr == nil {
			return &os.LinkError{Op: "rename", Old: old, New: new, Err: os.ErrExist}
		}
		return os.Rename(old, new)
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: old, New: new, Err: err}
	}
	return nil
}
