// Package backup takes a consistent snapshot of a data folder while the
// server runs (`agua backup`) and puts one back into a stopped server's
// data folder (`agua restore`).
//
// What makes the snapshot consistent without stopping anything:
//   - the accounts database is copied by SQLite itself (VACUUM INTO, one
//     read transaction; see directory.BackupTo);
//   - Maildir messages are immutable files that only move (tmp/ to new/ on
//     delivery, new/ to cur/ when read, renamed within cur/ when flags
//     change) or disappear, so each is hard-linked (a copy when the backup
//     is on another file system) as found; new/ is listed before cur/, and
//     a file that moved meanwhile is looked up again, so a message
//     acknowledged before the backup started is in it, read or not;
//     tmp/ holds only unacknowledged deliveries and is left out;
//   - every other file (shield state, DKIM keys, the outbound queue,
//     certificates, UID lists) is copied, never linked: files written in
//     place (the shield history) must not change under the backup, and
//     files agua replaces atomically are read whole.
//
// The manifest (manifest.json) is written last, with counts; a folder
// without one is not a finished backup and restore refuses it.
package backup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/agua-mail/agua/internal/directory"
	"golang.org/x/sys/unix"
)

// Layout of a backup folder.
const (
	ManifestFile = "manifest.json"
	DatabaseFile = "agua.db"
	ConfigFile   = "config.toml"
	DataFolder   = "data"
	mailFolder   = "mail"
	format       = 1
)

// Errors that decide what the CLI says.
var (
	ErrRunning   = errors.New("the server is running")
	ErrNotEmpty  = errors.New("the target is not empty")
	ErrNotBackup = errors.New("not a finished backup (no manifest.json)")
)

// Manifest describes a backup.
type Manifest struct {
	Format   int              `json:"format"`
	Created  time.Time        `json:"created"`
	Version  string           `json:"agua_version"`
	DataDir  string           `json:"data_dir"` // where it was taken from
	Config   string           `json:"config,omitempty"`
	Accounts directory.Counts `json:"accounts"`
	Mail     MailCounts       `json:"mail"`
	Files    int              `json:"other_files"` // shield, DKIM, queue, TLS, ...
	Linked   int              `json:"hard_linked"`
	Copied   int              `json:"copied"`
}

// MailCounts counts the Maildirs of a backup.
type MailCounts struct {
	Folders  int   `json:"folders"`
	Messages int   `json:"messages"`
	Bytes    int64 `json:"bytes"`
}

// Options says what to back up.
type Options struct {
	DataDir    string
	Database   string                 // accounts database (may be outside DataDir)
	ConfigFile string                 // copied as config.toml; "" none
	Skip       func(path string) bool // files left out (the log files); nil: none
	Version    string
}

// Create writes a backup of o.DataDir into dest, which must not exist or be
// empty, and must not be inside the data folder. Its errors start "backup: ".
func Create(ctx context.Context, dest string, o Options) (Manifest, error) {
	m, err := create(ctx, dest, o)
	if err != nil {
		err = fmt.Errorf("backup: %w", err)
	}
	return m, err
}

func create(ctx context.Context, dest string, o Options) (Manifest, error) {
	m := Manifest{Format: format, Created: time.Now().UTC(), Version: o.Version, DataDir: o.DataDir}
	absData, err1 := filepath.Abs(o.DataDir)
	absDest, err2 := filepath.Abs(dest)
	if err := errors.Join(err1, err2); err != nil {
		return m, err
	}
	if isInside(absDest, absData) {
		return m, fmt.Errorf("backup folder %s is inside the data folder %s", dest, o.DataDir)
	}
	if err := emptyOrNew(dest); err != nil {
		return m, err
	}
	if err := os.MkdirAll(filepath.Join(dest, DataFolder), 0o750); err != nil {
		return m, err
	}
	c := &copier{link: true}
	// The database first: a user added after it is not in the backup, and
	// neither is mail for them (Maildirs are read after).
	var err error
	if m.Accounts, err = directory.BackupTo(ctx, o.Database, filepath.Join(dest, DatabaseFile)); err != nil {
		return m, err
	}
	if o.ConfigFile != "" {
		if err := c.copyFile(o.ConfigFile, filepath.Join(dest, ConfigFile)); err != nil {
			return m, fmt.Errorf("config file: %w", err)
		}
		m.Config = ConfigFile
	}
	db, _ := filepath.Abs(o.Database)
	skip := func(p string) bool {
		switch p {
		case db, db + "-wal", db + "-shm", db + "-journal":
			return true
		}
		return o.Skip != nil && o.Skip(p)
	}
	w := walker{c: c, skip: skip, m: &m, ctx: ctx}
	if err := w.tree(absData, filepath.Join(dest, DataFolder), ""); err != nil {
		return m, err
	}
	m.Linked, m.Copied = c.linked, c.copied
	if err := syncFS(dest); err != nil {
		return m, err
	}
	return m, writeManifest(dest, m)
}

// walker copies a data folder tree.
type walker struct {
	c    *copier
	skip func(string) bool
	m    *Manifest
	ctx  context.Context
}

// tree copies src into dst; rel is src's path inside the data folder.
func (w *walker) tree(src, dst, rel string) error {
	if err := w.ctx.Err(); err != nil {
		return err
	}
	ents, err := os.ReadDir(src)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // removed meanwhile (a queue entry delivered)
	}
	if err != nil {
		return err
	}
	if err := mkdirLike(dst, src); err != nil {
		return err
	}
	maildir := isMaildir(ents) && strings.HasPrefix(rel, mailFolder+string(filepath.Separator))
	if maildir {
		if err := w.messages(src, dst); err != nil {
			return err
		}
		w.m.Mail.Folders++
	}
	for _, e := range ents {
		name := e.Name()
		s, d, r := filepath.Join(src, name), filepath.Join(dst, name), filepath.Join(rel, name)
		switch {
		case w.skip(s):
		case rel == "" && name == "tmp": // the server's spool: unacknowledged mail
		case maildir && (name == "new" || name == "cur" || name == "tmp"):
		case e.IsDir():
			if err := w.tree(s, d, r); err != nil {
				return err
			}
		case e.Type().IsRegular():
			err := w.c.copyFile(s, d)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return err
			}
			w.m.Files++
		}
	}
	return nil
}

func isMaildir(ents []fs.DirEntry) bool {
	var cur, new bool
	for _, e := range ents {
		cur = cur || (e.IsDir() && e.Name() == "cur")
		new = new || (e.IsDir() && e.Name() == "new")
	}
	return cur && new
}

// messages links a Maildir's messages. A message only moves from new/ to
// cur/, so new/ is listed first; a file gone when it is linked (read,
// flagged or deleted meanwhile) is looked for again in a fresh listing of
// cur/, until a listing has nothing gone.
func (w *walker) messages(src, dst string) error {
	if err := os.MkdirAll(filepath.Join(dst, "tmp"), 0o750); err != nil {
		return err
	}
	done := map[string]bool{} // by unique part of the name (before ":2,")
	for _, sub := range []string{"new", "cur"} {
		if err := os.MkdirAll(filepath.Join(dst, sub), 0o750); err != nil {
			return err
		}
		for round := 0; round < 10; round++ {
			ents, err := os.ReadDir(filepath.Join(src, sub))
			if err != nil {
				return err
			}
			if testHookListed != nil {
				testHookListed(filepath.Join(src, sub))
			}
			vanished := false
			for _, e := range ents {
				base, _, _ := strings.Cut(e.Name(), ":")
				if done[base] || !e.Type().IsRegular() {
					continue
				}
				s := filepath.Join(src, sub, e.Name())
				size, err := w.c.place(s, filepath.Join(dst, sub, e.Name()))
				if errors.Is(err, fs.ErrNotExist) {
					vanished = true
					continue
				}
				if err != nil {
					return err
				}
				done[base] = true
				w.m.Mail.Messages++
				w.m.Mail.Bytes += size
			}
			if !vanished || sub == "new" {
				break
			}
		}
	}
	return nil
}

// testHookListed, when set by a test, runs after each listing of a
// Maildir's new/ or cur/: a reader moving mail at that moment.
var testHookListed func(dir string)

// copier links immutable files while it can and copies the rest.
type copier struct {
	link           bool
	linked, copied int
}

// place hard-links src to dst, or copies it when linking is not possible
// (another file system); it returns the size.
func (c *copier) place(src, dst string) (int64, error) {
	fi, err := os.Stat(src)
	if err != nil {
		return 0, err
	}
	if c.link {
		err := os.Link(src, dst)
		switch {
		case err == nil:
			c.linked++
			return fi.Size(), nil
		case errors.Is(err, fs.ErrNotExist):
			return 0, err
		case errors.Is(err, syscall.EXDEV), errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EMLINK), errors.Is(err, syscall.ENOTSUP):
			c.link = false // copies from now on
		default:
			return 0, err
		}
	}
	return fi.Size(), c.copyFile(src, dst)
}

// copyFile copies src to dst with its mode and modification time.
func (c *copier) copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fi.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	c.copied++
	return os.Chtimes(dst, fi.ModTime(), fi.ModTime())
}

// mkdirLike makes dst with the permissions of the folder src (the DKIM
// keys' folder is 0700 and stays so).
func mkdirLike(dst, src string) error {
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dst, 0o750); err != nil {
		return err
	}
	return os.Chmod(dst, fi.Mode().Perm())
}

func emptyOrNew(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(ents) > 0 {
		return fmt.Errorf("%w: %s", ErrNotEmpty, dir)
	}
	return nil
}

// syncFS makes everything written under dir durable: one syncfs(2) for the
// file system instead of an fsync per file.
func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}

func writeManifest(dest string, m Manifest) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dest, ManifestFile+".tmp")
	if err := os.WriteFile(tmp, append(data, '\n'), 0o640); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dest, ManifestFile)); err != nil {
		return err
	}
	return syncFS(dest)
}

// ReadManifest reads a finished backup's manifest.
func ReadManifest(dir string) (Manifest, error) {
	var m Manifest
	data, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if errors.Is(err, fs.ErrNotExist) {
		return m, fmt.Errorf("%w: %s", ErrNotBackup, dir)
	}
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return m, fmt.Errorf("%s: %w", filepath.Join(dir, ManifestFile), err)
	}
	if m.Format != format {
		return m, fmt.Errorf("%s: backup format %d, this agua reads %d", dir, m.Format, format)
	}
	return m, nil
}
