// Package memstore is an in-memory mail store: the reference
// implementation of the mail-store contract (internal/mailstore), as
// go-imap's imapmemserver is of its backend interface. It passes the same
// conformance suite as Maildir, shows what the contract asks of a store
// without any file system detail, and serves tests that need a store but
// not durability. Nothing is written anywhere.
package memstore

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/agua-mail/agua/internal/mailstore"
)

// Data is the content of a store; Open on the same Data is a restart that
// keeps everything, as a database would.
type Data struct {
	mu       sync.Mutex
	users    map[string]*user
	validity uint32 // the last UIDVALIDITY handed out
}

type user struct {
	folders  map[string]*folder // "" is INBOX
	defaults bool               // CreateDefaultFolders ran
}

type folder struct {
	validity uint32
	next     uint32
	modseq   uint64 // the stamp: bumped by every change
	locked   bool
	gone     bool // deleted or renamed away
	msgs     []*message
}

type message struct {
	uid   uint32
	body  []byte
	flags string
	new   bool
	date  time.Time
}

// NewData returns an empty store's content.
func NewData() *Data { return &Data{users: map[string]*user{}} }

// Open returns a Store on d.
func Open(d *Data) mailstore.Store { return store{d} }

// Deliver puts msg into user's INBOX as final delivery does: new, without
// flags.
func (d *Data) Deliver(user string, msg []byte) uint32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	f := d.inbox(user)
	return f.add(bytes.Clone(msg), "", true, time.Now())
}

func (d *Data) user(name string) *user {
	u := d.users[name]
	if u == nil {
		u = &user{folders: map[string]*folder{}}
		d.users[name] = u
	}
	return u
}

func (d *Data) newFolder() *folder {
	d.validity++
	return &folder{validity: d.validity, next: 1}
}

func (d *Data) inbox(name string) *folder {
	u := d.user(name)
	f := u.folders[""]
	if f == nil {
		f = d.newFolder()
		u.folders[""] = f
	}
	return f
}

func (f *folder) add(body []byte, flags string, isNew bool, date time.Time) uint32 {
	uid := f.next
	f.next++
	f.modseq++
	f.msgs = append(f.msgs, &message{uid: uid, body: body, flags: normalize(flags), new: isNew, date: date})
	return uid
}

func (f *folder) byUID(uid uint32) *message {
	i, ok := slices.BinarySearchFunc(f.msgs, uid, func(m *message, uid uint32) int { return int(m.uid) - int(uid) })
	if !ok {
		return nil
	}
	return f.msgs[i]
}

// normalize keeps ASCII letters, sorted, each once.
func normalize(flags string) string {
	b := []byte(flags)
	b = slices.DeleteFunc(b, func(c byte) bool { return !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z') })
	slices.Sort(b)
	return string(slices.Compact(b))
}

// validName is the rule Maildir++ sets: "." between non-empty levels, no
// "/", "\" or control characters, not INBOX.
func validName(name string) bool {
	if name == "" || len(name) > 255 || strings.EqualFold(name, "INBOX") {
		return false
	}
	for _, level := range strings.Split(name, ".") {
		if level == "" {
			return false
		}
	}
	return !strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '/' || r == '\\' })
}

type store struct{ d *Data }

func (s store) Folder(_ context.Context, user, name string) (mailstore.Folder, error) {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	if name == "" || strings.EqualFold(name, "INBOX") {
		return &handle{d: s.d, f: s.d.inbox(user)}, nil
	}
	if !validName(name) {
		return nil, fmt.Errorf("%w: %q", mailstore.ErrBadFolder, name)
	}
	f := s.d.user(user).folders[name]
	if f == nil {
		return nil, fmt.Errorf("%w: %s", mailstore.ErrNoFolder, name)
	}
	return &handle{d: s.d, f: f}, nil
}

func (s store) CreateFolder(_ context.Context, user, name string) error {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	return s.create(user, name)
}

func (s store) create(user, name string) error {
	if !validName(name) {
		return fmt.Errorf("%w: %q", mailstore.ErrBadFolder, name)
	}
	u := s.d.user(user)
	if u.folders[name] != nil {
		return fmt.Errorf("%w: %s", mailstore.ErrFolderExists, name)
	}
	u.folders[name] = s.d.newFolder()
	return nil
}

func (s store) DeleteFolder(_ context.Context, user, name string) error {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	if !validName(name) {
		return fmt.Errorf("%w: %q", mailstore.ErrBadFolder, name)
	}
	u := s.d.user(user)
	f := u.folders[name]
	if f == nil {
		return fmt.Errorf("%w: %s", mailstore.ErrNoFolder, name)
	}
	f.gone = true
	delete(u.folders, name)
	return nil
}

func (s store) RenameFolder(_ context.Context, user, from, to string) error {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	if !validName(from) || !validName(to) {
		return fmt.Errorf("%w: %q to %q", mailstore.ErrBadFolder, from, to)
	}
	u := s.d.user(user)
	if u.folders[from] == nil {
		return fmt.Errorf("%w: %s", mailstore.ErrNoFolder, from)
	}
	if strings.HasPrefix(to+".", from+".") {
		return fmt.Errorf("%w: cannot move %q below itself", mailstore.ErrBadFolder, from)
	}
	moves := map[string]string{from: to}
	for n := range u.folders {
		if strings.HasPrefix(n, from+".") {
			moves[n] = to + n[len(from):]
		}
	}
	for _, dst := range moves {
		if u.folders[dst] != nil {
			return fmt.Errorf("%w: %s", mailstore.ErrFolderExists, dst)
		}
	}
	// The content moves to a new folder record: Folders open under the
	// old names see it gone, as on a file system.
	for src, dst := range moves {
		f := u.folders[src]
		moved := *f
		moved.locked = false
		u.folders[dst] = &moved
		f.gone, f.msgs = true, nil
		delete(u.folders, src)
	}
	return nil
}

func (s store) ListFolders(_ context.Context, user string) ([]string, error) {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	var out []string
	if u := s.d.users[user]; u != nil {
		for n := range u.folders {
			if n != "" {
				out = append(out, n)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

func (s store) CreateDefaultFolders(_ context.Context, user string, names []string) error {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	u := s.d.user(user)
	if u.defaults {
		return nil
	}
	for _, n := range names {
		if u.folders[n] == nil {
			if err := s.create(user, n); err != nil {
				return err
			}
		}
	}
	u.defaults = true
	return nil
}

// DefaultFoldersMade is mailstore.DefaultsKeeper.
func (s store) DefaultFoldersMade(_ context.Context, user string) (bool, error) {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	u := s.d.users[user]
	return u != nil && u.defaults, nil
}

func (s store) Usage(_ context.Context, user string) (int64, error) {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	var n int64
	if u := s.d.users[user]; u != nil {
		for _, f := range u.folders {
			for _, m := range f.msgs {
				n += int64(len(m.body))
			}
		}
	}
	return n, nil
}

// handle is one open Folder.
type handle struct {
	d     *Data
	f     *folder
	holds bool // this handle holds the maildrop lock
}

func (h *handle) Lock() (func(), error) {
	h.d.mu.Lock()
	defer h.d.mu.Unlock()
	if h.f.locked {
		return nil, mailstore.ErrLocked
	}
	h.f.locked, h.holds = true, true
	var once sync.Once
	return func() { once.Do(h.release) }, nil
}

func (h *handle) release() {
	h.d.mu.Lock()
	defer h.d.mu.Unlock()
	if h.holds {
		h.f.locked, h.holds = false, false
	}
}

func (h *handle) List() (mailstore.Listing, error) {
	h.d.mu.Lock()
	defer h.d.mu.Unlock()
	l := mailstore.Listing{UIDValidity: h.f.validity, UIDNext: h.f.next, Messages: make([]mailstore.Message, len(h.f.msgs))}
	for i, m := range h.f.msgs {
		l.Messages[i] = mailstore.Message{UID: m.uid, Size: int64(len(m.body)), Flags: m.flags, New: m.new}
	}
	return l, nil
}

func (h *handle) Stamp() (mailstore.Stamp, bool, error) {
	h.d.mu.Lock()
	defer h.d.mu.Unlock()
	if h.f.gone {
		return mailstore.Stamp{}, false, mailstore.ErrNoFolder
	}
	return mailstore.Stamp{h.f.modseq}, true, nil
}

type reader struct{ *bytes.Reader }

func (reader) Close() error { return nil }

func (h *handle) Open(uid uint32) (io.ReadSeekCloser, int64, error) {
	h.d.mu.Lock()
	defer h.d.mu.Unlock()
	m := h.f.byUID(uid)
	if m == nil {
		return nil, 0, mailstore.ErrNoMessage
	}
	return reader{bytes.NewReader(m.body)}, int64(len(m.body)), nil
}

func (h *handle) ModTime(uid uint32) (time.Time, error) {
	h.d.mu.Lock()
	defer h.d.mu.Unlock()
	m := h.f.byUID(uid)
	if m == nil {
		return time.Time{}, mailstore.ErrNoMessage
	}
	return m.date, nil
}

// edit applies change to each known message and bumps the stamp once.
func (h *handle) edit(uids []uint32, change func(*message)) {
	h.d.mu.Lock()
	defer h.d.mu.Unlock()
	for _, uid := range uids {
		if m := h.f.byUID(uid); m != nil {
			change(m)
		}
	}
	h.f.modseq++
}

func (h *handle) MarkSeen(uids []uint32) error {
	h.edit(uids, func(m *message) { m.new = false })
	return nil
}

func (h *handle) SetFlags(uids []uint32, add, remove string) error {
	h.edit(uids, func(m *message) {
		kept := strings.Map(func(r rune) rune {
			if strings.ContainsRune(remove, r) {
				return -1
			}
			return r
		}, m.flags)
		m.flags, m.new = normalize(kept+add), false
	})
	return nil
}

func (h *handle) Delete(uids []uint32) error {
	h.d.mu.Lock()
	defer h.d.mu.Unlock()
	h.f.msgs = slices.DeleteFunc(h.f.msgs, func(m *message) bool { return slices.Contains(uids, m.uid) })
	h.f.modseq++
	return nil
}

func (h *handle) Append(r io.Reader, size int64, flags string, date time.Time) (uint32, uint32, error) {
	body, date, err := readMessage(r, size, date)
	if err != nil {
		return 0, 0, err
	}
	h.d.mu.Lock()
	defer h.d.mu.Unlock()
	return h.f.add(body, flags, false, date), h.f.validity, nil
}

func (h *handle) CopyTo(dst mailstore.Folder, uids []uint32) (src, dest []uint32, validity uint32, err error) {
	d, ok := dst.(*handle)
	if !ok || d.d != h.d {
		return nil, nil, 0, mailstore.ErrForeignFolder
	}
	h.d.mu.Lock()
	defer h.d.mu.Unlock()
	for _, uid := range uids {
		if m := h.f.byUID(uid); m != nil {
			src = append(src, uid)
			dest = append(dest, d.f.add(m.body, m.flags, false, m.date))
		}
	}
	return src, dest, d.f.validity, nil
}

func (h *handle) Close() error {
	h.release()
	return nil
}

var (
	_ mailstore.UIDKeeper      = (*handle)(nil)
	_ mailstore.DefaultsKeeper = store{}
)

// SetUIDs: mailstore.UIDKeeper. An empty folder that keeps its validity
// does not lower its next, so no UID is handed out twice.
func (h *handle) SetUIDs(validity, next uint32) error {
	if validity == 0 || next == 0 {
		return fmt.Errorf("memstore: UIDVALIDITY %d, UIDNEXT %d: both must be above 0", validity, next)
	}
	h.d.mu.Lock()
	defer h.d.mu.Unlock()
	f := h.f
	if len(f.msgs) > 0 && (validity != f.validity || next < f.next) {
		return mailstore.ErrNotEmpty
	}
	if validity == f.validity {
		next = max(next, f.next)
	}
	f.validity, f.next = validity, next
	f.modseq++
	return nil
}

// AppendUID: mailstore.UIDKeeper.
func (h *handle) AppendUID(r io.Reader, size int64, uid uint32, flags string, date time.Time) error {
	body, date, err := readMessage(r, size, date)
	if err != nil {
		return err
	}
	h.d.mu.Lock()
	defer h.d.mu.Unlock()
	f := h.f
	if uid == 0 || len(f.msgs) > 0 && f.msgs[len(f.msgs)-1].uid >= uid {
		return fmt.Errorf("%w: %d", mailstore.ErrBadUID, uid)
	}
	f.modseq++
	f.msgs = append(f.msgs, &message{uid: uid, body: body, flags: normalize(flags), date: date})
	if uid == 1<<32-1 {
		f.next = uid
	} else {
		f.next = max(f.next, uid+1)
	}
	return nil
}

// readMessage reads a message of size bytes and gives a zero date the
// time now.
func readMessage(r io.Reader, size int64, date time.Time) ([]byte, time.Time, error) {
	body, err := io.ReadAll(io.LimitReader(r, size+1))
	if err != nil {
		return nil, date, err
	}
	if int64(len(body)) != size {
		return nil, date, fmt.Errorf("memstore: message is %d bytes, expected %d", len(body), size)
	}
	if date.IsZero() {
		date = time.Now()
	}
	return body, date, nil
}
