package storetest

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/mailstore"
)

// keeper returns the folder's UIDKeeper: every store must have one.
func keeper(t *testing.T, f mailstore.Folder) mailstore.UIDKeeper {
	t.Helper()
	k, ok := f.(mailstore.UIDKeeper)
	if !ok {
		t.Fatalf("%T is not a mailstore.UIDKeeper", f)
	}
	return k
}

func appendUID(t *testing.T, k mailstore.UIDKeeper, uid uint32, msg, flags string, date time.Time) error {
	t.Helper()
	return k.AppendUID(strings.NewReader(msg), int64(len(msg)), uid, flags, date)
}

// SetUIDs on an empty folder takes the given UIDVALIDITY and UIDNEXT, in
// INBOX and in a folder, durably.
func testSetUIDsEmpty(t *testing.T, e *env) {
	must(t, e.s.CreateFolder(e.ctx, User, "Moved"))
	for _, c := range []struct {
		name           string
		validity, next uint32
	}{{"INBOX", 1234567, 40}, {"Moved", 7, 1}} {
		f := e.folder(User, c.name)
		must(t, keeper(t, f).SetUIDs(c.validity, c.next))
		l := list(t, f)
		if l.UIDValidity != c.validity || l.UIDNext != c.next || len(l.Messages) != 0 {
			t.Fatalf("%s after SetUIDs(%d, %d): UIDVALIDITY %d UIDNEXT %d, %d messages",
				c.name, c.validity, c.next, l.UIDValidity, l.UIDNext, len(l.Messages))
		}
		f.Close()
	}
	e.reopen()
	if l := list(t, e.folder(User, "INBOX")); l.UIDValidity != 1234567 || l.UIDNext != 40 {
		t.Fatalf("INBOX after reopen: UIDVALIDITY %d UIDNEXT %d, want 1234567 40", l.UIDValidity, l.UIDNext)
	}
	if l := list(t, e.folder(User, "Moved")); l.UIDValidity != 7 || l.UIDNext != 1 {
		t.Fatalf("Moved after reopen: UIDVALIDITY %d UIDNEXT %d, want 7 1", l.UIDValidity, l.UIDNext)
	}
}

// AppendUID keeps the UID, flags and internal date; the message is not
// New; only UIDs above every UID in the folder are taken; UIDNEXT follows;
// a resumed move (same UIDVALIDITY) may call SetUIDs again, another
// UIDVALIDITY may not; a plain Append gets UIDNEXT; all of it survives a
// restart.
func testAppendUID(t *testing.T, e *env) {
	const validity = 3000000001
	date := time.Date(2021, 6, 7, 8, 9, 10, 0, time.UTC)
	f := e.folder(User, "")
	k := keeper(t, f)
	must(t, k.SetUIDs(validity, 50))
	must(t, appendUID(t, k, 7, message(7), "SF", date))
	must(t, appendUID(t, k, 9, message(9), "", date.Add(time.Hour)))
	if l := list(t, f); l.UIDNext != 50 {
		t.Fatalf("UIDNEXT %d after AppendUID below it, want 50 kept", l.UIDNext)
	}
	must(t, appendUID(t, k, 60, message(60), "R", date))
	for _, uid := range []uint32{60, 59, 9, 1} {
		if err := appendUID(t, k, uid, message(int(uid)), "", date); !errors.Is(err, mailstore.ErrBadUID) {
			t.Fatalf("AppendUID %d not above 60: %v, want ErrBadUID", uid, err)
		}
	}
	// A resumed move: the same UIDVALIDITY and a UIDNEXT not below.
	must(t, k.SetUIDs(validity, 61))
	must(t, k.SetUIDs(validity, 70))
	for _, c := range []struct{ validity, next uint32 }{{validity + 1, 70}, {1, 70}, {validity, 69}, {validity, 3}} {
		if err := k.SetUIDs(c.validity, c.next); !errors.Is(err, mailstore.ErrNotEmpty) {
			t.Fatalf("SetUIDs(%d, %d) on a folder at %d, 70: %v, want ErrNotEmpty", c.validity, c.next, uint32(validity), err)
		}
	}
	check := func(when string) {
		t.Helper()
		l := list(t, f)
		if l.UIDValidity != validity || l.UIDNext != 70 {
			t.Fatalf("%s: UIDVALIDITY %d UIDNEXT %d, want %d 70", when, l.UIDValidity, l.UIDNext, uint32(validity))
		}
		if got := uidsOf(l); !slices.Equal(got, []uint32{7, 9, 60}) {
			t.Fatalf("%s: UIDs %v, want [7 9 60]", when, got)
		}
		want := map[uint32]string{7: "FS", 9: "", 60: "R"}
		for _, m := range l.Messages {
			if m.New {
				t.Errorf("%s: message %d is New after AppendUID", when, m.UID)
			}
			if m.Flags != want[m.UID] {
				t.Errorf("%s: message %d flags %q, want %q", when, m.UID, m.Flags, want[m.UID])
			}
			if got := read(t, f, m.UID); got != message(int(m.UID)) || m.Size != int64(len(got)) {
				t.Errorf("%s: message %d reads %q (size %d)", when, m.UID, got, m.Size)
			}
		}
		for uid, d := range map[uint32]time.Time{7: date, 9: date.Add(time.Hour)} {
			got, err := f.ModTime(uid)
			must(t, err)
			if !got.Equal(d) {
				t.Errorf("%s: message %d internal date %v, want %v", when, uid, got, d)
			}
		}
	}
	check("after AppendUID")
	f.Close()
	e.reopen()
	f = e.folder(User, "")
	check("after reopen")
	if uid := appendMsg(t, f, message(70), ""); uid != 70 {
		t.Fatalf("Append after the move got UID %d, want UIDNEXT 70", uid)
	}
}

// A UIDBatcher (optional) stores a batch under its UIDs, and refuses one
// that does not ascend or does not start above the folder's UIDs, storing
// nothing of it.
func testAppendUIDs(t *testing.T, e *env) {
	f := e.folder(User, "")
	b, ok := f.(mailstore.UIDBatcher)
	if !ok {
		t.Skipf("%T has no AppendUIDs", f)
	}
	must(t, keeper(t, f).SetUIDs(99, 10))
	batch := func(uids ...uint32) []mailstore.UIDMessage {
		var out []mailstore.UIDMessage
		for _, u := range uids {
			m := message(int(u))
			out = append(out, mailstore.UIDMessage{R: strings.NewReader(m), Size: int64(len(m)), UID: u, Flags: "S"})
		}
		return out
	}
	must(t, b.AppendUIDs(batch(2, 3, 5)))
	for _, bad := range [][]uint32{{4, 6}, {6, 6}, {8, 7}, {5}} {
		if err := b.AppendUIDs(batch(bad...)); !errors.Is(err, mailstore.ErrBadUID) {
			t.Fatalf("AppendUIDs %v on a folder up to 5: %v, want ErrBadUID", bad, err)
		}
	}
	e.reopen()
	f = e.folder(User, "")
	l := list(t, f)
	if got := uidsOf(l); !slices.Equal(got, []uint32{2, 3, 5}) || l.UIDValidity != 99 || l.UIDNext != 10 {
		t.Fatalf("after AppendUIDs: UIDs %v UIDVALIDITY %d UIDNEXT %d, want [2 3 5] 99 10", got, l.UIDValidity, l.UIDNext)
	}
	for _, m := range l.Messages {
		if m.Flags != "S" || m.New || read(t, f, m.UID) != message(int(m.UID)) {
			t.Errorf("message %d: flags %q New %v", m.UID, m.Flags, m.New)
		}
	}
}
