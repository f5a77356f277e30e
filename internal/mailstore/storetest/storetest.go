// Package storetest is the conformance suite of the mail-store contract
// (internal/mailstore): every store runs Run in its own tests, so a new one
// (PostgreSQL) behaves as Maildir does for everything POP3 and IMAP rely
// on: folders, UIDs and UIDVALIDITY that survive a restart and are the
// same for every session and protocol, flags, copies that keep flags,
// expunge, quota usage over all folders, concurrent appends, change stamps
// and the exclusive maildrop lock, and the UIDKeeper a move between stores
// uses (UIDs, UIDVALIDITY, flags and dates kept). It checks behaviour through the
// interfaces only, never a store's internals.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/mailstore"
)

// Env is one empty store for one test of the suite.
type Env struct {
	// Open opens the store. Called again after the previous store was
	// closed, it must see the same data, as a restarted server does.
	Open func(t *testing.T) (store mailstore.Store, close func())
	// Deliver puts msg into user's INBOX as SMTP's final delivery does:
	// a new message without flags. Called only while a store is open.
	Deliver func(t *testing.T, user, msg string)
	// OpenNode opens another store on the same data while the first is
	// open, as a second node of a cluster does, with its own delivery.
	// Nil for a store that lives on one machine (Maildir): the cases of
	// several nodes are skipped.
	OpenNode func(t *testing.T) (store mailstore.Store, deliver func(t *testing.T, user, msg string), close func())
}

// NewFunc makes the Env of one test.
type NewFunc func(t *testing.T) Env

// User is the mailbox the suite works in; Other is a second one.
const (
	User  = "alice@example.test"
	Other = "bob@example.test"
)

type env struct {
	Env
	t     *testing.T
	ctx   context.Context
	s     mailstore.Store
	close func()
}

// reopen closes the store and opens it again: a restart.
func (e *env) reopen() {
	e.t.Helper()
	e.close()
	e.s, e.close = e.Open(e.t)
}

// Run runs the conformance suite against stores made by newEnv. The tests
// run in parallel, each on its own Env.
func Run(t *testing.T, newEnv NewFunc) {
	for _, c := range []struct {
		name string
		f    func(*testing.T, *env)
	}{
		{"Inbox", testInbox},
		{"Folders", testFolders},
		{"AppendOpen", testAppendOpen},
		{"UIDsStableAcrossReopen", testUIDsStable},
		{"SameUIDsForEverySession", testSameUIDs},
		{"Flags", testFlags},
		{"MarkSeen", testMarkSeen},
		{"CopyKeepsFlags", testCopy},
		{"Delete", testDelete},
		{"UsageCountsAllFolders", testUsage},
		{"ConcurrentAppend", testConcurrentAppend},
		{"LockIsExclusive", testLock},
		{"Stamp", testStamp},
		{"NodesShareUIDs", testNodesShareUIDs},
		{"NodesShareLock", testNodesShareLock},
		{"NodesSeeChanges", testNodesSeeChanges},
		{"SetUIDsEmpty", testSetUIDsEmpty},
		{"AppendUID", testAppendUID},
		{"AppendUIDs", testAppendUIDs},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel() // Stamp waits for the clock; the others need not wait for it
			e := &env{Env: newEnv(t), t: t, ctx: context.Background()}
			e.s, e.close = e.Open(t)
			t.Cleanup(func() { e.close() })
			c.f(t, e)
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (e *env) folder(user, name string) mailstore.Folder {
	e.t.Helper()
	f, err := e.s.Folder(e.ctx, user, name)
	must(e.t, err)
	e.t.Cleanup(func() { f.Close() })
	return f
}

func list(t *testing.T, f mailstore.Folder) mailstore.Listing {
	t.Helper()
	l, err := f.List()
	must(t, err)
	for i := 1; i < len(l.Messages); i++ {
		if l.Messages[i-1].UID >= l.Messages[i].UID {
			t.Fatalf("listing not ascending by UID: %+v", l.Messages)
		}
	}
	return l
}

func uidsOf(l mailstore.Listing) []uint32 {
	out := make([]uint32, len(l.Messages))
	for i, m := range l.Messages {
		out[i] = m.UID
	}
	return out
}

func flagsOf(l mailstore.Listing) map[uint32]string {
	out := map[uint32]string{}
	for _, m := range l.Messages {
		out[m.UID] = m.Flags
	}
	return out
}

func appendMsg(t *testing.T, f mailstore.Folder, msg, flags string) uint32 {
	t.Helper()
	uid, _, err := f.Append(strings.NewReader(msg), int64(len(msg)), flags, time.Time{})
	must(t, err)
	return uid
}

func message(n int) string {
	return fmt.Sprintf("Subject: message %d\r\nFrom: a@example.test\r\n\r\nbody of message %d\r\n", n, n)
}

func read(t *testing.T, f mailstore.Folder, uid uint32) string {
	t.Helper()
	rc, size, err := f.Open(uid)
	must(t, err)
	defer rc.Close()
	b, err := io.ReadAll(rc)
	must(t, err)
	if int64(len(b)) != size {
		t.Fatalf("message %d: Open says %d bytes, read %d", uid, size, len(b))
	}
	return string(b)
}

// INBOX exists for a user never seen before, under "" and "INBOX" in any
// case, and is not among the listed folders.
func testInbox(t *testing.T, e *env) {
	for _, name := range []string{"", "INBOX", "inbox", "InBoX"} {
		f := e.folder(User, name)
		if l := list(t, f); len(l.Messages) != 0 || l.UIDValidity == 0 {
			t.Fatalf("%q of a new user: %+v", name, l)
		}
	}
	e.Deliver(t, User, message(1))
	a, b := list(t, e.folder(User, "")), list(t, e.folder(User, "INBOX"))
	if len(a.Messages) != 1 || !slices.Equal(uidsOf(a), uidsOf(b)) || a.UIDValidity != b.UIDValidity {
		t.Fatalf(`"" and INBOX differ: %+v %+v`, a, b)
	}
	names, err := e.s.ListFolders(e.ctx, User)
	must(t, err)
	if len(names) != 0 {
		t.Fatalf("folders of a user with only INBOX: %q", names)
	}
	if err := e.s.DeleteFolder(e.ctx, User, "INBOX"); !errors.Is(err, mailstore.ErrBadFolder) {
		t.Fatalf("DeleteFolder(INBOX): %v, want ErrBadFolder", err)
	}
}

func testFolders(t *testing.T, e *env) {
	ctx := e.ctx
	for _, n := range []string{"Sent", "Archive", "Archive.2024", "Trash"} {
		must(t, e.s.CreateFolder(ctx, User, n))
	}
	if err := e.s.CreateFolder(ctx, User, "Sent"); !errors.Is(err, mailstore.ErrFolderExists) {
		t.Fatalf("creating Sent twice: %v, want ErrFolderExists", err)
	}
	for _, bad := range []string{"a..b", ".a", "a.", "a/b"} {
		if err := e.s.CreateFolder(ctx, User, bad); !errors.Is(err, mailstore.ErrBadFolder) {
			t.Fatalf("CreateFolder(%q): %v, want ErrBadFolder", bad, err)
		}
	}
	names, err := e.s.ListFolders(ctx, User)
	must(t, err)
	if want := []string{"Archive", "Archive.2024", "Sent", "Trash"}; !slices.Equal(names, want) {
		t.Fatalf("ListFolders = %q, want %q", names, want)
	}
	if other, err := e.s.ListFolders(ctx, Other); err != nil || len(other) != 0 {
		t.Fatalf("another user's folders: %q %v", other, err)
	}
	if _, err := e.s.Folder(ctx, User, "Nope"); !errors.Is(err, mailstore.ErrNoFolder) {
		t.Fatalf("Folder(Nope): %v, want ErrNoFolder", err)
	}
	if _, err := e.s.Folder(ctx, Other, "Sent"); !errors.Is(err, mailstore.ErrNoFolder) {
		t.Fatalf("another user's Sent: %v, want ErrNoFolder", err)
	}

	// A rename keeps messages, UIDs and UIDVALIDITY, and takes the
	// folders below along.
	arch := e.folder(User, "Archive")
	uid := appendMsg(t, arch, message(1), "S")
	before := list(t, arch)
	must(t, e.s.RenameFolder(ctx, User, "Archive", "Old"))
	if _, _, err := arch.Stamp(); !errors.Is(err, mailstore.ErrNoFolder) {
		t.Fatalf("Stamp of a renamed folder under its old name: %v, want ErrNoFolder", err)
	}
	names, err = e.s.ListFolders(ctx, User)
	must(t, err)
	if want := []string{"Old", "Old.2024", "Sent", "Trash"}; !slices.Equal(names, want) {
		t.Fatalf("after rename: %q, want %q", names, want)
	}
	old := e.folder(User, "Old")
	after := list(t, old)
	if after.UIDValidity != before.UIDValidity || !slices.Equal(uidsOf(after), []uint32{uid}) || read(t, old, uid) != message(1) {
		t.Fatalf("renamed folder: before %+v, after %+v", before, after)
	}
	if err := e.s.RenameFolder(ctx, User, "Nope", "X"); !errors.Is(err, mailstore.ErrNoFolder) {
		t.Fatalf("renaming a missing folder: %v", err)
	}
	if err := e.s.RenameFolder(ctx, User, "Old", "Sent"); !errors.Is(err, mailstore.ErrFolderExists) {
		t.Fatalf("renaming onto Sent: %v", err)
	}
	if err := e.s.RenameFolder(ctx, User, "Old", "Old.x"); !errors.Is(err, mailstore.ErrBadFolder) {
		t.Fatalf("renaming below itself: %v", err)
	}

	// A Folder open while its folder is renamed or deleted says so
	// (an IMAP session selecting it ends).
	old2024 := e.folder(User, "Old.2024")
	must(t, e.s.CreateFolder(ctx, User, "Gone"))
	gone := e.folder(User, "Gone")
	must(t, e.s.DeleteFolder(ctx, User, "Gone"))
	if _, _, err := gone.Stamp(); !errors.Is(err, mailstore.ErrNoFolder) {
		t.Fatalf("Stamp of a deleted folder: %v, want ErrNoFolder", err)
	}
	// Deleting a folder keeps the folders below it.
	must(t, e.s.DeleteFolder(ctx, User, "Old"))
	if _, _, err := old.Stamp(); !errors.Is(err, mailstore.ErrNoFolder) {
		t.Fatalf("Stamp of a deleted folder: %v, want ErrNoFolder", err)
	}
	if _, _, err := old2024.Stamp(); err != nil {
		t.Fatalf("Stamp of the folder below a deleted one: %v", err)
	}
	if err := e.s.DeleteFolder(ctx, User, "Old"); !errors.Is(err, mailstore.ErrNoFolder) {
		t.Fatalf("deleting twice: %v", err)
	}
	names, err = e.s.ListFolders(ctx, User)
	must(t, err)
	if want := []string{"Old.2024", "Sent", "Trash"}; !slices.Equal(names, want) {
		t.Fatalf("after delete: %q, want %q", names, want)
	}

	// Default folders are made once: one deleted later stays deleted.
	// DefaultFoldersMade says whether they were (agua migrate carries it).
	dk, ok := e.s.(mailstore.DefaultsKeeper)
	if !ok {
		t.Fatal("the store is no mailstore.DefaultsKeeper")
	}
	if made, err := dk.DefaultFoldersMade(ctx, Other); err != nil || made {
		t.Fatalf("DefaultFoldersMade before CreateDefaultFolders: %v %v, want false", made, err)
	}
	must(t, e.s.CreateDefaultFolders(ctx, Other, []string{"Drafts", "Sent"}))
	if made, err := dk.DefaultFoldersMade(ctx, Other); err != nil || !made {
		t.Fatalf("DefaultFoldersMade after CreateDefaultFolders: %v %v, want true", made, err)
	}
	must(t, e.s.DeleteFolder(ctx, Other, "Drafts"))
	must(t, e.s.CreateDefaultFolders(ctx, Other, []string{"Drafts", "Sent"}))
	if names, err := e.s.ListFolders(ctx, Other); err != nil || !slices.Equal(names, []string{"Sent"}) {
		t.Fatalf("default folders after deleting Drafts: %q %v", names, err)
	}
}

func testAppendOpen(t *testing.T, e *env) {
	must(t, e.s.CreateFolder(e.ctx, User, "Sent"))
	f := e.folder(User, "Sent")
	date := time.Date(2024, 3, 1, 12, 30, 0, 0, time.UTC)
	msg := message(1)
	uid, validity, err := f.Append(strings.NewReader(msg), int64(len(msg)), "SF", date)
	must(t, err)
	l := list(t, f)
	if l.UIDValidity != validity || uid == 0 || l.UIDNext <= uid {
		t.Fatalf("Append = %d/%d, listing %+v", uid, validity, l)
	}
	if want := (mailstore.Message{UID: uid, Size: int64(len(msg)), Flags: "FS"}); len(l.Messages) != 1 || l.Messages[0] != want {
		t.Fatalf("listing %+v, want %+v", l.Messages, want)
	}
	if got := read(t, f, uid); got != msg {
		t.Fatalf("content %q", got)
	}
	rc, _, err := f.Open(uid)
	must(t, err)
	defer rc.Close()
	if _, err := rc.Seek(9, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(rc); err != nil || string(b) != msg[9:] {
		t.Fatalf("after Seek(9): %q %v", b, err)
	}
	if mt, err := f.ModTime(uid); err != nil || !mt.Equal(date) {
		t.Fatalf("ModTime = %v %v, want %v", mt, err, date)
	}
	if mt, err := f.ModTime(appendMsg(t, f, message(2), "")); err != nil || time.Since(mt) > time.Hour || time.Since(mt) < -time.Hour {
		t.Fatalf("ModTime without a date = %v %v, want about now", mt, err)
	}
	if _, _, err := f.Open(uid + 100); !errors.Is(err, mailstore.ErrNoMessage) {
		t.Fatalf("Open of an unknown UID: %v", err)
	}
	if _, err := f.ModTime(uid + 100); !errors.Is(err, mailstore.ErrNoMessage) {
		t.Fatalf("ModTime of an unknown UID: %v", err)
	}
	// A message shorter than announced is refused and not stored.
	if _, _, err := f.Append(strings.NewReader("short"), 100, "", time.Time{}); err == nil {
		t.Fatal("Append of 5 bytes announced as 100 succeeded")
	}
	if n := len(list(t, f).Messages); n != 2 {
		t.Fatalf("%d messages after a failed append, want 2", n)
	}
}

// UIDs and UIDVALIDITY survive a restart; a UID is never given twice,
// not even that of a message expunged before the restart.
func testUIDsStable(t *testing.T, e *env) {
	for i := range 3 {
		e.Deliver(t, User, message(i))
	}
	must(t, e.s.CreateFolder(e.ctx, User, "Sent"))
	sent := e.folder(User, "Sent")
	appendMsg(t, sent, message(9), "S")
	sentBefore := list(t, sent)
	sent.Close()
	inbox := e.folder(User, "")
	before := list(t, inbox)
	last := before.Messages[2].UID
	must(t, inbox.Delete([]uint32{last}))
	inbox.Close()

	e.reopen()
	inbox = e.folder(User, "")
	after := list(t, inbox)
	if after.UIDValidity != before.UIDValidity || !slices.Equal(uidsOf(after), uidsOf(before)[:2]) {
		t.Fatalf("INBOX before restart %+v, after %+v", before, after)
	}
	for i, m := range after.Messages {
		if got := read(t, inbox, m.UID); got != message(i) {
			t.Fatalf("UID %d holds %q after restart", m.UID, got)
		}
	}
	if s := list(t, e.folder(User, "Sent")); s.UIDValidity != sentBefore.UIDValidity || !slices.Equal(uidsOf(s), uidsOf(sentBefore)) {
		t.Fatalf("Sent before restart %+v, after %+v", sentBefore, s)
	}
	e.Deliver(t, User, message(3))
	l := list(t, inbox)
	if n := len(l.Messages); n != 3 || l.Messages[2].UID <= last {
		t.Fatalf("new message after restart got UID %d, an expunged one had %d", l.Messages[n-1].UID, last)
	}
}

// A POP3 session (holding the maildrop lock) and IMAP sessions (any number
// of Folders) see the same UIDs: POP3's UIDL and IMAP's UID name the same
// message.
func testSameUIDs(t *testing.T, e *env) {
	for i := range 3 {
		e.Deliver(t, User, message(i))
	}
	pop := e.folder(User, "")
	unlock, err := pop.Lock()
	must(t, err)
	defer unlock()
	imap := e.folder(User, "INBOX")
	a, b := list(t, pop), list(t, imap)
	if a.UIDValidity != b.UIDValidity || !slices.Equal(uidsOf(a), uidsOf(b)) {
		t.Fatalf("maildrop %+v, IMAP %+v", a, b)
	}
	for i, m := range a.Messages {
		if read(t, pop, m.UID) != message(i) || read(t, imap, m.UID) != message(i) {
			t.Fatalf("UID %d is not message %d for both", m.UID, i)
		}
	}
	// An IMAP append while the maildrop is locked is seen by both.
	uid := appendMsg(t, imap, message(3), "")
	if l := list(t, pop); l.Messages[len(l.Messages)-1].UID != uid {
		t.Fatalf("maildrop does not see UID %d: %+v", uid, l)
	}
}

func testFlags(t *testing.T, e *env) {
	f := e.folder(User, "")
	a := appendMsg(t, f, message(1), "")
	b := appendMsg(t, f, message(2), "S")
	must(t, f.SetFlags([]uint32{a, b, b + 100}, "TS", ""))
	must(t, f.SetFlags([]uint32{b}, "F", "S"))
	got := flagsOf(list(t, f))
	if got[a] != "ST" || got[b] != "FT" {
		t.Fatalf("flags %v, want %d:ST %d:FT", got, a, b)
	}
	must(t, f.SetFlags([]uint32{a}, "", "ST"))
	must(t, f.SetFlags([]uint32{b}, "DRF", "")) // F already set: no repeat
	other := e.folder(User, "INBOX")
	got = flagsOf(list(t, other))
	if got[a] != "" || got[b] != "DFRT" {
		t.Fatalf("flags seen by another Folder %v, want %d: %d:DFRT", got, a, b)
	}
	e.reopen()
	if got := flagsOf(list(t, e.folder(User, ""))); got[a] != "" || got[b] != "DFRT" {
		t.Fatalf("flags after restart %v", got)
	}
}

// A delivered message is New until a client saw a listing (MarkSeen),
// without the S flag; SetFlags also ends New.
func testMarkSeen(t *testing.T, e *env) {
	e.Deliver(t, User, message(1))
	e.Deliver(t, User, message(2))
	f := e.folder(User, "")
	l := list(t, f)
	for _, m := range l.Messages {
		if !m.New || m.Flags != "" {
			t.Fatalf("delivered message %+v, want New without flags", m)
		}
	}
	a, b := l.Messages[0].UID, l.Messages[1].UID
	must(t, f.MarkSeen([]uint32{a, b + 100}))
	must(t, f.SetFlags([]uint32{b}, "F", ""))
	l = list(t, f)
	if want := []mailstore.Message{{UID: a, Size: l.Messages[0].Size}, {UID: b, Size: l.Messages[1].Size, Flags: "F"}}; !slices.Equal(l.Messages, want) {
		t.Fatalf("after MarkSeen and SetFlags %+v, want %+v", l.Messages, want)
	}
	if read(t, f, a) != message(1) || read(t, f, b) != message(2) {
		t.Fatal("content changed by MarkSeen or SetFlags")
	}
	if appended := appendMsg(t, f, message(3), ""); list(t, f).Messages[2].New {
		t.Fatalf("appended message %d is New", appended)
	}
}

func testCopy(t *testing.T, e *env) {
	must(t, e.s.CreateFolder(e.ctx, User, "Archive"))
	src := e.folder(User, "")
	dst := e.folder(User, "Archive")
	a := appendMsg(t, src, message(1), "FS")
	b := appendMsg(t, src, message(2), "")
	c := appendMsg(t, src, message(3), "RT")
	existing := appendMsg(t, dst, message(0), "")
	from, to, validity, err := src.CopyTo(dst, []uint32{a, c, c + 100})
	must(t, err)
	dl := list(t, dst)
	if validity != dl.UIDValidity || !slices.Equal(from, []uint32{a, c}) || len(to) != 2 || to[0] <= existing || to[1] <= to[0] {
		t.Fatalf("CopyTo = %v %v %d; destination %+v", from, to, validity, dl)
	}
	dflags := flagsOf(dl)
	if dflags[to[0]] != "FS" || dflags[to[1]] != "RT" {
		t.Fatalf("copies' flags %v, want FS and RT", dflags)
	}
	if read(t, dst, to[0]) != message(1) || read(t, dst, to[1]) != message(3) {
		t.Fatal("copies' content differs")
	}
	// The copies are messages of their own.
	must(t, dst.SetFlags([]uint32{to[0]}, "D", "S"))
	must(t, src.Delete([]uint32{c}))
	if sf := flagsOf(list(t, src)); sf[a] != "FS" || len(sf) != 2 || sf[b] != "" {
		t.Fatalf("source after editing the copies: %v", sf)
	}
	if read(t, dst, to[1]) != message(3) {
		t.Fatal("copy gone with its source")
	}
	// Nothing to copy: no UIDs, but the destination's UIDVALIDITY.
	from, to, validity, err = src.CopyTo(dst, []uint32{c})
	if err != nil || len(from) != 0 || len(to) != 0 || validity != dl.UIDValidity {
		t.Fatalf("copy of an expunged message: %v %v %d %v", from, to, validity, err)
	}
}

func testDelete(t *testing.T, e *env) {
	f := e.folder(User, "")
	var uids []uint32
	for i := range 4 {
		uids = append(uids, appendMsg(t, f, message(i), ""))
	}
	before, err := e.s.Usage(e.ctx, User)
	must(t, err)
	other := e.folder(User, "INBOX")
	list(t, other)
	must(t, f.Delete([]uint32{uids[1], uids[3], uids[3] + 100}))
	if got := uidsOf(list(t, other)); !slices.Equal(got, []uint32{uids[0], uids[2]}) {
		t.Fatalf("after Delete another Folder lists %v", got)
	}
	if _, _, err := other.Open(uids[1]); !errors.Is(err, mailstore.ErrNoMessage) {
		t.Fatalf("Open of an expunged message: %v", err)
	}
	after, err := e.s.Usage(e.ctx, User)
	must(t, err)
	if want := before - int64(len(message(1))+len(message(3))); after != want {
		t.Fatalf("usage %d after deleting, want %d", after, want)
	}
	must(t, f.Delete([]uint32{uids[1]})) // already gone: skipped
}

func testUsage(t *testing.T, e *env) {
	if u, err := e.s.Usage(e.ctx, User); err != nil || u != 0 {
		t.Fatalf("usage of a new user %d %v", u, err)
	}
	e.Deliver(t, User, message(1))
	for _, n := range []string{"Sent", "Archive.2024"} {
		must(t, e.s.CreateFolder(e.ctx, User, n))
		appendMsg(t, e.folder(User, n), message(2), "S")
	}
	inbox := list(t, e.folder(User, ""))
	want := inbox.Messages[0].Size + 2*int64(len(message(2)))
	if u, err := e.s.Usage(e.ctx, User); err != nil || u != want {
		t.Fatalf("usage %d %v, want %d (INBOX and both folders)", u, err, want)
	}
	if u, err := e.s.Usage(e.ctx, Other); err != nil || u != 0 {
		t.Fatalf("another user's usage %d %v", u, err)
	}
	e.reopen()
	if u, err := e.s.Usage(e.ctx, User); err != nil || u != want {
		t.Fatalf("usage after restart %d %v, want %d", u, err, want)
	}
}

// Appends from many sessions at once each get a UID of their own, and
// every message is listed once with its own content.
func testConcurrentAppend(t *testing.T, e *env) {
	const n = 16
	var wg sync.WaitGroup
	uids := make([]uint32, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			f, err := e.s.Folder(e.ctx, User, "")
			if err != nil {
				errs[i] = err
				return
			}
			defer f.Close()
			msg := message(i)
			uids[i], _, errs[i] = f.Append(strings.NewReader(msg), int64(len(msg)), "", time.Time{})
		})
	}
	wg.Wait()
	must(t, errors.Join(errs...))
	f := e.folder(User, "")
	l := list(t, f)
	sorted := slices.Sorted(slices.Values(uids))
	if !slices.Equal(uidsOf(l), slices.Compact(slices.Clone(sorted))) || len(l.Messages) != n {
		t.Fatalf("appended UIDs %v, listed %v", sorted, uidsOf(l))
	}
	for i, uid := range uids {
		if read(t, f, uid) != message(i) {
			t.Fatalf("UID %d does not hold message %d", uid, i)
		}
	}
}

// One maildrop lock per folder (RFC 1939 8): a second session gets
// ErrLocked until the first releases it, by unlock or by Close; other
// folders and users are not affected.
func testLock(t *testing.T, e *env) {
	a := e.folder(User, "")
	unlock, err := a.Lock()
	must(t, err)
	b := e.folder(User, "INBOX")
	if _, err := b.Lock(); !errors.Is(err, mailstore.ErrLocked) {
		t.Fatalf("second Lock: %v, want ErrLocked", err)
	}
	if _, err := a.Lock(); !errors.Is(err, mailstore.ErrLocked) {
		t.Fatalf("second Lock by the holder: %v, want ErrLocked", err)
	}
	ob, err := e.folder(Other, "").Lock()
	must(t, err)
	ob()
	unlock()
	unlock() // twice is harmless
	if _, err := b.Lock(); err != nil {
		t.Fatalf("Lock after the holder's unlock: %v", err)
	}
	if _, err := a.Lock(); !errors.Is(err, mailstore.ErrLocked) {
		t.Fatalf("Lock after another took it: %v", err)
	}
	must(t, b.Close()) // Close releases the lock
	c := e.folder(User, "")
	uc, err := c.Lock()
	must(t, err)
	uc()
}

// An unchanged folder's stamp, once settled, stays equal; adding,
// re-flagging or removing a message changes it (or unsettles it).
func testStamp(t *testing.T, e *env) {
	f := e.folder(User, "")
	a := appendMsg(t, f, message(1), "")
	settle := func(what string) mailstore.Stamp {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			st, settled, err := f.Stamp()
			must(t, err)
			if settled {
				again, settled, err := f.Stamp()
				must(t, err)
				if !settled || again != st {
					t.Fatalf("%s: settled stamp changed without a change to the folder", what)
				}
				return st
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: stamp not settled after 30 s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	changed := func(what string, before mailstore.Stamp) {
		t.Helper()
		st, settled, err := f.Stamp()
		must(t, err)
		if settled && st == before {
			t.Fatalf("stamp settled and unchanged after %s", what)
		}
	}
	st := settle("after append")
	b := appendMsg(t, f, message(2), "")
	changed("an append", st)
	st = settle("after second append")
	must(t, f.SetFlags([]uint32{a}, "S", ""))
	changed("a flag change", st)
	st = settle("after flag change")
	must(t, f.Delete([]uint32{b}))
	changed("an expunge", st)
	other := e.folder(User, "INBOX")
	if _, _, err := other.Stamp(); err != nil {
		t.Fatal(err)
	}
}

// node is a second store on the same data (another node of a cluster).
type node struct {
	s       mailstore.Store
	deliver func(t *testing.T, user, msg string)
}

func (e *env) node() *node {
	e.t.Helper()
	if e.OpenNode == nil {
		e.t.Skip("the store lives on one machine: no second node")
	}
	s, deliver, close := e.OpenNode(e.t)
	e.t.Cleanup(close)
	return &node{s: s, deliver: deliver}
}

func (n *node) folder(t *testing.T, user, name string) mailstore.Folder {
	t.Helper()
	f, err := n.s.Folder(context.Background(), user, name)
	must(t, err)
	t.Cleanup(func() { f.Close() })
	return f
}

// Deliveries and appends on two nodes at once each get a UID of their own;
// both nodes list the same messages under the same UIDs and UIDVALIDITY,
// and the usage counts every one.
func testNodesShareUIDs(t *testing.T, e *env) {
	b := e.node()
	const n = 12
	var wg sync.WaitGroup
	errs := make([]error, 4*n)
	for i := range n {
		wg.Go(func() { e.Deliver(t, User, message(i)) })
		wg.Go(func() { b.deliver(t, User, message(n+i)) })
		for j, s := range []mailstore.Store{e.s, b.s} {
			k := (2+j)*n + i
			wg.Go(func() {
				f, err := s.Folder(e.ctx, User, "")
				if err != nil {
					errs[k] = err
					return
				}
				defer f.Close()
				msg := message(k)
				_, _, errs[k] = f.Append(strings.NewReader(msg), int64(len(msg)), "S", time.Time{})
			})
		}
	}
	wg.Wait()
	must(t, errors.Join(errs...))
	la, lb := list(t, e.folder(User, "")), list(t, b.folder(t, User, ""))
	if len(la.Messages) != 4*n || la.UIDValidity != lb.UIDValidity || !slices.Equal(uidsOf(la), uidsOf(lb)) {
		t.Fatalf("node A lists %d messages %v (validity %d), node B %v (validity %d)", len(la.Messages), uidsOf(la), la.UIDValidity, uidsOf(lb), lb.UIDValidity)
	}
	seen := map[string]bool{}
	fb := b.folder(t, User, "")
	var total int64
	for _, m := range la.Messages {
		body := read(t, fb, m.UID)
		if seen[body] {
			t.Fatalf("UID %d holds a message stored twice", m.UID)
		}
		seen[body] = true
		total += m.Size
	}
	for _, s := range []mailstore.Store{e.s, b.s} {
		if u, err := s.Usage(e.ctx, User); err != nil || u != total {
			t.Fatalf("usage %d %v, want %d", u, err, total)
		}
	}
}

// The maildrop lock holds across nodes (RFC 1939 8: one POP3 session per
// maildrop, whichever node it is on), and is free again once the holder
// unlocks or closes.
func testNodesShareLock(t *testing.T, e *env) {
	b := e.node()
	a := e.folder(User, "")
	unlock, err := a.Lock()
	must(t, err)
	fb := b.folder(t, User, "")
	if _, err := fb.Lock(); !errors.Is(err, mailstore.ErrLocked) {
		t.Fatalf("Lock on node B while node A holds it: %v, want ErrLocked", err)
	}
	unlock()
	if _, err := fb.Lock(); err != nil {
		t.Fatalf("Lock on node B after node A unlocked: %v", err)
	}
	if _, err := a.Lock(); !errors.Is(err, mailstore.ErrLocked) {
		t.Fatalf("Lock on node A while node B holds it: %v, want ErrLocked", err)
	}
	must(t, fb.Close()) // Close releases it
	ua, err := a.Lock()
	must(t, err)
	ua()
}

// A change on one node reaches a Folder open on the other (IMAP IDLE on
// node B sees a delivery on node A): its stamp changes or is unsettled,
// within a bounded wait; a rename there ends it (ErrNoFolder).
func testNodesSeeChanges(t *testing.T, e *env) {
	b := e.node()
	must(t, e.s.CreateFolder(e.ctx, User, "Work"))
	fb := b.folder(t, User, "")
	wb := b.folder(t, User, "Work")
	// waitChange polls f as IDLE does until its stamp differs from
	// before or is unsettled.
	waitChange := func(what string, f mailstore.Folder, before mailstore.Stamp) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			st, settled, err := f.Stamp()
			must(t, err)
			if !settled || st != before {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("node B's stamp unchanged 30 s after %s on node A", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	settled := func(f mailstore.Folder) mailstore.Stamp {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			st, ok, err := f.Stamp()
			must(t, err)
			if ok {
				return st
			}
			if time.Now().After(deadline) {
				t.Fatal("stamp not settled after 30 s")
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	st := settled(fb)
	e.Deliver(t, User, message(1))
	waitChange("a delivery", fb, st)
	l := list(t, fb)
	if len(l.Messages) != 1 || read(t, fb, l.Messages[0].UID) != message(1) {
		t.Fatalf("node B lists %+v after a delivery on node A", l)
	}
	st = settled(fb)
	fa := e.folder(User, "")
	must(t, fa.SetFlags([]uint32{l.Messages[0].UID}, "S", ""))
	waitChange("a flag change", fb, st)
	if got := flagsOf(list(t, fb))[l.Messages[0].UID]; got != "S" {
		t.Fatalf("node B sees flags %q after node A set S", got)
	}
	st = settled(fb)
	must(t, fa.Delete([]uint32{l.Messages[0].UID}))
	waitChange("an expunge", fb, st)
	if l := list(t, fb); len(l.Messages) != 0 {
		t.Fatalf("node B lists %+v after an expunge on node A", l)
	}

	settled(wb)
	must(t, e.s.RenameFolder(e.ctx, User, "Work", "Play"))
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, _, err := wb.Stamp()
		if errors.Is(err, mailstore.ErrNoFolder) {
			break
		}
		must(t, err)
		if time.Now().After(deadline) {
			t.Fatal("node B's Folder of a folder renamed on node A still answers after 30 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Contents returns the content of every message of a user's folder in
// UID order, for tests that check what a server stored.
func Contents(t testing.TB, s mailstore.Store, user, folder string) []string {
	t.Helper()
	f, err := s.Folder(context.Background(), user, folder)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	l, err := f.List()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(l.Messages))
	for i, m := range l.Messages {
		rc, _, err := f.Open(m.UID)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		out[i] = string(b)
	}
	return out
}
