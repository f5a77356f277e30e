package maildir

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/agua-mail/agua/internal/mailstore"
)

// Errors of the reading API; match them with errors.Is.
// They are the mail-store contract's values (internal/mailstore).
var (
	// ErrLocked: another session holds the folder's maildrop lock.
	ErrLocked = mailstore.ErrLocked
	// ErrNoMessage: the UID is not (or no longer) in the folder.
	ErrNoMessage = mailstore.ErrNoMessage
	// ErrNoFolder: the Maildir++ folder does not exist.
	ErrNoFolder = mailstore.ErrNoFolder
	// ErrBadFolder: the folder name cannot be a Maildir++ folder.
	ErrBadFolder = mailstore.ErrBadFolder
)

// MessageInfo describes one message of a folder.
type MessageInfo struct {
	UID   uint32 // stable while UIDValidity does not change
	Key   string // the file name without the ":2,<flags>" info: unique in the folder
	Size  int64  // bytes, from ",S=" in the name (stat only for names without it)
	Flags string // Maildir info flags in ASCII order ("FRS"); "" while in new/
	New   bool   // still in new/: no client has seen it yet
}

// Listing is a folder's content at one moment.
type Listing struct {
	// UIDValidity changes only when the UIDs of the folder had to be
	// assigned anew (lost or corrupt index): a client that cached UIDs
	// (POP3 UIDL, IMAP UID) must then forget them (RFC 3501 2.3.1.1).
	UIDValidity uint32
	UIDNext     uint32        // the UID the next new message will get
	Messages    []MessageInfo // ascending UID
}

// Folder is one folder of a mailbox: the mailbox's Maildir itself (INBOX)
// or, for IMAP, a Maildir++ folder below it ("Sent" is <maildir>/.Sent).
// It gives every message a UID kept in the folder's agua-uidlist file, so
// POP3 and IMAP sessions, across restarts, see the same UIDs. Folders of the
// same Store share one index per folder; a Folder is safe for concurrent
// use. Close it when done.
type Folder struct {
	s       *Store
	mailbox string
	name    string // "" for INBOX
	ix      *index
	once    sync.Once
}

// Folder opens folder name of mailbox: "" or "INBOX" (any case) is the
// mailbox itself, created if it does not exist yet; any other name is a
// Maildir++ folder, which must exist (ErrNoFolder). The first open reads
// the folder's UID index; listings then only reread what changed.
func (s *Store) Folder(mailbox, name string) (*Folder, error) {
	if strings.EqualFold(name, "INBOX") {
		name = ""
	}
	var dir string
	if name == "" {
		// Creates tmp/, new/ and cur/ durably if needed, as Deliver would.
		d, _, err := s.mailbox(mailbox).ensureDirs(s)
		if err != nil {
			return nil, err
		}
		dir = d
	} else {
		if !validFolderName(name) {
			return nil, fmt.Errorf("%w: %q", ErrBadFolder, name)
		}
		dir = filepath.Join(s.MaildirPath(mailbox), "."+name)
		if _, err := os.Stat(filepath.Join(dir, "cur")); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("%w: %s", ErrNoFolder, name)
			}
			return nil, fmt.Errorf("maildir: %w", err)
		}
	}
	return &Folder{s: s, mailbox: mailbox, name: name, ix: s.folders.acquire(dir, s.log)}, nil
}

// validFolderName accepts Maildir++ names: "." separates levels, so no
// level may be empty; no "/", no control characters.
func validFolderName(name string) bool { return mailstore.ValidFolderName(name) }

// Name returns the folder's name, "" for INBOX.
func (f *Folder) Name() string { return f.name }

// Close releases the folder; the index stays in memory while another
// Folder of the same folder is open.
func (f *Folder) Close() error {
	f.once.Do(func() { f.s.folders.release(f.ix) })
	return nil
}

// Lock takes the folder's maildrop lock (RFC 1939 8: one POP3 session per
// maildrop) and returns its release function, or ErrLocked. The lock is
// held in this process only: agua runs one server per data folder.
// Deliveries and listings go on while it is held.
func (f *Folder) Lock() (unlock func(), err error) {
	ix := f.ix
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if ix.locked {
		return nil, ErrLocked
	}
	ix.locked = true
	var once sync.Once
	return func() {
		once.Do(func() {
			ix.mu.Lock()
			ix.locked = false
			ix.mu.Unlock()
		})
	}, nil
}

// List brings the index up to date and returns the folder's messages.
// Only new/ and cur/ folders whose modification time changed are read
// again; new UIDs are on disk (agua-uidlist, fsynced) before List returns
// them.
func (f *Folder) List() (Listing, error) {
	ix := f.ix
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if err := ix.sync(f.s.now()); err != nil {
		return Listing{}, err
	}
	l := Listing{UIDValidity: ix.validity, UIDNext: ix.next, Messages: make([]MessageInfo, 0, len(ix.entries))}
	for _, e := range ix.entries {
		l.Messages = append(l.Messages, e.info())
	}
	return l, nil
}

// Open opens message uid for reading and returns its size.
func (f *Folder) Open(uid uint32) (*os.File, int64, error) {
	ix := f.ix
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for try := 0; ; try++ {
		e := ix.byUID(uid)
		if e == nil {
			return nil, 0, ErrNoMessage
		}
		fd, err := os.Open(ix.pathOf(e))
		if err == nil {
			return fd, e.size, nil
		}
		if !errors.Is(err, os.ErrNotExist) || try > 0 {
			return nil, 0, fmt.Errorf("maildir: opening message: %w", err)
		}
		// Renamed (flags) or removed by another program: look again.
		ix.forceRescan()
		if err := ix.sync(f.s.now()); err != nil {
			return nil, 0, err
		}
	}
}

// ReadMessage returns the whole of message uid; for tests and small tools.
func (f *Folder) ReadMessage(uid uint32) ([]byte, error) {
	fd, _, err := f.Open(uid)
	if err != nil {
		return nil, err
	}
	defer fd.Close()
	return io.ReadAll(fd)
}

// MarkSeen moves the given messages from new/ to cur/ (Maildir: a reader
// that has seen a message moves it to cur/ and adds the ":2," info), so the
// next session no longer reports them as new. Messages already in cur/ or
// gone are skipped. It is not the \Seen flag: see SetFlags.
func (f *Folder) MarkSeen(uids []uint32) error {
	return f.rename(uids, func(flags string) string { return flags })
}

// SetFlags adds and removes Maildir info flags (e.g. "S" seen, "T"
// trashed, "F" flagged, "R" replied, "D" draft) of the given messages,
// moving them to cur/ if needed. The key part of each name is kept.
func (f *Folder) SetFlags(uids []uint32, add, remove string) error {
	return f.rename(uids, func(flags string) string {
		var b []byte
		for i := 0; i < len(flags); i++ {
			if !strings.ContainsRune(remove, rune(flags[i])) {
				b = append(b, flags[i])
			}
		}
		for i := 0; i < len(add); i++ {
			if c := add[i]; isFlag(c) && !slices.Contains(b, c) {
				b = append(b, c)
			}
		}
		slices.Sort(b) // Maildir: flags in ASCII order
		return string(b)
	})
}

func isFlag(c byte) bool { return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' }

func (f *Folder) rename(uids []uint32, flags func(string) string) error {
	ix := f.ix
	ix.mu.Lock()
	defer ix.mu.Unlock()
	var errs []error
	for _, uid := range uids {
		e := ix.byUID(uid)
		if e == nil {
			continue
		}
		nf := flags(e.flags())
		if e.sub == "cur" && nf == e.flags() && strings.Contains(e.name, ":2,") {
			continue
		}
		name := e.key + ":2," + nf
		from, to := ix.pathOf(e), filepath.Join(ix.dir, "cur", name)
		if err := renameNoReplace(from, to); err != nil {
			errs = append(errs, fmt.Errorf("maildir: %w", err))
			continue
		}
		e.sub, e.name = "cur", name
	}
	return errors.Join(errs...)
}

// Delete removes the given messages (unlink, then fsync of the folders the
// names were in) and makes the store recount the mailbox's usage. UIDs
// not in the folder are skipped; on failure the messages that could be
// removed are gone and the error says which could not.
func (f *Folder) Delete(uids []uint32) error {
	ix := f.ix
	ix.mu.Lock()
	var errs []error
	dirs := map[string]bool{}
	removed := map[uint32]bool{}
	for _, uid := range uids {
		e := ix.byUID(uid)
		if e == nil {
			continue
		}
		p := ix.pathOf(e)
		err := os.Remove(p)
		if err != nil && errors.Is(err, os.ErrNotExist) {
			// Renamed by another program since we listed: find it again.
			ix.forceRescan()
			if serr := ix.sync(f.s.now()); serr != nil {
				errs = append(errs, serr)
				continue
			}
			if e = ix.byUID(uid); e == nil {
				continue // already gone
			}
			p = ix.pathOf(e)
			err = os.Remove(p)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("maildir: deleting message: %w", err))
			continue
		}
		dirs[filepath.Dir(p)] = true
		removed[uid] = true
	}
	if len(removed) > 0 {
		ix.entries = slices.DeleteFunc(ix.entries, func(e *entry) bool {
			if removed[e.uid] {
				delete(ix.keys, e.key)
				return true
			}
			return false
		})
		ix.dirty = true // the uidlist is compacted by the next List
	}
	ix.mu.Unlock()
	for d := range dirs {
		if err := syncDir(d); err != nil {
			errs = append(errs, err)
		}
	}
	if len(removed) > 0 {
		f.s.Forget(f.mailbox)
	}
	return errors.Join(errs...)
}

// folderTable holds the index of every open folder, shared by its Folders
// and dropped when the last one closes. The zero value is ready.
type folderTable struct {
	mu sync.Mutex
	m  map[string]*index
}

func (t *folderTable) acquire(dir string, log *slog.Logger) *index {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[string]*index{}
	}
	ix := t.m[dir]
	if ix == nil {
		ix = &index{dir: dir, log: log}
		t.m[dir] = ix
	}
	ix.refs++
	return ix
}

func (t *folderTable) release(ix *index) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ix.refs--
	if ix.refs <= 0 {
		delete(t.m, ix.dir)
	}
}
