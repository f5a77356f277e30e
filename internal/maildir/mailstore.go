package maildir

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync"
	"time"

	"github.com/agua-mail/agua/internal/mailstore"
)

// MailStore returns the store as POP3 and IMAP sessions use it: the
// mail-store contract of internal/mailstore, on the reading API of this
// package (Folder, folders.go). Contexts are not consulted: every call is
// local file system work.
func (s *Store) MailStore() mailstore.Store { return mailStore{s} }

type mailStore struct{ s *Store }

var (
	_ mailstore.Store          = mailStore{}
	_ mailstore.DefaultsKeeper = mailStore{}
	_ mailstore.Folder         = (*mailFolder)(nil)
)

func (m mailStore) Folder(_ context.Context, user, name string) (mailstore.Folder, error) {
	f, err := m.s.Folder(user, name)
	if err != nil {
		return nil, err
	}
	return &mailFolder{f: f}, nil
}

func (m mailStore) CreateFolder(_ context.Context, user, name string) error {
	return m.s.CreateFolder(user, name)
}

func (m mailStore) DeleteFolder(_ context.Context, user, name string) error {
	return m.s.DeleteFolder(user, name)
}

func (m mailStore) RenameFolder(_ context.Context, user, from, to string) error {
	return m.s.RenameFolder(user, from, to)
}

func (m mailStore) ListFolders(_ context.Context, user string) ([]string, error) {
	return m.s.ListFolders(user)
}

func (m mailStore) CreateDefaultFolders(_ context.Context, user string, names []string) error {
	return m.s.CreateDefaultFolders(user, names)
}

// DefaultFoldersMade is mailstore.DefaultsKeeper: the marker file.
func (m mailStore) DefaultFoldersMade(_ context.Context, user string) (bool, error) {
	return m.s.DefaultFoldersMade(user)
}

func (m mailStore) Usage(_ context.Context, user string) (int64, error) {
	b, _, err := m.s.FolderUsage(user)
	return b, err
}

// mailFolder is a Folder behind the contract; it remembers the release of
// the maildrop lock it took, so that Close gives the lock back too.
type mailFolder struct {
	f *Folder

	mu     sync.Mutex
	unlock func()
}

func (m *mailFolder) Lock() (func(), error) {
	unlock, err := m.f.Lock()
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.unlock = unlock
	m.mu.Unlock()
	return unlock, nil
}

func (m *mailFolder) List() (mailstore.Listing, error) {
	l, err := m.f.List()
	if err != nil {
		return mailstore.Listing{}, err
	}
	out := mailstore.Listing{UIDValidity: l.UIDValidity, UIDNext: l.UIDNext, Messages: make([]mailstore.Message, len(l.Messages))}
	for i, mi := range l.Messages {
		out.Messages[i] = mailstore.Message{UID: mi.UID, Size: mi.Size, Flags: mi.Flags, New: mi.New}
	}
	return out, nil
}

// Stamp says ErrNoFolder when the folder was deleted or renamed under
// this Folder (its new/ or cur/ is gone).
func (m *mailFolder) Stamp() (mailstore.Stamp, bool, error) {
	st, settled, err := m.f.Stamp()
	if errors.Is(err, fs.ErrNotExist) {
		err = fmt.Errorf("%w: %w", mailstore.ErrNoFolder, err)
	}
	return mailstore.Stamp{uint64(st.newTime), uint64(st.curTime), st.newIno, st.curIno}, settled, err
}

func (m *mailFolder) Open(uid uint32) (io.ReadSeekCloser, int64, error) {
	fd, size, err := m.f.Open(uid)
	if err != nil {
		return nil, 0, err
	}
	return fd, size, nil
}

func (m *mailFolder) ModTime(uid uint32) (time.Time, error) { return m.f.ModTime(uid) }
func (m *mailFolder) MarkSeen(uids []uint32) error          { return m.f.MarkSeen(uids) }
func (m *mailFolder) SetFlags(uids []uint32, add, remove string) error {
	return m.f.SetFlags(uids, add, remove)
}
func (m *mailFolder) Delete(uids []uint32) error { return m.f.Delete(uids) }

func (m *mailFolder) Append(r io.Reader, size int64, flags string, date time.Time) (uint32, uint32, error) {
	return m.f.Append(r, size, flags, date)
}

// CopyTo links files within the store; a folder of another store would
// need its content copied through the contract, which no caller needs.
func (m *mailFolder) CopyTo(dst mailstore.Folder, uids []uint32) ([]uint32, []uint32, uint32, error) {
	d, ok := dst.(*mailFolder)
	if !ok || d.f.s != m.f.s {
		return nil, nil, 0, mailstore.ErrForeignFolder
	}
	return m.f.CopyTo(d.f, uids)
}

func (m *mailFolder) Close() error {
	m.mu.Lock()
	unlock := m.unlock
	m.unlock = nil
	m.mu.Unlock()
	if unlock != nil {
		unlock()
	}
	return m.f.Close()
}

var (
	_ mailstore.UIDKeeper  = (*mailFolder)(nil)
	_ mailstore.UIDBatcher = (*mailFolder)(nil)
)

func (m *mailFolder) SetUIDs(validity, next uint32) error { return m.f.SetUIDs(validity, next) }

func (m *mailFolder) AppendUID(r io.Reader, size int64, uid uint32, flags string, date time.Time) error {
	return m.f.AppendUID(mailstore.UIDMessage{R: r, Size: size, UID: uid, Flags: flags, Date: date})
}

func (m *mailFolder) AppendUIDs(msgs []mailstore.UIDMessage) error { return m.f.AppendUIDs(msgs) }
