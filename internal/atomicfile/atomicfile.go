// Package atomicfile replaces a file's contents so that a crash or a power
// loss leaves either the old file or the new one, never a torn or empty
// one: the data go to a temporary file in the same folder, which is synced,
// renamed over the target, and the folder synced so the rename itself is
// durable (rename(2) is atomic within one file system; the folder's fsync
// makes the new directory entry survive power loss).
//
// Small state files use it: the self-signed TLS pair, the SRS secret, the
// sending limits' state, the MTA-STS policy cache, import resume state.
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
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
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
