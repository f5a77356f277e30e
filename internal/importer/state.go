package importer

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/agua-mail/agua/internal/atomicfile"
)

// State is what an import has copied so far, kept in one file per
// (source, user) so that an interrupted import resumes where it stopped.
// It is saved after every batch, atomically (temporary file, fsync,
// rename): a kill -9 leaves the previous version or the new one.
type State struct {
	Source  string                  `json:"source"`
	User    string                  `json:"user"`
	Folders map[string]*FolderState `json:"folders"` // by source folder name
}

// FolderState is the progress of one source folder.
type FolderState struct {
	// Validity is the source folder's UIDVALIDITY (IMAP); when it changes,
	// the source's UIDs mean other messages and the folder starts over,
	// with every message already in the target folder recognised.
	Validity uint32 `json:"uidvalidity,omitempty"`
	// LastUID: every source message up to this UID is copied (IMAP, whose
	// UIDs ascend).
	LastUID uint32 `json:"last_uid,omitempty"`
	// Done lists the source keys copied (a Maildir: file names without
	// their flags), for sources without ascending UIDs.
	Done []string `json:"done,omitempty"`
	// TargetValidity and Mark: the target folder's UIDVALIDITY and UIDNEXT
	// when the state was saved. A message the interrupted run appended but
	// did not record has a UID at or above Mark, so a resumed run compares
	// only those with the source (if the validity still matches; a Mark of
	// 0 means unknown: everything is compared).
	TargetValidity uint32 `json:"target_uidvalidity,omitempty"`
	Mark           uint32 `json:"target_mark,omitempty"`

	done map[string]bool
}

// StatePath returns the state file of (source, user) in dir: a readable
// prefix and a hash of both, so that any source string makes a safe name.
func StatePath(dir, source, user string) string {
	sum := sha256.Sum256([]byte(source + "\x00" + strings.ToLower(user)))
	safe := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' {
			return r
		}
		return '_'
	}, strings.ToLower(user))
	if len(safe) > 64 {
		safe = safe[:64]
	}
	return filepath.Join(dir, safe+"-"+hex.EncodeToString(sum[:8])+".json")
}

// lockState takes an exclusive flock(2) of path.lock, so that two imports
// of one source into one mailbox never run at once (each would copy what
// the other's state does not show yet). The kernel releases it when the
// process dies, kill -9 included.
func lockState(path string) (unlock func(), err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("import state: %w", err)
	}
	fd, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("import state: %w", err)
	}
	if err := unix.Flock(int(fd.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		fd.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w (%s)", ErrBusy, path)
		}
		return nil, fmt.Errorf("import state: %w", err)
	}
	return func() { fd.Close() }, nil
}

// loadState reads path; a missing file is an empty state. A file of
// another (source, user) is refused rather than mixed in.
func loadState(path, source, user string) (*State, error) {
	st := &State{Source: source, User: user, Folders: map[string]*FolderState{}}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("import state: %w", err)
	}
	if err := json.Unmarshal(data, st); err != nil {
		return nil, fmt.Errorf("import state %s: %w (remove it to start over)", path, err)
	}
	if st.Source != source || !strings.EqualFold(st.User, user) {
		return nil, fmt.Errorf("import state %s belongs to %s -> %s, not %s -> %s", path, st.Source, st.User, source, user)
	}
	if st.Folders == nil {
		st.Folders = map[string]*FolderState{}
	}
	for _, f := range st.Folders {
		f.done = make(map[string]bool, len(f.Done))
		for _, k := range f.Done {
			f.done[k] = true
		}
	}
	return st, nil
}

func (st *State) folder(name string) *FolderState {
	f := st.Folders[name]
	if f == nil {
		f = &FolderState{done: map[string]bool{}}
		st.Folders[name] = f
	}
	return f
}

// reset forgets a folder's progress (its UIDVALIDITY changed).
func (f *FolderState) reset(validity uint32) {
	*f = FolderState{Validity: validity, done: map[string]bool{}}
}

// started says whether anything of the folder was recorded.
func (f *FolderState) started() bool { return f.Mark != 0 || f.LastUID != 0 || len(f.Done) > 0 }

// copied says whether message m was copied by an earlier batch.
func (f *FolderState) copied(m Message) bool {
	if m.Key != "" {
		return f.done[m.Key]
	}
	return m.UID <= f.LastUID
}

// record notes m as copied (or found in the target).
func (f *FolderState) record(m Message) {
	if m.Key != "" {
		if !f.done[m.Key] {
			f.done[m.Key] = true
			f.Done = append(f.Done, m.Key)
		}
		return
	}
	f.LastUID = max(f.LastUID, m.UID)
}

// save writes the state durably and atomically.
func (st *State) save(path string) error {
	data, err := json.MarshalIndent(st, "", " ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("import state: %w", err)
	}
	if err := atomicfile.Write(path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("import state: %w", err)
	}
	return nil
}
