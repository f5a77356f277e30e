package maildir

import (
	"log/slog"
	"testing"
)

// FuzzParseUIDList: a damaged agua-uidlist is refused or read into a sane
// index (ascending UIDs below the next UID, unique keys), never a panic.
func FuzzParseUIDList(f *testing.F) {
	for _, s := range []string{
		"agua-uidlist 1 V1700000000 N4\n1 a\n2 b\n3 c\n",
		"agua-uidlist 1 V1 N1\n",
		"agua-uidlist 1 V1 N3\n2 a\n1 b\n",
		"agua-uidlist 1 V1 N3\n1 a\n2 a\n",
		"agua-uidlist 1 V0 N3\n",
		"agua-uidlist 1 V4294967295 N4294967295\n4294967294 k\n",
		"agua-uidlist 1 V1 N9\n5 key with spaces\n6 x",
		"dovecot-uidlist 3 V1 N2\n1 :a\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ix := &index{dir: "/nonexistent", log: slog.New(slog.DiscardHandler), keys: map[string]*entry{}}
		if _, err := ix.parse(data); err != nil {
			return
		}
		if ix.validity == 0 || ix.next == 0 {
			t.Fatalf("accepted V%d N%d", ix.validity, ix.next)
		}
		var last uint32
		for _, e := range ix.entries {
			if e.uid <= last || e.uid >= ix.next || ix.keys[e.key] != e {
				t.Fatalf("bad entry %+v (last %d, next %d)", e, last, ix.next)
			}
			last = e.uid
		}
		if len(ix.keys) != len(ix.entries) {
			t.Fatalf("%d keys for %d entries", len(ix.keys), len(ix.entries))
		}
	})
}
