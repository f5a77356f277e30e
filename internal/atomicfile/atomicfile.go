// Package atomicfile replaces a file's contents so that a crash or a power
// loss leaves either the old file or the new one, never a torn or empty
// one: the data go to a temporary file in the same folder, which is synced,
// renamed over the target, and the folder synced so the rename itself is
// durable (rename(2) is atomic within one file system; the folder's fsync
// makes the new directory entry survive power loss).
//
// State files use it: the self-signed TLS pair, the SRS secret, the sending
// limits' state, the MTA-STS policy cache, import resume state, greylisting,
// and the shield's bans, known-good addresses, reputation and history.
//
// Large files are written and synced a chunk at a time (WriteSync): mail
// delivery acknowledges a message only after syncfs(2) or fsync(2), and on
// ext4 either one waits for whatever else is dirty on the file system. A
// 13 MB shield state written at once and synced at the end made every
// delivery of that moment wait for all of it (legitimate clients' p99 went
// from 12 ms to 650 ms in the second of the shield's minutely save); synced
// a MiB at a time, a delivery waits for at most one chunk.
package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
)

// Write replaces path with data, created with mode (before the umask is
// applied to nothing: the mode is set explicitly). The folder must exist.
func Write(path string, data []byte, mode os.FileMode) error {
	w, err := Create(path, mode)
	if err != nil {
		return err
	}
	w.Write(data) // an error is kept and returned by Commit
	return w.Commit()
}

// Writer builds a replacement of a file as it is written, for contents too
// big to build in memory first: it holds at most one chunk, writes and
// syncs a chunk at a time (as WriteSync does), and Commit puts the file in
// place. Until Commit the old file is untouched; Abort (or a failed Write
// and Commit) leaves it so and removes the temporary file.
type Writer struct {
	f    *os.File
	path string
	buf  []byte
	err  error
	done bool
}

// Create starts the replacement of path (mode as for Write). The folder
// must exist.
func Create(path string, mode os.FileMode) (*Writer, error) {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return nil, err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	return &Writer{f: f, path: path}, nil
}

// Write buffers p, writing and syncing each full chunk. After the first
// error every Write returns it, and so does Commit.
func (w *Writer) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 && w.err == nil {
		if w.buf == nil {
			w.buf = make([]byte, 0, chunk)
		}
		k := min(len(p), chunk-len(w.buf))
		w.buf = append(w.buf, p[:k]...)
		p = p[k:]
		if len(w.buf) == chunk {
			w.err = WriteSync(w.f, w.buf)
			w.buf = w.buf[:0]
		}
	}
	if w.err != nil {
		return 0, w.err
	}
	return n, nil
}

// Commit writes and syncs what is buffered, renames the file over the
// target and syncs the folder. On error the target keeps its old contents.
func (w *Writer) Commit() error {
	if w.done {
		return errors.New("atomicfile: " + w.path + " already committed or aborted")
	}
	w.done = true
	defer os.Remove(w.f.Name()) // after a successful rename: no such file, ignored
	err := w.err
	if err == nil {
		err = WriteSync(w.f, w.buf)
	}
	w.buf = nil
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(w.f.Name(), w.path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(w.path))
}

// Abort drops the replacement; the target keeps its old contents. It does
// nothing after Commit.
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.buf = nil
	w.f.Close()
	os.Remove(w.f.Name())
}

// chunk is how much WriteSync writes before it syncs.
const chunk = 1 << 20

// WriteSync writes data at f's offset and makes it durable, a chunk (1 MiB)
// at a time: each chunk is written and synced before the next, so that the
// file never holds more than one chunk of unsynced data (see the package
// comment). It returns after the last chunk is synced; empty data is synced
// too.
func WriteSync(f *os.File, data []byte) error {
	for {
		n := min(len(data), chunk)
		if _, err := f.Write(data[:n]); err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return err
		}
		data = data[n:]
		if len(data) == 0 {
			return nil
		}
	}
}

// syncDir makes a rename in dir durable. File systems that cannot sync a
// folder (some return EINVAL) lose nothing by it being skipped, so only an
// open failure is reported.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	d.Sync()
	return d.Close()
}
