package importer

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzFolderNames: any folder name a source gives (modified UTF-7 on
// disk, any levels and attributes over IMAP) maps to a name agua's store
// accepts: no empty level, nothing that leaves the Maildir, never INBOX
// below the top.
func FuzzFolderNames(f *testing.F) {
	for _, s := range []string{"Entw&APw-rfe", "INBOX.Sent", "a..b", "&-", "&ZeVnLIqe-.x", ".", "INBOX.INBOX", "a/b\\c", "\x00\x7f"} {
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, raw string, special bool) {
		name, err := decodeMUTF7(raw)
		if err != nil {
			name = raw
		}
		var attrs []string
		if special {
			attrs = []string{}
		}
		target, skip := targetName(strings.Split(name, "."), attrs)
		if skip || target == "" {
			return // INBOX
		}
		if !utf8.ValidString(target) || len(target) > maxName {
			t.Fatalf("%q -> %q: invalid UTF-8 or too long", raw, target)
		}
		for _, level := range strings.Split(target, ".") {
			if strings.TrimSpace(level) == "" || strings.ContainsAny(level, "/\\*%") {
				t.Fatalf("%q -> %q: bad level %q", raw, target, level)
			}
			for _, r := range level {
				if r < 0x20 || r == 0x7f {
					t.Fatalf("%q -> %q: control character", raw, target)
				}
			}
		}
		if first, _, _ := strings.Cut(target, "."); strings.EqualFold(first, "INBOX") {
			t.Fatalf("%q -> %q: below INBOX", raw, target)
		}
	})
}
