// Package importer copies a user's mail from another server into agua's
// mail store: every folder with its hierarchy, the flags agua keeps and
// the internal dates, from an IMAP server (IMAPSource, RFC 9051/3501 with
// RFC 6154 special-use folders) or from a Maildir++ tree on disk
// (MaildirSource, Dovecot's and Courier's layout).
//
// Writes go through the mail-store contract (internal/mailstore), so the
// import lands exactly where local delivery and IMAP APPEND put mail, and
// may run while the server serves the same store (the Maildir store's UID
// index is shared between processes under a lock).
//
// An import is resumable and never duplicates: a state file per (source,
// user) records, per source folder, its UIDVALIDITY and the last UID
// copied (a Maildir: the file names copied), saved after every batch. A
// message appended after the last save has a target UID at or above the
// recorded mark, so a resumed run recognises it by its Message-ID, size
// and internal date rather than copying it again; a folder seen for the
// first time, or whose UIDVALIDITY changed, is compared that way with
// everything already in its target folder.
//
// Messages flagged \Deleted on the source are not copied: they await an
// EXPUNGE there. IMAP keywords are not kept (agua's store keeps the
// system flags only; PERMANENTFLAGS has no \*), except $Forwarded, kept as
// the Maildir "P" (passed) flag; the summary counts what was dropped.
package importer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"time"

	"github.com/agua-mail/agua/internal/mailstore"
)

// Source is where mail comes from.
type Source interface {
	// ID names the source in the state file ("imap://user@host:port",
	// "maildir:/path").
	ID() string
	// Folders lists the folders to import, INBOX first.
	Folders(ctx context.Context) ([]Folder, error)
	// Messages lists a folder's messages (ascending UID where the source
	// has UIDs) and its UIDVALIDITY (0 without UIDs).
	Messages(ctx context.Context, f Folder) (validity uint32, msgs []Message, err error)
	// Fetch calls fn with the content of each of msgs, in any order; r is
	// valid only during the call and holds exactly size bytes with CRLF
	// line endings.
	Fetch(ctx context.Context, f Folder, msgs []Message, fn func(m Message, r io.Reader, size int64) error) error
	Close() error
}

// Folder is one source folder.
type Folder struct {
	Name   string // as the source names it (the state file's key)
	Target string // the agua folder it goes to; "" is INBOX
}

// Message describes one source message.
type Message struct {
	UID       uint32    // the source UID (IMAP); 0 for a Maildir
	Key       string    // a Maildir file name without its flags; "" for IMAP
	Flags     string    // Maildir letters agua keeps: D F P R S
	Deleted   bool      // \Deleted (Maildir T): not copied
	Keywords  []string  // flags that are dropped
	Date      time.Time // internal date
	Size      int64     // bytes as stored (CRLF)
	MessageID string    // without angle brackets; "" if none
}

// ref names the message within its source folder.
func (m Message) ref() string {
	if m.Key != "" {
		return m.Key
	}
	return fmt.Sprint(m.UID)
}

// dedupKey identifies a copy of a message in the target: everything an
// import preserves exactly (the internal date to the second: IMAP's
// resolution).
func (m Message) dedupKey() string {
	return fmt.Sprintf("%s\x00%d\x00%d", m.MessageID, m.Size, m.Date.Unix())
}

// Options configure an import.
type Options struct {
	Store     mailstore.Store
	User      string // the target mailbox (canonical address)
	StatePath string // see StatePath
	// Folders, if not empty, limits the import to these source folders.
	Folders []string
	// Batch is how many messages are copied between two saves of the
	// state (50 if zero).
	Batch int
	// Verify compares every source folder with its target folder at the
	// end: each message found, counts reported.
	Verify   bool
	Progress *Progress // nil: silent
}

// FolderResult is the summary line of one source folder.
type FolderResult struct {
	Source, Target string
	Messages       int // in the source
	Copied         int // by this run
	Present        int // found already copied (earlier run, or already in the target)
	Deleted        int // \Deleted on the source: skipped
	Keywords       int // messages that had flags agua does not keep
	Restarted      bool
	Done           bool // the folder was finished (else the run stopped in it)
	TargetCount    int  // messages in the target folder at the end
	Verified       bool // Verify ran and found every source message
	Missing        int  // Verify: source messages not found in the target
}

// Summary is the result of an import.
type Summary struct {
	Folders  []FolderResult
	Dropped  map[string]int // keyword -> messages that had it
	Duration time.Duration
}

// Totals adds up the folders.
func (s Summary) Totals() FolderResult {
	var t FolderResult
	for _, f := range s.Folders {
		t.Messages += f.Messages
		t.Copied += f.Copied
		t.Present += f.Present
		t.Deleted += f.Deleted
		t.Keywords += f.Keywords
		t.Missing += f.Missing
		t.TargetCount += f.TargetCount
	}
	return t
}

// Errors of Run; match them with errors.Is.
var (
	// ErrVerify: the verify step found source messages missing in the target.
	ErrVerify = errors.New("import: verify found messages missing")
	// ErrBusy: another import of the same source into the same mailbox
	// runs (it holds the state file's lock).
	ErrBusy = errors.New("import: another import of this source into this mailbox is running")
)

type plan struct {
	folder   Folder
	validity uint32
	msgs     []Message
}

// Run imports everything from src into opts.User's mailbox. It returns
// the summary also with an error (the folders done so far).
func Run(ctx context.Context, src Source, opts Options) (Summary, error) {
	start := time.Now()
	if opts.Batch <= 0 {
		opts.Batch = 50
	}
	sum := Summary{Dropped: map[string]int{}}
	unlock, err := lockState(opts.StatePath)
	if err != nil {
		return sum, err
	}
	defer unlock()
	st, err := loadState(opts.StatePath, src.ID(), opts.User)
	if err != nil {
		return sum, err
	}
	folders, err := src.Folders(ctx)
	if err != nil {
		return sum, err
	}
	if len(opts.Folders) > 0 {
		var missing []string
		for _, want := range opts.Folders {
			if !slices.ContainsFunc(folders, func(f Folder) bool { return f.Name == want }) {
				missing = append(missing, want)
			}
		}
		if len(missing) > 0 {
			return sum, fmt.Errorf("import: no such source folder: %q", missing)
		}
		folders = slices.DeleteFunc(folders, func(f Folder) bool { return !slices.Contains(opts.Folders, f.Name) })
	}
	// List every folder first: the progress total is what is left to copy.
	plans := make([]plan, 0, len(folders))
	total := 0
	for _, f := range folders {
		v, msgs, err := src.Messages(ctx, f)
		if err != nil {
			return sum, fmt.Errorf("import: listing %q: %w", f.Name, err)
		}
		plans = append(plans, plan{f, v, msgs})
		fs := st.Folders[f.Name]
		for _, m := range msgs {
			if !m.Deleted && (fs == nil || fs.Validity != v || !fs.copied(m)) {
				total++
			}
		}
	}
	opts.Progress.start(total)
	defer opts.Progress.finish()
	for _, p := range plans {
		res, err := importFolder(ctx, src, opts, st, p, sum.Dropped)
		sum.Folders = append(sum.Folders, res)
		if err != nil {
			sum.Duration = time.Since(start)
			return sum, err
		}
	}
	sum.Duration = time.Since(start)
	if opts.Verify && sum.Totals().Missing > 0 {
		return sum, ErrVerify
	}
	return sum, nil
}

func importFolder(ctx context.Context, src Source, opts Options, st *State, p plan, dropped map[string]int) (FolderResult, error) {
	res := FolderResult{Source: p.folder.Name, Target: p.folder.Target, Messages: len(p.msgs)}
	fs := st.folder(p.folder.Name)
	if fs.started() && fs.Validity != p.validity {
		res.Restarted = true
		fs.reset(p.validity)
	}
	fs.Validity = p.validity
	var todo []Message
	for _, m := range p.msgs {
		switch {
		case m.Deleted:
			res.Deleted++
		case fs.copied(m):
			res.Present++
		default:
			todo = append(todo, m)
		}
		if !m.Deleted && len(m.Keywords) > 0 {
			res.Keywords++
			for _, k := range m.Keywords {
				dropped[k]++
			}
		}
	}
	if p.folder.Target != "" {
		if err := opts.Store.CreateFolder(ctx, opts.User, p.folder.Target); err != nil && !errors.Is(err, mailstore.ErrFolderExists) {
			return res, fmt.Errorf("import: creating folder %q: %w", p.folder.Target, err)
		}
	}
	tf, err := opts.Store.Folder(ctx, opts.User, p.folder.Target)
	if err != nil {
		return res, fmt.Errorf("import: opening folder %q: %w", p.folder.Target, err)
	}
	defer tf.Close()
	if len(todo) > 0 {
		if err := copyFolder(ctx, src, opts, st, fs, p.folder, tf, todo, &res); err != nil {
			return res, err
		}
	}
	l, err := tf.List()
	if err != nil {
		return res, err
	}
	res.TargetCount = len(l.Messages)
	if opts.Verify {
		have, err := targetKeys(tf, l, 0)
		if err != nil {
			return res, err
		}
		for _, m := range p.msgs {
			if m.Deleted {
				continue
			}
			if have[m.dedupKey()] > 0 {
				have[m.dedupKey()]--
			} else {
				res.Missing++
			}
		}
		res.Verified = res.Missing == 0
	}
	res.Done = true
	return res, nil
}

// copyFolder copies todo (ascending) into tf in batches, saving the state
// after each.
func copyFolder(ctx context.Context, src Source, opts Options, st *State, fs *FolderState, f Folder, tf mailstore.Folder, todo []Message, res *FolderResult) error {
	l, err := tf.List()
	if err != nil {
		return err
	}
	// What an earlier, interrupted run may have appended without recording
	// it: above the mark if the target kept its UIDVALIDITY, else anything.
	from := uint32(0)
	if fs.started() && fs.TargetValidity == l.UIDValidity {
		from = fs.Mark
	}
	present, err := targetKeys(tf, l, from)
	if err != nil {
		return err
	}
	fs.TargetValidity, fs.Mark = l.UIDValidity, l.UIDNext
	if err := st.save(opts.StatePath); err != nil {
		return err
	}
	for len(todo) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(opts.Batch, len(todo))
		batch := todo[:n]
		todo = todo[n:]
		var fetch []Message
		for _, m := range batch {
			if k := m.dedupKey(); present[k] > 0 {
				present[k]--
				res.Present++
				opts.Progress.add(f.Name, 1)
				continue
			}
			fetch = append(fetch, m)
		}
		var lastUID uint32
		handled := map[string]bool{}
		for _, m := range batch {
			if !slices.ContainsFunc(fetch, func(x Message) bool { return x.ref() == m.ref() }) {
				handled[m.ref()] = true // found in the target
			}
		}
		err := src.Fetch(ctx, f, fetch, func(m Message, r io.Reader, size int64) error {
			uid, validity, err := tf.Append(r, size, m.Flags, m.Date)
			if err != nil {
				return fmt.Errorf("import: storing message into %q: %w", f.Target, err)
			}
			if validity != fs.TargetValidity {
				fs.TargetValidity, fs.Mark = validity, 0 // unknown: compare everything next time
			}
			lastUID = max(lastUID, uid)
			handled[m.ref()] = true
			res.Copied++
			opts.Progress.add(f.Name, 1)
			return nil
		})
		// Record what is certainly done: with UIDs, the batch up to the first
		// message not handled (LastUID covers a prefix); with keys, each.
		for _, m := range batch {
			if !handled[m.ref()] {
				if m.Key == "" {
					break
				}
				continue
			}
			fs.record(m)
		}
		if lastUID != 0 && fs.Mark != 0 {
			fs.Mark = max(fs.Mark, lastUID+1)
		}
		if serr := st.save(opts.StatePath); err == nil {
			err = serr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// targetKeys reads the dedup keys of the target's messages with UID >= from.
func targetKeys(tf mailstore.Folder, l mailstore.Listing, from uint32) (map[string]int, error) {
	keys := map[string]int{}
	for _, m := range l.Messages {
		if m.UID < from {
			continue
		}
		date, err := tf.ModTime(m.UID)
		if errors.Is(err, mailstore.ErrNoMessage) {
			continue // expunged meanwhile
		}
		if err != nil {
			return nil, err
		}
		r, _, err := tf.Open(m.UID)
		if errors.Is(err, mailstore.ErrNoMessage) {
			continue
		}
		if err != nil {
			return nil, err
		}
		id := messageID(r)
		r.Close()
		keys[Message{MessageID: id, Size: m.Size, Date: date}.dedupKey()]++
	}
	return keys, nil
}

// SortedDropped returns the dropped keywords, most frequent first.
func (s Summary) SortedDropped() []string {
	out := make([]string, 0, len(s.Dropped))
	for k := range s.Dropped {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool {
		if s.Dropped[out[i]] != s.Dropped[out[j]] {
			return s.Dropped[out[i]] > s.Dropped[out[j]]
		}
		return out[i] < out[j]
	})
	return out
}
