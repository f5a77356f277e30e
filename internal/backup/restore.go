package backup

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/agua-mail/agua/internal/directory"
)

// RestoreOptions says where a backup goes.
type RestoreOptions struct {
	DataDir  string
	Database string // accounts database path of the target config
	// Running reports whether a server uses DataDir now; restore refuses
	// then (a running server would not see the restored files, and would
	// overwrite them).
	Running func() bool
	// Force restores into a data folder that is not empty: what is there
	// is first moved aside to DataDir.before-restore-<time>.
	Force bool
}

// Restored is what Restore did.
type Restored struct {
	Manifest
	MovedAside []string // previous contents kept here (Force)
}

// Restore puts the backup in src into o.DataDir. Messages are hard-linked
// from the backup where possible (they are never modified, only renamed or
// unlinked, so the backup keeps its own); every other file is copied. Its
// errors start "restore: ".
func Restore(ctx context.Context, src string, o RestoreOptions) (Restored, error) {
	r, err := restore(ctx, src, o)
	if err != nil {
		err = fmt.Errorf("restore: %w", err)
	}
	return r, err
}

func restore(ctx context.Context, src string, o RestoreOptions) (Restored, error) {
	var r Restored
	m, err := ReadManifest(src)
	if err != nil {
		return r, err
	}
	if o.Running != nil && o.Running() {
		return r, fmt.Errorf("%w: stop it before restoring into %s", ErrRunning, o.DataDir)
	}
	busy := nonEmpty(o.DataDir) || exists(o.Database)
	if busy && !o.Force {
		return r, fmt.Errorf("%w: %s or %s already holds data; -force moves it aside first", ErrNotEmpty, o.DataDir, o.Database)
	}
	if busy {
		stamp := time.Now().UTC().Format("20060102T150405")
		for _, p := range []string{o.DataDir, o.Database, o.Database + "-wal", o.Database + "-shm"} {
			if !exists(p) || (p != o.DataDir && isInside(p, o.DataDir)) {
				continue
			}
			aside := p + ".before-restore-" + stamp
			if err := os.Rename(p, aside); err != nil {
				return r, fmt.Errorf("moving %s aside: %w", p, err)
			}
			r.MovedAside = append(r.MovedAside, aside)
		}
	}
	if err := os.MkdirAll(o.DataDir, 0o750); err != nil {
		return r, err
	}
	if err := os.MkdirAll(filepath.Dir(o.Database), 0o750); err != nil {
		return r, err
	}
	if m.Accounts, err = directory.RestoreFrom(ctx, filepath.Join(src, DatabaseFile), o.Database); err != nil {
		return r, err
	}
	c := &copier{link: true}
	m.Mail, m.Files = MailCounts{}, 0
	root := filepath.Join(src, DataFolder)
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		dst := filepath.Join(o.DataDir, rel)
		switch {
		case d.IsDir():
			if d.Name() == "cur" && strings.HasPrefix(rel, mailFolder+string(filepath.Separator)) {
				m.Mail.Folders++
			}
			return mkdirLike(dst, p)
		case !d.Type().IsRegular():
			return nil
		case isMessage(rel):
			size, err := c.place(p, dst)
			m.Mail.Messages++
			m.Mail.Bytes += size
			return err
		default:
			m.Files++
			return c.copyFile(p, dst)
		}
	})
	if err != nil {
		return r, err
	}
	m.Linked, m.Copied = c.linked, c.copied
	r.Manifest = m
	return r, syncFS(o.DataDir)
}

// isMessage: mail/<domain>/<user>/[.Folder/]{new,cur}/<file>.
func isMessage(rel string) bool {
	parts := strings.Split(rel, string(filepath.Separator))
	if len(parts) < 4 || parts[0] != mailFolder {
		return false
	}
	sub := parts[len(parts)-2]
	return sub == "new" || sub == "cur"
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

func nonEmpty(dir string) bool {
	ents, err := os.ReadDir(dir)
	return err == nil && len(ents) > 0
}

func isInside(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}
