package mailmove_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/maildir"
	"github.com/agua-mail/agua/internal/mailmove"
	"github.com/agua-mail/agua/internal/mailstore"
	"github.com/agua-mail/agua/internal/mailstore/memstore"
)

const user = "carol@example.test"

var ctx = context.Background()

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func openMaildir(t *testing.T, root string) mailstore.Store {
	t.Helper()
	s, err := maildir.Open(root, maildir.Options{Hostname: "test"})
	must(t, err)
	t.Cleanup(func() { s.Close() })
	return s.MailStore()
}

func msg(i int) string {
	return fmt.Sprintf("Subject: message %d\r\nFrom: a@example.test\r\n\r\n%s\r\n", i, strings.Repeat("x", i%97))
}

// fillMaildir writes n messages straight into the cur/ of user's INBOX in
// root, as another Maildir program would (fast: no fsync), lists them so
// they get UIDs 1..n, and deletes every seventh so the UIDs have gaps.
func fillMaildir(t *testing.T, root string, n int) {
	t.Helper()
	s, err := maildir.Open(root, maildir.Options{Hostname: "test"})
	must(t, err)
	defer s.Close()
	f, err := s.Folder(user, "")
	must(t, err)
	defer f.Close()
	cur := filepath.Join(s.MaildirPath(user), "cur")
	date := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 1; i <= n; i++ {
		body := msg(i)
		flags := []string{"", "S", "FS", "RS"}[i%4]
		p := filepath.Join(cur, fmt.Sprintf("1600000000.M%dP1.test,S=%d:2,%s", i, len(body), flags))
		must(t, os.WriteFile(p, []byte(body), 0o600))
		d := date.Add(time.Duration(i) * time.Minute)
		must(t, os.Chtimes(p, d, d))
	}
	l, err := f.List()
	must(t, err)
	var del []uint32
	for _, m := range l.Messages {
		if m.UID%7 == 0 {
			del = append(del, m.UID)
		}
	}
	must(t, f.Delete(del))
}

// snapshot is everything a client can see of a user's mail.
type snapshot map[string]folderState

type folderState struct {
	validity, next uint32
	msgs           []string // "uid size flags date sha"
}

func snap(t *testing.T, s mailstore.Store) snapshot {
	t.Helper()
	names, err := s.ListFolders(ctx, user)
	must(t, err)
	out := snapshot{}
	for _, name := range append([]string{""}, names...) {
		f, err := s.Folder(ctx, user, name)
		must(t, err)
		l, err := f.List()
		must(t, err)
		st := folderState{validity: l.UIDValidity, next: l.UIDNext}
		for _, m := range l.Messages {
			r, _, err := f.Open(m.UID)
			must(t, err)
			b, err := io.ReadAll(r)
			r.Close()
			must(t, err)
			d, err := f.ModTime(m.UID)
			must(t, err)
			st.msgs = append(st.msgs, fmt.Sprintf("%d %d %q %d %x", m.UID, m.Size, m.Flags, d.Unix(), b))
		}
		f.Close()
		out[name] = st
	}
	return out
}

func (s snapshot) diff(o snapshot) string {
	if len(s) != len(o) {
		return fmt.Sprintf("%d folders, want %d", len(o), len(s))
	}
	for name, a := range s {
		b, ok := o[name]
		switch {
		case !ok:
			return fmt.Sprintf("folder %q missing", name)
		case a.validity != b.validity || a.next != b.next:
			return fmt.Sprintf("folder %q: UIDVALIDITY %d UIDNEXT %d, want %d %d", name, b.validity, b.next, a.validity, a.next)
		case len(a.msgs) != len(b.msgs):
			return fmt.Sprintf("folder %q: %d messages, want %d", name, len(b.msgs), len(a.msgs))
		}
		for i := range a.msgs {
			if a.msgs[i] != b.msgs[i] {
				return fmt.Sprintf("folder %q: message %s, want %s", name, b.msgs[i], a.msgs[i])
			}
		}
	}
	return ""
}

// source makes a Maildir user with mail in INBOX (new and flagged), a
// nested folder with UID gaps, and an empty folder.
func source(t *testing.T) mailstore.Store {
	root := t.TempDir()
	fillMaildir(t, root, 40)
	s := openMaildir(t, root)
	for _, name := range []string{"Archive", "Archive.2024", "Empty"} {
		must(t, s.CreateFolder(ctx, user, name))
	}
	f, err := s.Folder(ctx, user, "Archive.2024")
	must(t, err)
	defer f.Close()
	for i := range 12 {
		_, _, err := f.Append(strings.NewReader(msg(i)), int64(len(msg(i))), "S", time.Date(2024, 2, i+1, 0, 0, 0, 0, time.UTC))
		must(t, err)
	}
	must(t, f.Delete([]uint32{1, 5, 12}))
	return s
}

// A user moves Maildir → memstore → Maildir with every folder, UID,
// UIDVALIDITY, UIDNEXT, flag, date and byte identical.
func TestMoveThereAndBack(t *testing.T) {
	src := source(t)
	want := snap(t, src)
	mid := memstore.Open(memstore.NewData())
	var last mailmove.Progress
	rep, err := mailmove.Move(ctx, src, mid, mailmove.Options{Users: []string{user}, Verify: mailmove.VerifyFull,
		Progress: func(p mailmove.Progress) { last = p }})
	must(t, err)
	if d := want.diff(snap(t, mid)); d != "" {
		t.Fatalf("Maildir → memstore: %s", d)
	}
	if rep.Messages != last.TotalMessages || last.Messages != last.TotalMessages || rep.Bytes != last.TotalBytes ||
		last.FoldersDone != 4 || rep.Folders != 4 || rep.Compared != rep.Messages {
		t.Fatalf("report %+v, last progress %+v", rep, last)
	}
	back := openMaildir(t, t.TempDir())
	_, err = mailmove.Move(ctx, mid, back, mailmove.Options{Users: []string{user}, Verify: mailmove.VerifyFull})
	must(t, err)
	if d := want.diff(snap(t, back)); d != "" {
		t.Fatalf("memstore → Maildir: %s", d)
	}
	// A new message after the move gets the source's UIDNEXT.
	f, err := back.Folder(ctx, user, "")
	must(t, err)
	defer f.Close()
	uid, validity, err := f.Append(strings.NewReader("x\r\n"), 3, "", time.Time{})
	must(t, err)
	if uid != want[""].next || validity != want[""].validity {
		t.Fatalf("append after the move: UID %d UIDVALIDITY %d, want %d %d", uid, validity, want[""].next, want[""].validity)
	}
}

// A move interrupted half-way continues where it stopped, copying each
// message once, on a target with batches (Maildir) and without (memstore).
func TestResume(t *testing.T) {
	for _, tc := range []struct {
		name   string
		target func(t *testing.T) mailstore.Store
	}{
		{"maildir", func(t *testing.T) mailstore.Store { return openMaildir(t, t.TempDir()) }},
		{"memstore", func(t *testing.T) mailstore.Store { return memstore.Open(memstore.NewData()) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := source(t)
			want := snap(t, src)
			dst := tc.target(t)
			stop, cancel := context.WithCancel(ctx)
			defer cancel()
			first, err := mailmove.Move(stop, src, dst, mailmove.Options{Users: []string{user}, BatchMessages: 5,
				Progress: func(p mailmove.Progress) {
					if p.Messages >= 10 {
						cancel()
					}
				}})
			if !errors.Is(err, context.Canceled) || first.Messages != 10 {
				t.Fatalf("interrupted move: %+v, %v; want 10 messages and context.Canceled", first, err)
			}
			second, err := mailmove.Move(ctx, src, dst, mailmove.Options{Users: []string{user}, Verify: mailmove.VerifyFull})
			must(t, err)
			total := 0
			for _, f := range want {
				total += len(f.msgs)
			}
			if second.Present != 10 || second.Messages != total-10 {
				t.Fatalf("resumed move: %+v; want 10 present and %d copied", second, total-10)
			}
			if d := want.diff(snap(t, dst)); d != "" {
				t.Fatal(d)
			}
			// Once more: nothing to copy, still verified.
			third, err := mailmove.Move(ctx, src, dst, mailmove.Options{Users: []string{user}})
			must(t, err)
			if third.Messages != 0 || third.Present != total {
				t.Fatalf("third move: %+v", third)
			}
		})
	}
}

// A target folder that holds other mail is refused, never mixed.
func TestRefusesOtherMail(t *testing.T) {
	src := source(t)
	dst := memstore.Open(memstore.NewData())
	f, err := dst.Folder(ctx, user, "")
	must(t, err)
	_, _, err = f.Append(strings.NewReader("x\r\n"), 3, "", time.Time{})
	must(t, err)
	f.Close()
	_, err = mailmove.Move(ctx, src, dst, mailmove.Options{Users: []string{user}})
	if !errors.Is(err, mailstore.ErrNotEmpty) {
		t.Fatalf("move onto an INBOX with other mail: %v, want ErrNotEmpty", err)
	}
}

// Verification finds a target that differs from its source.
func TestVerifyFindsDifference(t *testing.T) {
	src := source(t)
	d := memstore.NewData()
	dst := memstore.Open(d)
	_, err := mailmove.Move(ctx, src, dst, mailmove.Options{Users: []string{user}})
	must(t, err)
	f, err := dst.Folder(ctx, user, "Archive.2024")
	must(t, err)
	l, err := f.List()
	must(t, err)
	must(t, f.SetFlags([]uint32{l.Messages[2].UID}, "F", ""))
	f.Close()
	_, err = mailmove.Move(ctx, src, dst, mailmove.Options{Users: []string{user}})
	var ve *mailmove.VerifyError
	if !errors.Is(err, mailmove.ErrMismatch) || !errors.As(err, &ve) || ve.Folder != "Archive.2024" ||
		len(ve.Problems) != 1 || !strings.Contains(ve.Problems[0], "flags") {
		t.Fatalf("move onto a changed target: %v", err)
	}
}

// The size: a 10k-message user moves Maildir → memstore → Maildir
// with identical UIDs (PostgreSQL: the pgstore test of cmd/agua).
func TestTenThousand(t *testing.T) {
	n := 10000
	if testing.Short() {
		n = 700
	}
	root := t.TempDir()
	fillMaildir(t, root, n)
	src := openMaildir(t, root)
	want := snap(t, src)
	mid := memstore.Open(memstore.NewData())
	_, err := mailmove.Move(ctx, src, mid, mailmove.Options{Users: []string{user}})
	must(t, err)
	back := openMaildir(t, t.TempDir())
	rep, err := mailmove.Move(ctx, mid, back, mailmove.Options{Users: []string{user}})
	must(t, err)
	if d := want.diff(snap(t, back)); d != "" {
		t.Fatal(d)
	}
	if got := len(want[""].msgs); rep.Messages != got || got < n*6/7 {
		t.Fatalf("moved %d messages of %d", rep.Messages, got)
	}
}

// The plain progress lines end with the totals.
func TestPrinter(t *testing.T) {
	var b bytes.Buffer
	p := mailmove.Printer(&b, false, time.Hour)
	p(mailmove.Progress{TotalMessages: 3, TotalBytes: 300, FolderCount: 2})
	p(mailmove.Progress{Messages: 1, TotalMessages: 3, Bytes: 100, TotalBytes: 300, FolderCount: 2, User: user})
	p(mailmove.Progress{Messages: 3, TotalMessages: 3, Bytes: 300, TotalBytes: 300, FoldersDone: 2, FolderCount: 2})
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[1], "migrate: 3/3 messages, 0.0 MiB/0.0 MiB, 2/2 folders in ") {
		t.Fatalf("progress lines: %q", lines)
	}
	// On a terminal: a bar redrawn in place, a line break at the end.
	b.Reset()
	p = mailmove.Printer(&b, true, 0)
	p(mailmove.Progress{Messages: 1, TotalMessages: 2, Bytes: 50, TotalBytes: 100, FolderCount: 1, User: user})
	p(mailmove.Progress{Messages: 2, TotalMessages: 2, Bytes: 100, TotalBytes: 100, FoldersDone: 1, FolderCount: 1})
	out := b.String()
	if !strings.HasPrefix(out, "\r\x1b[K["+strings.Repeat("#", 15)+strings.Repeat(".", 15)+"] 1/2 messages") ||
		!strings.Contains(out, "\r\x1b[K["+strings.Repeat("#", 30)+"] 2/2 messages") || !strings.HasSuffix(out, "\n") {
		t.Fatalf("progress bar: %q", out)
	}
}

// A move carries over whether the user got the default folders: one who
// never logged in over IMAP (a user added just before the move, as the
// README's cluster walkthrough does, or a POP3 user) gets Sent, Trash...
// at the first login after it, as the source would have made them; one
// who got them and deleted one keeps it deleted. The old move marked
// every user's defaults as made, so a user who never logged in had only
// INBOX on PostgreSQL, for good.
func TestMoveCarriesDefaultFolders(t *testing.T) {
	defaults := []string{"Sent", "Trash"}
	for _, tc := range []struct {
		name  string
		login bool // the user got the defaults and deleted Trash before the move
		want  []string
	}{
		{"never logged in", false, []string{"Sent", "Trash"}},
		{"logged in, deleted Trash", true, []string{"Sent"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			fillMaildir(t, root, 3)
			src := openMaildir(t, root)
			if tc.login {
				must(t, src.CreateDefaultFolders(ctx, user, defaults))
				must(t, src.DeleteFolder(ctx, user, "Trash"))
			}
			dst := memstore.Open(memstore.NewData())
			_, err := mailmove.Move(ctx, src, dst, mailmove.Options{Users: []string{user}})
			must(t, err)
			must(t, dst.CreateDefaultFolders(ctx, user, defaults)) // the first IMAP login after the move
			names, err := dst.ListFolders(ctx, user)
			must(t, err)
			if !slices.Equal(names, tc.want) {
				t.Errorf("folders after the first login on the target: %q, want %q", names, tc.want)
			}
			// And back: the target's state is carried to a Maildir.
			back := openMaildir(t, t.TempDir())
			_, err = mailmove.Move(ctx, dst, back, mailmove.Options{Users: []string{user}})
			must(t, err)
			made, err := back.(mailstore.DefaultsKeeper).DefaultFoldersMade(ctx, user)
			if err != nil || !made {
				t.Errorf("moved back: defaults made %v, %v; want true", made, err)
			}
		})
	}
}
