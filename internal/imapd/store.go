package imapd

import (
	"errors"
	"io"
	"os"
	"time"

	"github.com/agua-mail/agua/internal/maildir"
)

// Store is the mail store as IMAP sessions need it. Folder names are
// validated (names.go) before they get here; "" is INBOX.
type Store interface {
	Folder(user, name string) (Folder, error) // ErrNoFolder
	CreateFolder(user, name string) error     // ErrFolderExists
	DeleteFolder(user, name string) error     // ErrNoFolder
	RenameFolder(user, from, to string) error // ErrNoFolder, ErrFolderExists
	ListFolders(user string) ([]string, error)
	// CreateDefaultFolders creates names at a user's first login only.
	CreateDefaultFolders(user string, names []string) error
	// Usage returns the bytes stored in all of user's folders.
	Usage(user string) (int64, error)
}

// Folder is one open folder. Messages are identified by UID.
type Folder interface {
	List() (maildir.Listing, error)
	// Stamp changes whenever a message is added, removed or re-flagged;
	// while settled is false it may not have yet.
	Stamp() (st maildir.Stamp, settled bool, err error)
	Open(uid uint32) (*os.File, int64, error) // ErrNoMessage
	ModTime(uid uint32) (time.Time, error)
	MarkSeen(uids []uint32) error
	SetFlags(uids []uint32, add, remove string) error
	Delete(uids []uint32) error
	Append(r io.Reader, size int64, flags string, date time.Time) (uid, validity uint32, err error)
	CopyTo(dst Folder, uids []uint32) (src, dest []uint32, validity uint32, err error)
	Close() error
}

// Errors a Store returns; match with errors.Is.
var (
	ErrNoFolder     = maildir.ErrNoFolder
	ErrFolderExists = maildir.ErrFolderExists
	ErrNoMessage    = maildir.ErrNoMessage
)

// NewMaildirStore adapts agua's mail store.
func NewMaildirStore(s *maildir.Store) Store { return maildirStore{s} }

type maildirStore struct{ s *maildir.Store }

type maildirFolder struct{ *maildir.Folder }

func (m maildirStore) Folder(user, name string) (Folder, error) {
	f, err := m.s.Folder(user, name)
	if err != nil {
		return nil, err
	}
	return maildirFolder{f}, nil
}

func (m maildirStore) CreateFolder(user, name string) error { return m.s.CreateFolder(user, name) }
func (m maildirStore) DeleteFolder(user, name string) error { return m.s.DeleteFolder(user, name) }
func (m maildirStore) RenameFolder(user, from, to string) error {
	return m.s.RenameFolder(user, from, to)
}
func (m maildirStore) ListFolders(user string) ([]string, error) { return m.s.ListFolders(user) }
func (m maildirStore) CreateDefaultFolders(user string, names []string) error {
	return m.s.CreateDefaultFolders(user, names)
}
func (m maildirStore) Usage(user string) (int64, error) {
	b, _, err := m.s.FolderUsage(user)
	return b, err
}

var errForeignFolder = errors.New("imapd: folders of different stores")

func (f maildirFolder) CopyTo(dst Folder, uids []uint32) ([]uint32, []uint32, uint32, error) {
	d, ok := dst.(maildirFolder)
	if !ok {
		return nil, nil, 0, errForeignFolder
	}
	return f.Folder.CopyTo(d.Folder, uids)
}
