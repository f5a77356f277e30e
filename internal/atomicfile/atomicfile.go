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
	"os"
	"path/filepath"
)

// Write replaces path with data, created with mode (before the umask is
// applied to nothing: the mode is set explicitly). The folder must exist.
func Write(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // after a successful rename: no such file, ignored
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := WriteSync(f, data); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
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
