package maildir

import (
	"context"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agua-mail/agua/internal/mailstore"
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

// Message is the message as received, with CRLF line endings; Recipient is
// one mailbox it goes to; QuotaError reports a recipient whose quota does
// not allow it. They are the delivery contract's types (internal/mailstore),
// so that Store.Deliver is what internal/router's MailboxWriter asks for.
type (
	Message    = mailstore.Delivery
	Recipient  = mailstore.Recipient
	QuotaError = mailstore.QuotaError
)

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
	root     string
	hostname string // escaped for file names
	pid      int
	log      *slog.Logger
	maxBatch int
	now      func() time.Time // for tests
	// beforeSyncfs, if set, runs before each commit step's syncfs (tests).
	beforeSyncfs func()
	// beforeFlushEach, if set, runs before each FsyncEach-mode commit
	// (tests).
	beforeFlushEach func()
	// beforeList and afterList, if set, run around each listing of a
	// mailbox's folders for its usage, in the listing's goroutine (tests).
	beforeList, afterList func(path string)
	fsyncEach             bool
	batches               atomic.Int64 // commits made, for benchmarks
	committed             atomic.Int64 // deliveries in them

	lock *os.File // shared flock of root/.agua-store.lock (recover.go)

	fsMu  sync.Mutex
	fsFDs map[uint64]*os.File // device → an open folder on it, for syncfs

	mu        sync.Mutex
	mailboxes map[string]*mailbox

	folders folderTable // UID indexes of open folders (folder.go)

	closeMu sync.RWMutex // held for reading while adding to inflight
	closed  bool
	// inflight counts the deliveries handed to commit, which Close waits
	// for.
	inflight sync.WaitGroup
	// warmed is closed when warmUsage has listed every mailbox (or
	// stopped at Close).
	warmed chan struct{}
	stop   atomic.Bool // Close was called: warmUsage stops

	// The group commit (commit.go): the deliveries waiting for a commit,
	// whether one is running, and the running one's batch.
	cmu     sync.Mutex
	pending []*commit
	leading bool
	batch   []*commit
}

// counter makes names unique among deliveries of this process in the same
// microsecond, across Stores.
var counter atomic.Uint64

// Open opens the store rooted at root, creating the folder if needed. When
// no other Store has root open, it moves the complete files of
// acknowledged deliveries that a crash left in tmp/ into new/ and removes
// torn ones (recover.go); in any case it removes other tmp/ files older
// than 36 hours.
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
	lock, exclusive, err := lockStore(root)
	if err != nil {
		rootFD.Close()
		return nil, err
	}
	s := &Store{
		root: root,
		lock: lock,
		// Maildir spec: "/" and ":" in the host name are written in octal.
		hostname:  strings.NewReplacer("/", `\057`, ":", `\072`).Replace(host),
		pid:       os.Getpid(),
		log:       log,
		maxBatch:  maxBatch,
		fsyncEach: opts.FsyncEach,
		fsFDs:     map[uint64]*os.File{uint64(st.Dev): rootFD},
		now:       time.Now,
		mailboxes: map[string]*mailbox{},
		warmed:    make(chan struct{}),
	}
	s.sweepTmp(exclusive)
	if exclusive {
		// Recovered: other Stores may open the root now (recover.go).
		if err := unix.Flock(int(lock.Fd()), unix.LOCK_SH); err != nil {
			lock.Close()
			rootFD.Close()
			return nil, fmt.Errorf("maildir: locking %s: %w", lock.Name(), err)
		}
	}
	go s.warmUsage()
	return s, nil
}

// warmUsage lists the usage of every mailbox once, in the background, so
// that the first deliveries after a start find it known instead of waiting
// for a listing of their mailbox (a few hundred milliseconds for 100,000
// messages on a busy disk, every delivery to it waiting meanwhile: the
// stall of the first second after `agua serve` started).
func (s *Store) warmUsage() {
	defer close(s.warmed)
	s.eachMaildir(func(domain, box string) bool {
		if s.stop.Load() {
			return false
		}
		name := unescapeName(box) + "@" + unescapeName(domain)
		if s.MaildirPath(name) != filepath.Join(s.root, domain, box) {
			return true // not a name this store writes (e.g. no domain): listed at first use
		}
		if _, _, err := s.Usage(name); err != nil {
			s.log.Warn("maildir: listing a mailbox's usage", "mailbox", name, "err", err)
		}
		return true
	})
}

// Close waits for the pending commits. Deliver fails with ErrClosed
// afterwards.
func (s *Store) Close() error {
	s.closeMu.Lock()
	first := !s.closed
	if first {
		s.closed = true
	}
	s.closeMu.Unlock()
	s.stop.Store(true)
	s.inflight.Wait()
	<-s.warmed
	if !first {
		return nil
	}
	s.fsMu.Lock()
	defer s.fsMu.Unlock()
	err := s.lock.Close()
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

// eachMaildir calls fn with the folder names of every mailbox, domain by
// domain, until fn returns false.
func (s *Store) eachMaildir(fn func(domain, box string) bool) {
	domains, err := os.ReadDir(s.root)
	if err != nil {
		s.log.Warn("maildir: listing mail root", "err", err)
		return
	}
	for _, d := range domains {
		if !d.IsDir() {
			continue
		}
		boxes, err := os.ReadDir(filepath.Join(s.root, d.Name()))
		if err != nil {
			s.log.Warn("maildir: listing domain", "domain", d.Name(), "err", err)
			continue
		}
		for _, b := range boxes {
			if b.IsDir() && !fn(d.Name(), b.Name()) {
				return
			}
		}
	}
}

// unescapeName undoes escapeName.
func unescapeName(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// uniqueName returns a new Maildir file name for a file of size bytes.
func (s *Store) uniqueName(size int64) string {
	var b [128]byte
	return string(s.appendUniqueName(b[:0], size))
}

// appendUniqueName appends a new Maildir file name to b:
// seconds.M<microseconds>P<pid>Q<counter>.host,S=<size>.
func (s *Store) appendUniqueName(b []byte, size int64) []byte {
	now := s.now()
	b = strconv.AppendInt(b, now.Unix(), 10)
	b = append(b, ".M"...)
	b = strconv.AppendInt(b, int64(now.Nanosecond()/1000), 10)
	b = append(b, 'P')
	b = strconv.AppendInt(b, int64(s.pid), 10)
	b = append(b, 'Q')
	b = strconv.AppendUint(b, counter.Add(1), 10)
	b = append(b, '.')
	b = append(b, s.hostname...)
	b = append(b, ",S="...)
	return strconv.AppendInt(b, size, 10)
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

// commit is one delivery waiting for a group commit. Commits are reused
// (commits), with their files and channel: the group commit is done with
// one once it has sent the outcome.
type commit struct {
	files []file
	// err receives the outcome once, and before it errLead when the
	// delivery is to lead the next group commit (commit.go).
	err chan error
}

var commits = sync.Pool{New: func() any { return &commit{err: make(chan error, 1)} }}

// writeBufs hold a message on its way into a file: the prefix and the
// message go to disk in one write(2) when they fit (64 KiB).
var writeBufs = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// Deliver writes msg into the Maildir of every recipient, each copy after
// its own Prefix (a mailbox listed twice gets two copies: the caller
// deduplicates), and returns when every file and directory entry is on
// disk. If any recipient's quota does not allow the message (*QuotaError),
// or anything fails, nothing is delivered to anyone. ctx is honoured until
// the files are handed to the group commit; after that Deliver waits for the
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
	c := commits.Get().(*commit)
	defer func() {
		if err != nil {
			// Files the group commit renamed were removed and accounted by it.
			for i := range c.files {
				f := &c.files[i]
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
		}
		clear(c.files)
		c.files = c.files[:0]
		commits.Put(c)
	}()
	for _, r := range rcpts {
		size := int64(len(r.Prefix)) + msg.Size
		mb := s.mailbox(r.Mailbox)
		if err := mb.reserve(s, size, r.Quota); err != nil {
			return err
		}
		c.files = append(c.files, file{mb: mb, size: size})
	}

	// Write every copy in tmp/ (and fsync it in FsyncEach mode).
	for i := range c.files {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.writeTmp(&c.files[i], msg, rcpts[i]); err != nil {
			return err
		}
	}

	// Hand the files to the group commit and wait for the outcome. The
	// commit removes whatever it renamed if the commit fails, and
	// accounts the bytes of what it commits.
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return ErrClosed
	}
	s.inflight.Add(1)
	s.closeMu.RUnlock()
	defer s.inflight.Done()
	return s.commit(c)
}

// writeTmp writes the recipient's prefix and the message to a new file in
// the tmp/ folder of f's mailbox (or of its folder r.Folder), and fsyncs it
// in FsyncEach mode. In syncfs mode the file's name ends in ",C=" and the
// CRC-32C of its content, so that Open can tell a complete file left in
// tmp/ by a crash from a torn one (recover.go). The file is written through
// its bare descriptor: one open(2), one write(2) for a message up to 64 KiB
// with its prefix, one close(2), without the fcntl(2) and epoll_ctl(2)
// calls an *os.File costs.
func (s *Store) writeTmp(f *file, msg Message, r Recipient) (err error) {
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
	bp := writeBufs.Get().(*[]byte)
	defer writeBufs.Put(bp)
	buf, off, err := fill(append((*bp)[:0], r.Prefix...), msg, 0)
	if err != nil {
		return err
	}
	var b [1024]byte // both paths, on the stack
	tmp := s.appendUniqueName(append(append(b[:0], dir...), "/tmp/"...), f.size)
	if !s.fsyncEach {
		sum, err := checksum(buf, msg, off)
		if err != nil {
			return err
		}
		tmp = appendChecksum(tmp, sum)
	}
	name := tmp[len(dir)+len("/tmp/"):]
	// Both paths in one allocation: dir/tmp/name then dir/new/name.
	both := string(append(append(append(tmp, dir...), "/new/"...), name...))
	tmpPath := both[:len(tmp)]
	fd, err := unix.Open(tmpPath, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, filePerm)
	if err != nil {
		return fmt.Errorf("maildir: creating %s: %w", tmpPath[len(tmpPath)-len(name):], &os.PathError{Op: "open", Path: tmpPath, Err: err})
	}
	f.tmpPath, f.newPath = tmpPath, both[len(tmp):]
	defer func() {
		if cerr := unix.Close(fd); cerr != nil && err == nil {
			err = fmt.Errorf("maildir: closing %s: %w", f.tmpPath, cerr)
		}
	}()
	for {
		if err := writeFull(fd, buf); err != nil {
			return fmt.Errorf("maildir: writing %s: %w", f.tmpPath, err)
		}
		if off == msg.Size {
			break
		}
		if buf, off, err = fill(buf[:0], msg, off); err != nil {
			return err
		}
	}
	// The data must be on disk before the rename can make it visible.
	if !s.fsyncEach {
		return nil // the group commit's syncfs covers it
	}
	if err := unix.Fsync(fd); err != nil {
		return fmt.Errorf("maildir: syncing %s: %w", f.tmpPath, err)
	}
	return nil
}

// fill appends the message from off to buf, as much as fits in its
// capacity, and returns buf and the offset after what it read.
func fill(buf []byte, msg Message, off int64) ([]byte, int64, error) {
	n := min(int64(cap(buf)-len(buf)), msg.Size-off)
	if n <= 0 {
		return buf, off, nil
	}
	m, err := msg.R.ReadAt(buf[len(buf):len(buf)+int(n)], off)
	if int64(m) < n {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return buf, off, fmt.Errorf("maildir: message is %d bytes, expected %d: %w", off+int64(m), msg.Size, err)
	}
	return buf[:len(buf)+m], off + int64(m), nil
}

// checksum returns the CRC-32C of head followed by the message from off:
// the content of a file whose first bytes, head, are already read. A
// message larger than the write buffer is read twice.
func checksum(head []byte, msg Message, off int64) (uint32, error) {
	sum := crc32.Update(0, castagnoli, head)
	if off == msg.Size {
		return sum, nil
	}
	bp := writeBufs.Get().(*[]byte)
	defer writeBufs.Put(bp)
	for off < msg.Size {
		var chunk []byte
		var err error
		if chunk, off, err = fill((*bp)[:0], msg, off); err != nil {
			return 0, err
		}
		sum = crc32.Update(sum, castagnoli, chunk)
	}
	return sum, nil
}

// writeFull writes all of p to fd.
func writeFull(fd int, p []byte) error {
	for len(p) > 0 {
		n, err := unix.Write(fd, p)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		p = p[n:]
	}
	return nil
}
