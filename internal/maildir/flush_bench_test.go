package maildir

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkFlushPrimitives measures what one durable 2 KiB write costs on
// the file system of the test's temporary folder (TMPDIR), one at a time
// as a lone sender's deliveries are: the floor under BenchmarkDeliverSerial
// and under agua's 1-session rate in compare/durable.sh (issue 15). The
// sub-benchmarks:
//
//   - maildir: what a lone delivery does in syncfs mode (create in tmp/,
//     write, syncfs, rename into new/);
//   - fsync: create, write, fsync of the file;
//   - log-append: append to one open file, fdatasync (the file grows, so
//     its size is journaled too);
//   - log-prealloc: overwrite a preallocated, already synced file in
//     place, fdatasync (only the data block and the disk's cache flush):
//     what a write-ahead log would pay per message.
//
// Run:
//
//	go test -run '^$' -bench FlushPrimitives -benchtime 1000x ./internal/maildir/
func BenchmarkFlushPrimitives(b *testing.B) {
	msg := make([]byte, 2048)
	for i := range msg {
		msg[i] = 'a' + byte(i%26)
	}
	mk := func(b *testing.B) string {
		dir := b.TempDir()
		for _, d := range []string{"tmp", "new"} {
			if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
				b.Fatal(err)
			}
		}
		return dir
	}
	check := func(b *testing.B, err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	b.Run("maildir", func(b *testing.B) {
		dir := mk(b)
		i := 0
		for b.Loop() {
			i++
			tmp := filepath.Join(dir, "tmp", fmt.Sprint(i))
			f, err := os.Create(tmp)
			check(b, err)
			_, err = f.Write(msg)
			check(b, err)
			check(b, unix.Syncfs(int(f.Fd())))
			check(b, f.Close())
			check(b, os.Rename(tmp, filepath.Join(dir, "new", fmt.Sprint(i))))
		}
	})
	b.Run("fsync", func(b *testing.B) {
		dir := mk(b)
		i := 0
		for b.Loop() {
			i++
			f, err := os.Create(filepath.Join(dir, "tmp", fmt.Sprint(i)))
			check(b, err)
			_, err = f.Write(msg)
			check(b, err)
			check(b, f.Sync())
			check(b, f.Close())
		}
	})
	b.Run("log-append", func(b *testing.B) {
		f, err := os.Create(filepath.Join(mk(b), "log"))
		check(b, err)
		defer f.Close()
		for b.Loop() {
			_, err := f.Write(msg)
			check(b, err)
			check(b, unix.Fdatasync(int(f.Fd())))
		}
	})
	b.Run("log-prealloc", func(b *testing.B) {
		f, err := os.Create(filepath.Join(mk(b), "log"))
		check(b, err)
		defer f.Close()
		const slots = 4096
		check(b, f.Truncate(0))
		_, err = f.Write(make([]byte, slots*4096)) // written, not a hole: no allocation later
		check(b, err)
		check(b, f.Sync())
		i := 0
		for b.Loop() {
			_, err := f.WriteAt(msg, int64(i%slots)*4096)
			check(b, err)
			check(b, unix.Fdatasync(int(f.Fd())))
			i++
		}
	})
}
