package atomicfile

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	if err := Write(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Write(p, []byte("two"), 0o640); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil || string(b) != "two" {
		t.Fatalf("read %q, %v; want two", b, err)
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v, %v; want 0640", fi.Mode().Perm(), err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("folder holds %d entries, want only the file (no temporary left)", len(ents))
	}
}

// A failed write leaves the old contents and no temporary file.
func TestWriteFailureKeepsOld(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "key")
	if err := Write(p, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A folder in the way of the rename: the rename fails.
	target := filepath.Join(dir, "sub")
	if err := os.MkdirAll(filepath.Join(target, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := Write(target, []byte("new"), 0o600); err == nil {
		t.Fatal("renaming over a non-empty folder succeeded")
	}
	if b, _ := os.ReadFile(p); string(b) != "old" {
		t.Fatalf("old file now %q", b)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Fatalf("folder holds %d entries, want the file and the folder (temporary removed)", len(ents))
	}
	if err := Write(filepath.Join(dir, "missing", "f"), []byte("x"), 0o600); err == nil {
		t.Fatal("write into a missing folder succeeded")
	}
}

// TestWriteSyncChunks writes more than one chunk, a chunk boundary and a
// remainder, into a new file and after existing content: every byte lands
// in order.
func TestWriteSyncChunks(t *testing.T) {
	for _, size := range []int{0, 1, chunk - 1, chunk, chunk + 1, 3*chunk + 12345} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(i*7 + i/chunk)
		}
		p := filepath.Join(t.TempDir(), "big")
		if err := Write(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("size %d: read %d bytes (%v), not what was written", size, len(got), err)
		}
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := WriteSync(f, data); err != nil {
			t.Fatal(err)
		}
		f.Close()
		got, _ = os.ReadFile(p)
		if !bytes.Equal(got, append(append([]byte(nil), data...), data...)) {
			t.Fatalf("size %d: appended file has %d bytes, not the data twice", size, len(got))
		}
	}
}

// TestWriterPieces writes a file in pieces of odd sizes across chunk
// boundaries: the old contents stay until Commit, every byte lands in
// order, Abort keeps the old file and leaves no temporary.
func TestWriterPieces(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	if err := Write(p, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	var want []byte
	w, err := Create(p, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; len(want) < 3*chunk; i++ {
		piece := bytes.Repeat([]byte{byte(i)}, 1+i*7919%(chunk/3))
		if n, err := w.Write(piece); err != nil || n != len(piece) {
			t.Fatalf("write %d: %d, %v", len(piece), n, err)
		}
		want = append(want, piece...)
		if i == 3 {
			if b, _ := os.ReadFile(p); string(b) != "old" {
				t.Fatalf("before Commit the file holds %d bytes, want the old contents", len(b))
			}
		}
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p); !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, wrote %d: not the same", len(got), len(want))
	}
	if err := w.Commit(); err == nil {
		t.Fatal("a second Commit succeeded")
	}

	w, err = Create(p, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(bytes.Repeat([]byte("x"), chunk+5))
	w.Abort()
	if got, _ := os.ReadFile(p); !bytes.Equal(got, want) {
		t.Fatal("Abort changed the file")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("folder holds %d entries after Abort, want only the file", len(ents))
	}
}
