// Package mailmove copies users' mail from one mail store to another
// (agua migrate maildir-to-db and db-to-maildir, issue 17) through the
// mail-store contract of internal/mailstore only, so any two stores work:
// every folder, and in each the folder's UIDVALIDITY and UIDNEXT
// (UIDKeeper.SetUIDs) and every message with its UID, flags and internal
// date (UIDKeeper.AppendUID, or UIDBatcher.AppendUIDs where the target
// has it). A client's cached UIDs (IMAP UID, RFC 3501 2.3.1.1; POP3 UIDL,
// RFC 1939 7) therefore stay valid: nothing it knows changes.
//
// A move is resumable: messages are copied in ascending UID order, so a
// target folder always holds a leading part of the source's; a new run
// copies only the UIDs above the target's highest and never duplicates.
// The end of every folder is verified (see Verify).
//
// The source must not change during a move: the server (every node, for
// a shared store) is stopped, which the CLI checks.
package mailmove

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/agua-mail/agua/internal/mailstore"
)

// Errors of a move; match them with errors.Is.
var (
	// ErrNoUIDKeeper: the target store cannot take messages with their
	// UIDs.
	ErrNoUIDKeeper = errors.New("target store cannot keep UIDs")
	// ErrMismatch: verification found the target folder different from
	// the source (a *VerifyError says how).
	ErrMismatch = errors.New("target differs from source")
)

// Verify says for how many messages the end check compares content
// (SHA-256) and internal date (to the second);
// counts, UIDs, sizes, flags, UIDVALIDITY and UIDNEXT are always compared.
type Verify int

const (
	// VerifySample compares the SHA-256 of up to SampleSize messages per
	// folder, spread evenly, the last one always among them.
	VerifySample Verify = iota
	// VerifyFull compares every message's content.
	VerifyFull
	// VerifyNone compares no content.
	VerifyNone
)

// SampleSize is how many messages per folder VerifySample compares.
const SampleSize = 32

// Batches: how many messages, and bytes, one AppendUIDs takes at most.
const (
	defaultBatch      = 256
	defaultBatchBytes = 16 << 20
)

// Options configure a move.
type Options struct {
	// Users are the users to move (canonical addresses).
	Users []string
	// Verify: VerifySample if zero.
	Verify Verify
	// Progress, if set, is called after each batch of messages copied and
	// once at the end, from the moving goroutine.
	Progress func(Progress)
	// BatchMessages and BatchBytes bound one AppendUIDs (256 messages and
	// 16 MiB if zero).
	BatchMessages int
	BatchBytes    int64
}

// Progress is how far a move is. The totals are what this run copies
// (messages already in the target are not counted), known before the
// first message is copied.
type Progress struct {
	User, Folder             string // being copied ("" is INBOX)
	Messages, TotalMessages  int
	Bytes, TotalBytes        int64
	FoldersDone, FolderCount int
}

// Report is what a move did.
type Report struct {
	Users, Folders int
	Messages       int   // copied in this run
	Bytes          int64 // copied in this run
	Present        int   // already in the target (a resumed move)
	Compared       int   // messages whose content verification compared
}

// VerifyError describes a folder whose target differs from its source.
type VerifyError struct {
	User, Folder string
	Problems     []string // at most maxProblems
}

const maxProblems = 10

func (e *VerifyError) Error() string {
	return fmt.Sprintf("mailmove: %s folder %q: target differs from source: %v", e.User, folderName(e.Folder), e.Problems)
}

func (e *VerifyError) Unwrap() error { return ErrMismatch }

func folderName(name string) string {
	if name == "" {
		return "INBOX"
	}
	return name
}

type mover struct {
	ctx      context.Context
	src, dst mailstore.Store
	opts     Options
	prog     Progress
	rep      Report
}

// Move copies opts.Users' folders from src to dst, then verifies each
// folder. It stops at the first error; running it again resumes.
func Move(ctx context.Context, src, dst mailstore.Store, opts Options) (Report, error) {
	if opts.BatchMessages <= 0 {
		opts.BatchMessages = defaultBatch
	}
	if opts.BatchBytes <= 0 {
		opts.BatchBytes = defaultBatchBytes
	}
	m := &mover{ctx: ctx, src: src, dst: dst, opts: opts}
	folders, err := m.plan()
	if err != nil {
		return m.rep, err
	}
	m.prog.FolderCount = len(folders)
	m.report()
	done := map[string]bool{}
	for _, f := range folders {
		if err := ctx.Err(); err != nil {
			return m.rep, err
		}
		m.prog.User, m.prog.Folder = f.user, f.name
		if !done[f.user] {
			done[f.user] = true
			m.rep.Users++
		}
		if err := m.moveFolder(f.user, f.name); err != nil {
			return m.rep, fmt.Errorf("mailmove: %s folder %q: %w", f.user, folderName(f.name), err)
		}
		m.rep.Folders++
		m.prog.FoldersDone++
		m.report()
	}
	for u := range done {
		// The user's folders are the source's: the server must not add
		// its default folders (Sent, Junk...) the user may have deleted.
		// A user who never got them (never logged in over IMAP: a new
		// user, a POP3 user) gets them at the next login, as before the
		// move.
		if dk, ok := src.(mailstore.DefaultsKeeper); ok {
			made, err := dk.DefaultFoldersMade(ctx, u)
			if err != nil {
				return m.rep, fmt.Errorf("mailmove: %s: %w", u, err)
			}
			if !made {
				continue
			}
		}
		if err := dst.CreateDefaultFolders(ctx, u, nil); err != nil {
			return m.rep, fmt.Errorf("mailmove: %s: %w", u, err)
		}
	}
	return m.rep, nil
}

type folderRef struct{ user, name string }

// plan lists every folder to move and counts what remains to copy.
func (m *mover) plan() ([]folderRef, error) {
	var out []folderRef
	for _, u := range m.opts.Users {
		names, err := m.src.ListFolders(m.ctx, u)
		if err != nil {
			return nil, fmt.Errorf("mailmove: %s: %w", u, err)
		}
		for _, name := range append([]string{""}, names...) {
			out = append(out, folderRef{u, name})
			sl, err := listFolder(m.ctx, m.src, u, name)
			if err != nil {
				return nil, fmt.Errorf("mailmove: %s folder %q: %w", u, folderName(name), err)
			}
			last, err := m.targetLast(u, name)
			if err != nil {
				return nil, fmt.Errorf("mailmove: %s folder %q in the target: %w", u, folderName(name), err)
			}
			for _, msg := range sl.Messages {
				if msg.UID > last {
					m.prog.TotalMessages++
					m.prog.TotalBytes += msg.Size
				}
			}
		}
	}
	return out, nil
}

// targetLast returns the highest UID of the target folder, 0 if it does
// not exist.
func (m *mover) targetLast(user, name string) (uint32, error) {
	if name != "" {
		names, err := m.dst.ListFolders(m.ctx, user)
		if err != nil {
			return 0, err
		}
		if !slices.Contains(names, name) {
			return 0, nil
		}
	}
	l, err := listFolder(m.ctx, m.dst, user, name)
	return lastUID(l), err
}

func listFolder(ctx context.Context, s mailstore.Store, user, name string) (mailstore.Listing, error) {
	f, err := s.Folder(ctx, user, name)
	if err != nil {
		return mailstore.Listing{}, err
	}
	defer f.Close()
	return f.List()
}

func lastUID(l mailstore.Listing) uint32 {
	if n := len(l.Messages); n > 0 {
		return l.Messages[n-1].UID
	}
	return 0
}

func (m *mover) report() {
	if m.opts.Progress != nil {
		m.opts.Progress(m.prog)
	}
}

// moveFolder copies one folder and verifies it.
func (m *mover) moveFolder(user, name string) error {
	sf, err := m.src.Folder(m.ctx, user, name)
	if err != nil {
		return err
	}
	defer sf.Close()
	if name != "" {
		if err := m.dst.CreateFolder(m.ctx, user, name); err != nil && !errors.Is(err, mailstore.ErrFolderExists) {
			return err
		}
	}
	df, err := m.dst.Folder(m.ctx, user, name)
	if err != nil {
		return err
	}
	defer df.Close()
	keeper, ok := df.(mailstore.UIDKeeper)
	if !ok {
		return fmt.Errorf("%w (%T)", ErrNoUIDKeeper, df)
	}
	sl, err := sf.List()
	if err != nil {
		return err
	}
	dl, err := df.List()
	if err != nil {
		return err
	}
	// Refused (ErrNotEmpty) when the target folder holds other mail, or
	// mail from a source whose UIDs were since renumbered.
	if err := keeper.SetUIDs(sl.UIDValidity, sl.UIDNext); err != nil {
		return fmt.Errorf("target holds %d messages under UIDVALIDITY %d, UIDNEXT %d; source has %d, %d: %w",
			len(dl.Messages), dl.UIDValidity, dl.UIDNext, sl.UIDValidity, sl.UIDNext, err)
	}
	last := lastUID(dl)
	var todo []mailstore.Message
	for _, msg := range sl.Messages {
		if msg.UID > last {
			todo = append(todo, msg)
		} else {
			m.rep.Present++
		}
	}
	if err := m.copy(sf, df, keeper, todo); err != nil {
		return err
	}
	return m.verify(user, name, sf, df)
}

// copy appends todo (ascending UIDs) to the target in batches.
func (m *mover) copy(sf, df mailstore.Folder, keeper mailstore.UIDKeeper, todo []mailstore.Message) error {
	batcher, _ := df.(mailstore.UIDBatcher)
	var batch []mailstore.UIDMessage
	var closers []io.Closer
	var bytes int64
	flush := func() error {
		defer func() {
			for _, c := range closers {
				c.Close()
			}
			closers, batch, bytes = closers[:0], batch[:0], 0
		}()
		if len(batch) == 0 {
			return nil
		}
		if batcher != nil {
			if err := batcher.AppendUIDs(batch); err != nil {
				return err
			}
		} else {
			for _, u := range batch {
				if err := keeper.AppendUID(u.R, u.Size, u.UID, u.Flags, u.Date); err != nil {
					return fmt.Errorf("message %d: %w", u.UID, err)
				}
			}
		}
		m.rep.Messages += len(batch)
		m.rep.Bytes += bytes
		m.prog.Messages += len(batch)
		m.prog.Bytes += bytes
		m.report()
		return m.ctx.Err()
	}
	for _, msg := range todo {
		r, size, err := sf.Open(msg.UID)
		if errors.Is(err, mailstore.ErrNoMessage) {
			continue // expunged since the listing: the end check says so
		}
		if err != nil {
			return fmt.Errorf("message %d: %w", msg.UID, err)
		}
		closers = append(closers, r)
		date, err := sf.ModTime(msg.UID)
		if err != nil {
			flush()
			return fmt.Errorf("message %d: %w", msg.UID, err)
		}
		batch = append(batch, mailstore.UIDMessage{R: r, Size: size, UID: msg.UID, Flags: msg.Flags, Date: date})
		bytes += size
		if len(batch) >= m.opts.BatchMessages || bytes >= m.opts.BatchBytes {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// verify compares the target folder with the source: UIDVALIDITY, UIDNEXT,
// UIDs, sizes, flags, and the content Options.Verify asks for.
func (m *mover) verify(user, name string, sf, df mailstore.Folder) error {
	sl, err := sf.List()
	if err != nil {
		return err
	}
	dl, err := df.List()
	if err != nil {
		return err
	}
	ve := &VerifyError{User: user, Folder: name}
	problem := func(format string, args ...any) {
		if len(ve.Problems) < maxProblems {
			ve.Problems = append(ve.Problems, fmt.Sprintf(format, args...))
		}
	}
	if sl.UIDValidity != dl.UIDValidity {
		problem("UIDVALIDITY %d, source %d", dl.UIDValidity, sl.UIDValidity)
	}
	if dl.UIDNext != sl.UIDNext {
		problem("UIDNEXT %d, source %d", dl.UIDNext, sl.UIDNext)
	}
	if len(dl.Messages) != len(sl.Messages) {
		problem("%d messages, source %d", len(dl.Messages), len(sl.Messages))
	}
	for i := range min(len(sl.Messages), len(dl.Messages)) {
		s, d := sl.Messages[i], dl.Messages[i]
		switch {
		case s.UID != d.UID:
			problem("message #%d has UID %d, source %d", i+1, d.UID, s.UID)
		case s.Size != d.Size:
			problem("UID %d is %d bytes, source %d", s.UID, d.Size, s.Size)
		case s.Flags != d.Flags:
			problem("UID %d has flags %q, source %q", s.UID, d.Flags, s.Flags)
		}
	}
	if len(ve.Problems) == 0 {
		for _, i := range m.sample(len(sl.Messages)) {
			uid := sl.Messages[i].UID
			a, err := digest(sf, uid)
			if err != nil {
				return fmt.Errorf("verifying UID %d in the source: %w", uid, err)
			}
			b, err := digest(df, uid)
			if err != nil {
				return fmt.Errorf("verifying UID %d in the target: %w", uid, err)
			}
			m.rep.Compared++
			if a != b {
				problem("UID %d: content differs", uid)
			}
			// IMAP INTERNALDATE has a precision of seconds (RFC 3501 9:
			// date-time); stores may keep more, or less (PostgreSQL: µs).
			da, err := sf.ModTime(uid)
			if err != nil {
				return fmt.Errorf("verifying UID %d in the source: %w", uid, err)
			}
			db, err := df.ModTime(uid)
			if err != nil {
				return fmt.Errorf("verifying UID %d in the target: %w", uid, err)
			}
			if da.Unix() != db.Unix() {
				problem("UID %d: internal date %s, source %s", uid, db.UTC().Format(time.RFC3339), da.UTC().Format(time.RFC3339))
			}
		}
	}
	if len(ve.Problems) > 0 {
		return ve
	}
	return nil
}

// sample returns the indexes of the messages whose content is compared.
func (m *mover) sample(n int) []int {
	switch {
	case m.opts.Verify == VerifyNone || n == 0:
		return nil
	case m.opts.Verify == VerifyFull || n <= SampleSize:
		out := make([]int, n)
		for i := range out {
			out[i] = i
		}
		return out
	}
	out := make([]int, 0, SampleSize)
	for k := range SampleSize - 1 {
		out = append(out, k*n/(SampleSize-1))
	}
	return append(out, n-1)
}

func digest(f mailstore.Folder, uid uint32) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	r, _, err := f.Open(uid)
	if err != nil {
		return sum, err
	}
	defer r.Close()
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return sum, err
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}
