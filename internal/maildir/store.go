package maildir

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a Store.
type Options struct {
	// Logger receives events the operator should know about (failed
	// cleanups); nil discards them.
	Logger *slog.Logger
	// Hostname goes into file names; the system host name if empty.
	Hostname string
	// MaxBatch is the most deliveries one group commit takes; 256 if zero.
	MaxBatch int
	// FsyncEach makes every delivery fsync its own files and each commit
	// fsync every new/ folder it touched, instead of one syncfs(2) of the
	// whole file system per commit step. Slower under load, but immune to
	// other programs' writes on the same file system; choose it when the
	// mail folder shares a file system with busy writers, or on Linux older
	// than 5.8, whose syncfs does not report write errors.
	FsyncEach bool
}

// Message is the message as received, with CRLF line endings.
type Message struct {
	R    io.ReaderAt
	Size int64
}

// Recipient is one mailbox a message is delivered to.
type Recipient struct {
	Mailbox string // the user's address, local@domain
	Quota   int64  // bytes, > 0
	Prefix  []byte // header lines to prepend for this recipient, CRLF-terminated
	// Folder is the Maildir++ folder the message goes to ("Junk"),
	// created if missing; "" is INBOX.
	Folder string
}

// QuotaError reports a recipient whose quota does not allow the message.
type QuotaError struct {
	Mailbox string
	// Permanent is set when the message is larger than the whole quota
	// (RFC 3463 5.2.2); otherwise the mailbox is full for now (4.2.2).
	Permanent bool
}

func (e *QuotaError) Error() string {
	if e.Permanent {
		return "message exceeds the quota of mailbox " + e.Mailbox
	}
	return "mailbox " + e.Mailbox + " is full"
}

// ErrClosed is returned by Deliver after Close.
var ErrClosed = errors.New("maildir: store is closed")

const (
	defaultMaxBatch = 256
	// usageMaxAge is how long a computed usage is trusted before the
	// folders are listed again to notice deletions by other programs.
	usageMaxAge = time.Minute
	// tmpMaxAge: the Maildir specification says a file in tmp/ that has not
	// been accessed for 36 hours can be removed.
	tmpMaxAge = 36 * time.Hour
	dirPerm   = 0o700
	filePerm  = 0o600
)

// Store is a set of Maildirs below one root folder. It is safe for
// concurrent use.
type Store struct {
	root      string
	hostname  string // escaped for file names
	pid       int
	log       *slog.Logger
	maxBatch  int
	now       func() time.Time // for tests
	fsyncEach bool
	batches   atomic.Int64 // commits made, for benchmarks
	committed atomic.Int64 // deliveries in them

	fsMu  sync.Mutex
	fsFDs map[uint64]*os.File // device → an open folder on it, for syncfs

	mu        sync.Mutex
	mailboxes map[string]*mailbox

	folders folderTable // UID indexes of open folders (folder.go)

	closeMu sync.RWMutex // held for reading while sending to queue
	closed  bool
	queue   chan *commit
	done    chan struct{} // closed when the committer has drained queue
}

// counter makes names unique among deliveries of this process in the same
// microsecond, across Stores.
var counter atomic.Uint64

// Open opens the store rooted at root, creating the folder if needed, and
// removes tmp/ files older than 36 hours left by crashes.
func Open(root string, opts Options) (*Store, error) {
	if err := os.MkdirAll(root, dirPerm); err != nil {
		return nil, fmt.Errorf("maildir: creating root: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	host := opts.Hostname
	if host == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("maildir: host name: %w", err)
		}
		host = h
	}
	maxBatch := opts.MaxBatch
	if maxBatch <= 0 {
		maxBatch = defaultMaxBatch
	}
	rootFD, err := os.Open(root)
	if err != nil {
		return nil, fmt.Errorf("maildir: opening root: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(rootFD.Fd()), &st); err != nil {
		rootFD.Close()
		return nil, fmt.Errorf("maildir: stat root: %w", err)
	}
	s := &Store{
		root: root,
		// Maildir spec: "/" and ":" in the host name are written in octal.
		hostname:  strings.NewReplacer("/", `\057`, ":", `\072`).Replace(host),
		pid:       os.Getpid(),
		log:       log,
		maxBatch:  maxBatch,
		fsyncEach: opts.FsyncEach,
		fsFDs:     map[uint64]*os.File{uint64(st.Dev): rootFD},
		now:       time.Now,
		mailboxes: map[string]*mailbox{},
		queue:     make(chan *commit, maxBatch),
		done:      make(chan struct{}),
	}
	s.cleanTmp()
	go s.committer()
	return s, nil
}

// Close waits for the pending commits and stops the committer. Deliver
// fails with ErrClosed afterwards.
func (s *Store) Close() error {
	s.closeMu.Lock()
	first := !s.closed
	if first {
		s.closed = true
		close(s.queue)
	}
	s.closeMu.Unlock()
	<-s.done
	if !first {
		return nil
	}
	s.fsMu.Lock()
	defer s.fsMu.Unlock()
	var err error
	for _, fd := range s.fsFDs {
		if cerr := fd.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	return err
}

// fsFor returns an open folder on the file system of dir (device dev), for
// syncfs: a domain or mailbox folder may be a mount point or a symbolic link
// to another file system, and syncing the root's would not cover it.
func (s *Store) fsFor(dev uint64, dir string) (*os.File, error) {
	s.fsMu.Lock()
	defer s.fsMu.Unlock()
	if fd := s.fsFDs[dev]; fd != nil {
		return fd, nil
	}
	fd, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("maildir: opening %s: %w", dir, err)
	}
	s.fsFDs[dev] = fd
	return fd, nil
}

// MaildirPath returns the folder of mailbox (local@domain):
// root/domain/local. Characters that cannot appear in a single file name
// component are escaped, so no mailbox name reaches outside its domain.
func (s *Store) MaildirPath(mailbox string) string {
	local, domain := mailbox, ""
	if at := strings.LastIndexByte(mailbox, '@'); at >= 0 {
		local, domain = mailbox[:at], mailbox[at+1:]
	}
	return filepath.Join(s.root, escapeName(domain), escapeName(local))
}

// escapeName makes s one safe path component: "/", "\" and control
// characters become \ooo, and a leading dot (".", "..", hidden files,
// Maildir++ folder names) is escaped too.
func escapeName(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '/' || c == '\\' || c < 0x20 || c == 0x7f || (i == 0 && c == '.') {
			fmt.Fprintf(&b, `\%03o`, c)
			continue
		}
		b.WriteByte(c)
	}
	if b.Len() == 0 {
		return `\000`
	}
	return b.String()
}

// cleanTmp removes files older than tmpMaxAge from every tmp/ folder.
func (s *Store) cleanTmp() {
	cutoff := s.now().Add(-tmpMaxAge)
	domains, err := os.ReadDir(s.root)
	if err != nil {
		s.log.Warn("maildir: listing mail root for tmp cleanup", "err", err)
		return
	}
	for _, d := range domains {
		if !d.IsDir() {
			continue
		}
		boxes, err := os.ReadDir(filepath.Join(s.root, d.Name()))
		if err != nil {
			s.log.Warn("maildir: listing domain for tmp cleanup", "domain", d.Name(), "err", err)
			continue
		}
		for _, b := range boxes {
			if b.IsDir() {
				s.cleanTmpDir(filepath.Join(s.root, d.Name(), b.Name(), "tmp"), cutoff)
			}
		}
	}
}

func (s *Store) cleanTmpDir(tmp string, cutoff time.Time) {
	entries, err := os.ReadDir(tmp)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("maildir: listing tmp for cleanup", "dir", tmp, "err", err)
		}
		return
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() || !info.ModTime().Before(cutoff) {
			continue
		}
		if err := os.Remove(filepath.Join(tmp, e.Name())); err != nil {
			s.log.Warn("maildir: removing stale tmp file", "file", filepath.Join(tmp, e.Name()), "err", err)
		} else {
			s.log.Info("maildir: removed stale tmp file", "file", filepath.Join(tmp, e.Name()))
		}
	}
}

// uniqueName returns a new Maildir file name for a file of size bytes.
func (s *Store) uniqueName(size int64) string {
	now := s.now()
	return strconv.FormatInt(now.Unix(), 10) +
		".M" + strconv.Itoa(now.Nanosecond()/1000) +
		"P" + strconv.Itoa(s.pid) +
		"Q" + strconv.FormatUint(counter.Add(1), 10) +
		"." + s.hostname +
		",S=" + strconv.FormatInt(size, 10)
}

// file is one recipient's copy of a delivery.
type file struct {
	mb      *mailbox
	fs      *os.File // a folder on the file system holding the file
	size    int64
	tmpPath string
	newPath string
	renamed bool
}

// commit is one delivery waiting for the committer.
type commit struct {
	files []*file
	err   chan error // receives the outcome once
}

var bufPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 64<<10) }}

// Deliver writes msg into the Maildir of every recipient, each copy after
// its own Prefix (a mailbox listed twice gets two copies: the caller
// deduplicates), and returns when every file and directory entry is on
// disk. If any recipient's quota does not allow the message (*QuotaError),
// or anything fails, nothing is delivered to anyone. ctx is honoured until
// the files are handed to the committer; after that Deliver waits for the
// commit, which is short and cannot be undone halfway.
func (s *Store) Deliver(ctx context.Context, msg Message, rcpts []Recipient) (err error) {
	if len(rcpts) == 0 {
		return errors.New("maildir: no recipients")
	}
	if msg.Size < 0 || msg.R == nil {
		return errors.New("maildir: invalid message")
	}
	for _, r := range rcpts {
		if r.Mailbox == "" || r.Quota <= 0 {
			return fmt.Errorf("maildir: invalid recipient %q with quota %d", r.Mailbox, r.Quota)
		}
		if r.Folder != "" {
			if _, err := s.folderDir(r.Mailbox, r.Folder); err != nil {
				return err
			}
		}
	}

	// Quota: reserve every recipient's bytes before writing anything.
	files := make([]*file, 0, len(rcpts))
	defer func() {
		if err == nil {
			return
		}
		// Files the committer renamed were removed and accounted by it.
		for _, f := range files {
			if f.renamed {
				continue
			}
			f.mb.release(f.size)
			if f.tmpPath != "" {
				if rerr := os.Remove(f.tmpPath); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
					s.log.Warn("maildir: removing tmp file of failed delivery", "file", f.tmpPath, "err", rerr)
				}
			}
		}
	}()
	for _, r := range rcpts {
		size := int64(len(r.Prefix)) + msg.Size
		mb := s.mailbox(r.Mailbox)
		if err := mb.reserve(s, size, r.Quota); err != nil {
			return err
		}
		files = append(files, &file{mb: mb, size: size})
	}

	// Write and fsync every copy in tmp/.
	for i, f := range files {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.writeTmp(f, msg, rcpts[i]); err != nil {
			return err
		}
	}

	// Hand the files to the committer and wait for the outcome. The
	// committer removes whatever it renamed if the commit fails, and
	// accounts the bytes of what it commits.
	c := &commit{files: files, err: make(chan error, 1)}
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return ErrClosed
	}
	s.queue <- c
	s.closeMu.RUnlock()
	return <-c.err
}

// writeTmp writes the recipient's prefix and the message to a new file in
// the tmp/ folder of f's mailbox (or of its folder r.Folder), and fsyncs it
// in FsyncEach mode.
func (s *Store) writeTmp(f *file, msg Message, r Recipient) (err error) {
	prefix := r.Prefix
	dir, fs, err := f.mb.ensureDirs(s)
	if err != nil {
		return err
	}
	if r.Folder != "" {
		if dir, err = s.ensureFolder(r.Mailbox, r.Folder); err != nil {
			return err
		}
	}
	f.fs = fs
	name := s.uniqueName(f.size)
	f.tmpPath = filepath.Join(dir, "tmp", name)
	f.newPath = filepath.Join(dir, "new", name)
	fd, err := os.OpenFile(f.tmpPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, filePerm)
	if err != nil {
		f.tmpPath = ""
		return fmt.Errorf("maildir: creating %s: %w", name, err)
	}
	defer func() {
		if cerr := fd.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("maildir: closing %s: %w", f.tmpPath, cerr)
		}
	}()
	w := bufPool.Get().(*bufio.Writer)
	w.Reset(fd)
	defer func() {
		w.Reset(nil)
		bufPool.Put(w)
	}()
	if _, err := w.Write(prefix); err != nil {
		return fmt.Errorf("maildir: writing %s: %w", f.tmpPath, err)
	}
	n, err := io.Copy(w, io.NewSectionReader(msg.R, 0, msg.Size))
	if err != nil {
		return fmt.Errorf("maildir: writing %s: %w", f.tmpPath, err)
	}
	if n != msg.Size {
		return fmt.Errorf("maildir: message is %d bytes, expected %d", n, msg.Size)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("maildir: writing %s: %w", f.tmpPath, err)
	}
	// The data must be on disk before the rename can make it visible.
	if !s.fsyncEach {
		return nil // the committer's syncfs covers it
	}
	if err := fd.Sync(); err != nil {
		return fmt.Errorf("maildir: syncing %s: %w", f.tmpPath, err)
	}
	return nil
}
