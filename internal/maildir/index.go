package maildir

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The UID index of a folder lives in <folder>/agua-uidlist, modelled on
// Dovecot's dovecot-uidlist:
//
//	agua-uidlist 1 V<uidvalidity> N<next uid>
//	<uid> <key>
//	...
//
// one line per message in ascending UID order, the key being the file name
// without its ":2,<flags>" info. It is replaced atomically (write to
// agua-uidlist.tmp, fsync, rename, fsync the folder) under the index lock
// and an exclusive flock(2) of agua-uidlist.lock, which other processes on
// the same Maildir take too (the server and `agua import` at once): before
// writing, a process whose copy is older than the file on disk reads it
// again and lists the folder anew, so no two processes hand out the same
// UID (Dovecot's dovecot-uidlist.lock plays this part). A missing or unreadable
// file gives every message a new UID under a new, larger UIDVALIDITY, so a
// client never sees a UID reused for another message.
const (
	uidlistName    = "agua-uidlist"
	uidlistLock    = "agua-uidlist.lock"
	uidlistMagic   = "agua-uidlist 1"
	maxUID         = 1<<32 - 1
	uidlistPerm    = 0o600
	subNew, subCur = 0, 1
)

// racyWindow: a folder whose modification time is this close to the moment
// we listed it may change again within the same time-stamp tick without its
// time changing (file times use a coarse clock), so it is listed again next
// time (git's "racily clean" rule).
const racyWindow = 2 * time.Second

var subs = [2]string{subNew: "new", subCur: "cur"}

// index is the in-memory UID index of one folder, shared by its Folders.
type index struct {
	dir  string
	log  *slog.Logger
	refs int // guarded by folderTable.mu

	mu       sync.Mutex
	locked   bool // the maildrop lock
	loaded   bool
	validity uint32
	next     uint32
	entries  []*entry // ascending UID
	keys     map[string]*entry
	stamps   [2]dirStamp // of new/ and cur/ when last listed
	dirty    bool        // the file on disk differs from entries
	disk     fileStamp   // of the uidlist this index was read from or wrote
}

// fileStamp identifies one version of the uidlist file: every write
// replaces it by a new file (a new inode).
type fileStamp struct {
	exists bool
	ino    uint64
	size   int64
	mtime  int64
}

func statFile(path string) fileStamp {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return fileStamp{}
	}
	return fileStamp{exists: true, ino: st.Ino, size: st.Size, mtime: st.Mtim.Nano()}
}

// changedOnDisk says whether another process replaced the uidlist since
// this index read or wrote it.
func (ix *index) changedOnDisk() bool {
	return statFile(filepath.Join(ix.dir, uidlistName)) != ix.disk
}

// entry is one message.
type entry struct {
	uid  uint32
	key  string // name without ":2,<flags>"
	name string // current file name
	sub  string // "new" or "cur"; "" until found on disk
	size int64
}

func (e *entry) flags() string {
	_, info, ok := strings.Cut(e.name, ":2,")
	if !ok {
		return ""
	}
	return info
}

func (e *entry) info() MessageInfo {
	return MessageInfo{UID: e.uid, Key: e.key, Size: e.size, Flags: e.flags(), New: e.sub == "new"}
}

// dirStamp identifies a version of a folder's listing. ok is false when
// the folder must be listed again whatever its time says.
type dirStamp struct {
	ok    bool
	mtime int64
	ino   uint64
}

// keyOf strips the Maildir info (":2,FLAGS", or any ":" suffix).
func keyOf(name string) string {
	key, _, _ := strings.Cut(name, ":")
	return key
}

func (ix *index) byUID(uid uint32) *entry {
	i, ok := slices.BinarySearchFunc(ix.entries, uid, func(e *entry, uid uint32) int {
		switch {
		case e.uid < uid:
			return -1
		case e.uid > uid:
			return 1
		}
		return 0
	})
	if !ok {
		return nil
	}
	return ix.entries[i]
}

func (ix *index) pathOf(e *entry) string { return filepath.Join(ix.dir, e.sub, e.name) }

// forceRescan makes the next sync list both folders again.
func (ix *index) forceRescan() { ix.stamps = [2]dirStamp{} }

type found struct{ name, sub string }

// sync brings the index up to date with the folder. ix.mu is held.
func (ix *index) sync(now time.Time) error {
	if !ix.loaded {
		ix.load(now)
	}
	listed, err := ix.scan(now)
	if err != nil {
		return err
	}
	if listed && ix.changedOnDisk() {
		// Another process wrote the index: its UIDs are the truth.
		ix.load(now)
		if _, err := ix.scan(now); err != nil {
			return err
		}
	}
	if !ix.dirty {
		return nil
	}
	return ix.commit(now)
}

// commit writes the index under the folder's lock file, after reading it
// again if another process replaced it meanwhile (the UIDs this process
// assigned since are not handed out yet, so they are simply assigned
// anew on the current file).
func (ix *index) commit(now time.Time) error {
	fd, err := ix.lockFile()
	if err != nil {
		return err
	}
	defer fd.Close() // releases the flock
	if ix.changedOnDisk() {
		ix.load(now)
		if _, err := ix.scan(now); err != nil {
			return err
		}
		if !ix.dirty {
			return nil
		}
	}
	return ix.write()
}

// lockFile takes the exclusive flock of the uidlist's lock file, which
// closing the file releases.
func (ix *index) lockFile() (*os.File, error) {
	fd, err := os.OpenFile(filepath.Join(ix.dir, uidlistLock), os.O_RDWR|os.O_CREATE, uidlistPerm)
	if err != nil {
		return nil, fmt.Errorf("maildir: UID index lock: %w", err)
	}
	if err := unix.Flock(int(fd.Fd()), unix.LOCK_EX); err != nil {
		fd.Close()
		return nil, fmt.Errorf("maildir: UID index lock: %w", err)
	}
	return fd, nil
}

// update brings the index up to date under the uidlist's lock file, lets
// change edit it, and writes it durably before releasing the lock, so no
// other process can slip its own UIDs in between. ix.mu is held. When
// change fails, what the listing changed is still written.
func (ix *index) update(now time.Time, change func() error) error {
	fd, err := ix.lockFile()
	if err != nil {
		return err
	}
	defer fd.Close()
	if !ix.loaded || ix.changedOnDisk() {
		ix.load(now)
	}
	ix.forceRescan()
	if _, err := ix.scan(now); err != nil {
		return err
	}
	cerr := change()
	if cerr == nil {
		ix.dirty = true
	}
	if ix.dirty {
		if err := ix.write(); err != nil {
			return err
		}
	}
	return cerr
}

// scan lists new/ and cur/ where they changed and reconciles the entries
// with them; it says whether anything was listed.
func (ix *index) scan(now time.Time) (bool, error) {
	var seen map[string]found
	var listed [2]bool
	for i, sub := range subs {
		dir := filepath.Join(ix.dir, sub)
		var st unix.Stat_t
		if err := unix.Stat(dir, &st); err != nil {
			return false, fmt.Errorf("maildir: stat %s: %w", dir, err)
		}
		stamp := dirStamp{mtime: st.Mtim.Nano(), ino: st.Ino}
		if old := ix.stamps[i]; old.ok && old.mtime == stamp.mtime && old.ino == stamp.ino {
			continue
		}
		names, err := readNames(dir)
		if err != nil {
			return false, err
		}
		stamp.ok = now.Sub(time.Unix(0, stamp.mtime)) > racyWindow
		ix.stamps[i] = stamp
		listed[i] = true
		if seen == nil {
			seen = make(map[string]found, len(names)+len(ix.entries))
		}
		for _, n := range names {
			k := keyOf(n)
			// A file caught in both folders mid-move: cur/ wins.
			if _, dup := seen[k]; dup && sub == "new" {
				continue
			}
			seen[k] = found{n, sub}
		}
	}
	if seen == nil {
		return false, nil
	}
	ix.reconcile(seen, listed, now)
	return true, nil
}

// reconcile applies the listed names to the entries and gives new messages
// UIDs, in name order (names start with the delivery time).
func (ix *index) reconcile(seen map[string]found, listed [2]bool, now time.Time) {
	kept := ix.entries[:0]
	for _, e := range ix.entries {
		if f, ok := seen[e.key]; ok {
			delete(seen, e.key)
			if e.size < 0 || e.name != f.name {
				e.name, e.sub = f.name, f.sub
				if !e.setSize(ix.dir) {
					delete(ix.keys, e.key)
					ix.dirty = true
					continue
				}
			}
			e.sub = f.sub
			kept = append(kept, e)
			continue
		}
		if e.sub == "" || e.sub == "new" && listed[subNew] || e.sub == "cur" && listed[subCur] {
			delete(ix.keys, e.key) // removed by someone
			ix.dirty = true
			continue
		}
		kept = append(kept, e)
	}
	clear(ix.entries[len(kept):])
	ix.entries = kept
	if len(seen) == 0 {
		return
	}
	added := make([]*entry, 0, len(seen))
	for k, f := range seen {
		e := &entry{key: k, name: f.name, sub: f.sub}
		if e.setSize(ix.dir) {
			added = append(added, e)
		}
	}
	// Delivery order: names start with the time ("<seconds>.M<micro>P...").
	slices.SortFunc(added, func(a, b *entry) int { return naturalCompare(a.key, b.key) })
	if uint64(ix.next)+uint64(len(added)) > maxUID {
		// UIDs ran out: start over under a new UIDVALIDITY.
		ix.log.Warn("maildir: UIDs exhausted, renumbering folder", "folder", ix.dir)
		ix.validity = newValidity(now, ix.validity)
		ix.next = 1
		for _, e := range ix.entries {
			e.uid = ix.next
			ix.next++
		}
	}
	for _, e := range added {
		e.uid = ix.next
		ix.next++
		ix.entries = append(ix.entries, e)
		ix.keys[e.key] = e
	}
	ix.dirty = true
}

// naturalCompare orders names with runs of digits compared as numbers, so
// "1700000000.M99P1" comes before "1700000000.M123P1".
func naturalCompare(a, b string) int {
	for a != "" && b != "" {
		if isDigit(a[0]) && isDigit(b[0]) {
			na, ra := digitRun(a)
			nb, rb := digitRun(b)
			if c := len(na) - len(nb); c != 0 { // no leading zeros in Maildir names
				return c
			}
			if c := strings.Compare(na, nb); c != 0 {
				return c
			}
			a, b = ra, rb
			continue
		}
		if a[0] != b[0] {
			return int(a[0]) - int(b[0])
		}
		a, b = a[1:], b[1:]
	}
	return len(a) - len(b)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// digitRun splits s after its leading digits, without leading zeros.
func digitRun(s string) (digits, rest string) {
	i := 0
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	return strings.TrimLeft(s[:i], "0"), s[i:]
}

// setSize reads the size from the name's ",S=", or from stat for names
// without it; false if the file is gone or not a regular file.
func (e *entry) setSize(dir string) bool {
	if size, ok := sizeFromName(e.name); ok {
		e.size = size
		return true
	}
	info, err := os.Lstat(filepath.Join(dir, e.sub, e.name))
	if err != nil || !info.Mode().IsRegular() {
		return false
	}
	e.size = info.Size()
	return true
}

// readNames lists a folder without sorting or stat: names only.
func readNames(dir string) ([]string, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("maildir: listing %s: %w", dir, err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("maildir: listing %s: %w", dir, err)
	}
	out := names[:0]
	for _, n := range names {
		// Hidden files are not messages; a name with a line break could
		// not be written to the uidlist.
		if strings.HasPrefix(n, ".") || strings.ContainsAny(n, "\r\n") {
			continue
		}
		out = append(out, n)
	}
	return out, nil
}

// newValidity returns a UIDVALIDITY for a new index: the time, as Dovecot
// does, and always larger than the one it replaces.
func newValidity(now time.Time, old uint32) uint32 {
	v := uint32(now.Unix())
	if v <= old {
		v = old + 1
	}
	if v == 0 {
		v = 1
	}
	return v
}

// load reads the uidlist. Entries have no folder until the first listing
// finds their file. A missing or corrupt file starts a new index.
func (ix *index) load(now time.Time) {
	ix.loaded = true
	ix.keys = map[string]*entry{}
	ix.entries = nil
	ix.dirty = false
	ix.forceRescan()
	data, stamp, err := readStamped(filepath.Join(ix.dir, uidlistName))
	ix.disk = stamp
	if err == nil {
		var old uint32
		if old, err = ix.parse(data); err == nil {
			return
		}
		ix.log.Warn("maildir: UID index unreadable, assigning new UIDs", "folder", ix.dir, "err", err)
		ix.keys = map[string]*entry{}
		ix.entries = nil
		// The old UIDVALIDITY was the time the file was first written, so
		// no later than its modification time: go past both.
		if info, serr := os.Stat(filepath.Join(ix.dir, uidlistName)); serr == nil {
			old = max(old, uint32(info.ModTime().Unix()))
		}
		ix.validity = newValidity(now, old)
	} else {
		if !errors.Is(err, os.ErrNotExist) {
			ix.log.Warn("maildir: cannot read UID index, assigning new UIDs", "folder", ix.dir, "err", err)
		}
		ix.validity = newValidity(now, 0)
	}
	ix.next = 1
	ix.dirty = true
}

// readStamped reads a file and the stamp of the very version it read.
func readStamped(path string) ([]byte, fileStamp, error) {
	fd, err := os.Open(path)
	if err != nil {
		return nil, fileStamp{}, err
	}
	defer fd.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(fd.Fd()), &st); err != nil {
		return nil, fileStamp{}, err
	}
	data, err := io.ReadAll(fd)
	return data, fileStamp{exists: true, ino: st.Ino, size: st.Size, mtime: st.Mtim.Nano()}, err
}

// parse reads a uidlist into ix and returns its UIDVALIDITY, also when the
// rest is corrupt (so that the next one is larger).
func (ix *index) parse(data []byte) (uint32, error) {
	header, rest, ok := bytes.Cut(data, []byte("\n"))
	if !ok {
		return 0, errors.New("no header line")
	}
	f := strings.Fields(string(header))
	if len(f) != 4 || f[0]+" "+f[1] != uidlistMagic || !strings.HasPrefix(f[2], "V") || !strings.HasPrefix(f[3], "N") {
		return 0, fmt.Errorf("bad header %q", header)
	}
	v, err1 := strconv.ParseUint(f[2][1:], 10, 32)
	n, err2 := strconv.ParseUint(f[3][1:], 10, 32)
	if err1 != nil || err2 != nil || v == 0 || n == 0 {
		return 0, fmt.Errorf("bad header %q", header)
	}
	validity := uint32(v)
	var last uint32
	for len(rest) > 0 {
		var line []byte
		line, rest, ok = bytes.Cut(rest, []byte("\n"))
		if !ok {
			return validity, errors.New("truncated last line")
		}
		us, key, ok := strings.Cut(string(line), " ")
		u, err := strconv.ParseUint(us, 10, 32)
		if !ok || err != nil || key == "" || uint32(u) <= last || u >= n {
			return validity, fmt.Errorf("bad line %q", line)
		}
		if _, dup := ix.keys[key]; dup {
			return validity, fmt.Errorf("key %q listed twice", key)
		}
		last = uint32(u)
		e := &entry{uid: last, key: key, size: -1}
		ix.entries = append(ix.entries, e)
		ix.keys[key] = e
	}
	ix.validity, ix.next = validity, uint32(n)
	return validity, nil
}

// write replaces the uidlist atomically and durably.
func (ix *index) write() error {
	var b bytes.Buffer
	b.Grow(32 + len(ix.entries)*64)
	fmt.Fprintf(&b, "%s V%d N%d\n", uidlistMagic, ix.validity, ix.next)
	var num [10]byte
	for _, e := range ix.entries {
		b.Write(strconv.AppendUint(num[:0], uint64(e.uid), 10))
		b.WriteByte(' ')
		b.WriteString(e.key)
		b.WriteByte('\n')
	}
	path := filepath.Join(ix.dir, uidlistName)
	tmp := path + ".tmp"
	fd, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, uidlistPerm)
	if err != nil {
		return fmt.Errorf("maildir: writing UID index: %w", err)
	}
	_, err = fd.Write(b.Bytes())
	if err == nil {
		err = fd.Sync()
	}
	var st unix.Stat_t
	if err == nil {
		err = unix.Fstat(int(fd.Fd()), &st)
	}
	if cerr := fd.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("maildir: writing UID index: %w", err)
	}
	ix.disk = fileStamp{exists: true, ino: st.Ino, size: st.Size, mtime: st.Mtim.Nano()}
	if err := syncDir(ix.dir); err != nil {
		return err
	}
	ix.dirty = false
	return nil
}
