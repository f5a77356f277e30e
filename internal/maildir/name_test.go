package maildir

import (
	"strings"
	"testing"
)

func FuzzSizeFromName(f *testing.F) {
	for _, s := range []string{"1.M2P3Q4.host,S=123", "1.M2P3Q4.host,S=123,W=130:2,S", "x:2,S=5", ",S=", ",S=-1", ",S=99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		size, ok := sizeFromName(name)
		if ok && size < 0 {
			t.Fatalf("sizeFromName(%q) = %d", name, size)
		}
	})
}

func FuzzEscapeName(f *testing.F) {
	for _, s := range []string{"alice", ".", "..", "a/b", "", `a\b`, "\x00", ".hidden", "üser"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e := escapeName(s)
		if e == "" || e == "." || e == ".." || strings.HasPrefix(e, ".") || strings.ContainsAny(e, "/\x00") {
			t.Fatalf("escapeName(%q) = %q is not one safe path component", s, e)
		}
	})
}
