package maildir

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// A syncfs-mode delivery is acknowledged once its file is on disk in tmp/
// and renamed into new/, before the rename itself is on disk (commit.go,
// step). A crash can therefore leave an acknowledged message in tmp/. Its
// name tells Open that it is complete: ",C=" and the CRC-32C of the content
// that was written, after ",S=" and its size. Open moves every such file
// whose size and checksum match into new/, and removes those that do not:
// torn files of deliveries that were never acknowledged, since a delivery
// is acknowledged only after a syncfs that began once its file was
// written. A complete file whose 250 never reached the sender is delivered
// too: the sender retries, and the recipient may see that message twice,
// the failure mode RFC 5321 6.1 accepts over losing it.

// castagnoli is the CRC-32C table (hardware-accelerated on amd64 and arm64).
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// lockName is the file in the store's root whose flock(2) tells Open
// whether another Store has this root open. Domain folders never start
// with a dot (escapeName), so it cannot collide with one.
const lockName = ".agua-store.lock"

// appendChecksum appends the ",C=" field with sum to a file name.
func appendChecksum(b []byte, sum uint32) []byte {
	b = append(b, ",C="...)
	const hex = "0123456789abcdef"
	for shift := 28; shift >= 0; shift -= 4 {
		b = append(b, hex[sum>>shift&0xf])
	}
	return b
}

// sealedName reads the ",S=" size and the ",C=" checksum of a file name
// written by a syncfs-mode delivery; ok is false for other names.
func sealedName(name string) (size int64, sum uint32, ok bool) {
	base, _, _ := strings.Cut(name, ":")
	i := strings.Index(base, ",C=")
	if i < 0 || len(base) < i+3+8 || (len(base) > i+3+8 && base[i+3+8] != ',') {
		return 0, 0, false
	}
	v, err := strconv.ParseUint(base[i+3:i+3+8], 16, 32)
	if err != nil {
		return 0, 0, false
	}
	size, ok = sizeFromName(name)
	return size, uint32(v), ok
}

// lockStore takes a shared flock of the root's lock file for the Store's
// life. When no other Store holds it, the lock is taken exclusively first
// and exclusive reports true: no delivery of another process can be in
// progress, so the leftovers in tmp/ are a crash's and may be recovered.
func lockStore(root string) (lock *os.File, exclusive bool, err error) {
	lock, err = os.OpenFile(filepath.Join(root, lockName), os.O_RDWR|os.O_CREATE, filePerm)
	if err != nil {
		return nil, false, fmt.Errorf("maildir: opening lock: %w", err)
	}
	fd := int(lock.Fd())
	err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
	if err == nil {
		return lock, true, nil
	}
	if errors.Is(err, unix.ENOLCK) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) {
		// A file system without flock (some network file systems): no
		// Store can tell whether another has the root open, so none
		// recovers; the leftovers stay in tmp/ (Open logs them).
		return lock, false, nil
	}
	if !errors.Is(err, unix.EWOULDBLOCK) {
		lock.Close()
		return nil, false, fmt.Errorf("maildir: locking %s: %w", lock.Name(), err)
	}
	// Another Store has the root open (or is recovering: wait for it).
	if err := unix.Flock(fd, unix.LOCK_SH); err != nil {
		lock.Close()
		return nil, false, fmt.Errorf("maildir: locking %s: %w", lock.Name(), err)
	}
	return lock, false, nil
}

// leftover is a complete file found in tmp/ by sweepTmp.
type leftover struct {
	tmp, new string
	fs       *os.File
}

// sweepTmp goes through the tmp/ folder of every mailbox and Maildir++
// folder: when recover is set (the Store holds the root exclusively), a
// sealed file (sealedName) is moved into new/ when complete and removed
// when torn, and otherwise left alone whatever its age; any other file is
// removed when older than tmpMaxAge, as the Maildir specification advises.
func (s *Store) sweepTmp(recover bool) {
	cutoff := s.now().Add(-tmpMaxAge)
	var found []leftover
	s.eachMaildir(func(domain, box string) bool {
		for _, dir := range withFolders(filepath.Join(s.root, domain, box)) {
			found = s.sweepTmpDir(dir, cutoff, recover, found)
		}
		return true
	})
	if len(found) > 0 {
		s.recoverLeftovers(found)
	}
}

// sweepTmpDir sweeps dir/tmp (see sweepTmp) and returns found with the
// complete files it holds appended.
func (s *Store) sweepTmpDir(dir string, cutoff time.Time, recover bool, found []leftover) []leftover {
	tmp := filepath.Join(dir, "tmp")
	entries, err := os.ReadDir(tmp)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("maildir: listing tmp for cleanup", "dir", tmp, "err", err)
		}
		return found
	}
	for _, e := range entries {
		path := filepath.Join(tmp, e.Name())
		size, sum, sealed := sealedName(e.Name())
		if sealed && !recover {
			// Possibly an acknowledged message: never removed for its age.
			s.log.Info("maildir: a file in tmp/ that a crash may have left, not recovered: another Store has the folder open", "file", path)
			continue
		}
		if sealed && e.Type().IsRegular() {
			complete, dev, err := checkSealed(path, size, sum)
			switch {
			case err != nil:
				s.log.Warn("maildir: checking a file left in tmp/", "file", path, "err", err)
			case complete:
				fs, err := s.fsFor(dev, dir)
				if err != nil {
					s.log.Warn("maildir: recovering a file left in tmp/", "file", path, "err", err)
					continue
				}
				found = append(found, leftover{tmp: path, new: filepath.Join(dir, "new", e.Name()), fs: fs})
			default:
				// Torn by a crash before its syncfs: never acknowledged.
				if err := os.Remove(path); err != nil {
					s.log.Warn("maildir: removing a torn file from tmp/", "file", path, "err", err)
				} else {
					s.log.Info("maildir: removed a torn file of an unacknowledged delivery", "file", path)
				}
			}
			continue
		}
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() || !info.ModTime().Before(cutoff) {
			continue
		}
		if err := os.Remove(path); err != nil {
			s.log.Warn("maildir: removing stale tmp file", "file", path, "err", err)
		} else {
			s.log.Info("maildir: removed stale tmp file", "file", path)
		}
	}
	return found
}

// checkSealed reports whether the file at path holds size bytes with the
// CRC-32C sum, and the device it is on.
func checkSealed(path string, size int64, sum uint32) (complete bool, dev uint64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return false, 0, err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return false, 0, err
	}
	if st.Size != size {
		return false, uint64(st.Dev), nil
	}
	h := crc32.New(castagnoli)
	n, err := io.Copy(h, io.LimitReader(f, size+1))
	if err != nil {
		return false, 0, err
	}
	return n == size && h.Sum32() == sum, uint64(st.Dev), nil
}

// recoverLeftovers moves complete files left in tmp/ into new/. Their
// content was read back from the page cache, which a kill -9 without a
// reboot leaves unflushed: one syncfs puts it on disk before any name in
// new/ can point to it, and a second makes the renames durable. A failed
// syncfs leaves the files in tmp/ for the next start.
func (s *Store) recoverLeftovers(found []leftover) {
	var fss []*os.File
	for _, l := range found {
		if !slices.Contains(fss, l.fs) {
			fss = append(fss, l.fs)
		}
	}
	if err := syncfs(fss); err != nil {
		s.log.Error("maildir: cannot flush files left in tmp/; they stay there until the next start", "files", len(found), "err", err)
		return
	}
	moved := 0
	for _, l := range found {
		if err := renameNoReplace(l.tmp, l.new); err != nil {
			s.log.Error("maildir: cannot move a complete file left in tmp/ into new/", "file", l.tmp, "err", err)
			continue
		}
		moved++
	}
	if err := syncfs(fss); err != nil {
		s.log.Error("maildir: flushing recovered files", "err", err)
	}
	s.log.Info("maildir: moved complete files left in tmp/ by a crash into new/", "files", moved)
}
