package maildir

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/agua-mail/agua/internal/mailstore"
)

func uidMessages(uids ...uint32) []mailstore.UIDMessage {
	var out []mailstore.UIDMessage
	for _, u := range uids {
		m := "Subject: moved\r\n\r\nbody\r\n"
		out = append(out, mailstore.UIDMessage{R: strings.NewReader(m), Size: int64(len(m)), UID: u, Flags: "S"})
	}
	return out
}

// A crash after AppendUIDs wrote the UIDs to agua-uidlist but before its
// files reached cur/ leaves UIDs without files: the next store drops them,
// so the folder's highest UID is the last message really stored and a
// resumed move appends the lost ones again under the same UIDs.
func TestAppendUIDsCrashBeforeRename(t *testing.T) {
	s := openTest(t)
	f := openFolder(t, s, box, "")
	if err := f.SetUIDs(500, 100); err != nil {
		t.Fatal(err)
	}
	if err := f.AppendUIDs(uidMessages(3, 4)); err != nil {
		t.Fatal(err)
	}
	// The state of the crash: UIDs 7 and 9 listed in the index, their
	// files still in tmp/.
	path := filepath.Join(f.ix.dir, uidlistName)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data = append(data, "7 1600000000.M1P1Q1.lost,S=25\n9 1600000000.M1P1Q2.lost,S=25\n"...)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f.Close()
	s.Close()

	s2, err := Open(s.root, Options{Hostname: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	f2 := openFolder(t, s2, box, "")
	l := list(t, f2)
	if got := uids(l); !slices.Equal(got, []uint32{3, 4}) || l.UIDValidity != 500 || l.UIDNext != 100 {
		t.Fatalf("after the crash: UIDs %v UIDVALIDITY %d UIDNEXT %d, want [3 4] 500 100", got, l.UIDValidity, l.UIDNext)
	}
	if err := f2.AppendUIDs(uidMessages(7, 9)); err != nil {
		t.Fatalf("resuming with the lost UIDs: %v", err)
	}
	if got := uids(list(t, f2)); !slices.Equal(got, []uint32{3, 4, 7, 9}) {
		t.Fatalf("after resuming: UIDs %v", got)
	}
}
