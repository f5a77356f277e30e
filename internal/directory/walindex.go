package directory

import (
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// walIndex is a read-only view of the header of SQLite's WAL index (the
// database's "-shm" file), used to tell in a few nanoseconds, without a
// statement, that nothing has been committed since a moment.
//
// Every commit in WAL mode rewrites the WAL-index header with a higher
// iChange counter (https://www.sqlite.org/walformat.html, 2.2.1: "iChange:
// unsigned integer counter, incremented with each transaction"), writing
// the second copy of the header, then the first. An unchanged header
// therefore means no commit; when the two copies differ a write is under
// way. header only ever answers ok when its copy is consistent, and the
// caller treats any difference (or no header at all) as "maybe changed" and
// asks SQLite itself (PRAGMA data_version), so a misreading can cost a
// statement, never a stale answer.
//
// The file stays in place and keeps its size while the directory's own
// connection has the database open (SQLite truncates or removes it only
// with every connection gone), which the snapshot connection guarantees.
type walIndex struct {
	mem []byte
}

// walHeaderSize is one copy of the WAL-index header.
const walHeaderSize = 48

type walHeader [walHeaderSize / 4]uint32

// openWALIndex maps the header of dbPath's WAL index, or returns nil when
// there is none to map (not in WAL mode, not yet initialised).
func openWALIndex(dbPath string) *walIndex {
	f, err := os.Open(dbPath + "-shm")
	if err != nil {
		return nil
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() < 2*walHeaderSize {
		return nil
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, 2*walHeaderSize, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil
	}
	return &walIndex{mem: mem}
}

// header returns the current header; ok is false when the two copies
// differ or the index is not initialised.
func (w *walIndex) header() (h walHeader, ok bool) {
	if w == nil {
		return walHeader{}, false
	}
	for i := range h {
		h[i] = atomic.LoadUint32((*uint32)(unsafe.Pointer(&w.mem[4*i])))
	}
	for i := range h {
		if atomic.LoadUint32((*uint32)(unsafe.Pointer(&w.mem[walHeaderSize+4*i]))) != h[i] {
			return walHeader{}, false
		}
	}
	// isInit is the first byte of the fourth word (after iVersion,
	// unused, iChange): set once the header has been written.
	isInit := (*[walHeaderSize]byte)(unsafe.Pointer(&h))[12]
	return h, isInit != 0
}

func (w *walIndex) Close() {
	if w != nil {
		unix.Munmap(w.mem)
	}
}
