package smtpd

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzAddress runs MAIL FROM / RCPT TO arguments through the path parser:
// it must never panic, and whatever it accepts must be a mailbox the rest
// of the server can use safely (valid UTF-8, no controls, bounded parts).
func FuzzAddress(f *testing.F) {
	for _, seed := range []string{
		"FROM:<a@example.test>",
		"FROM:<> SIZE=100 BODY=8BITMIME",
		"TO:<postmaster>",
		"TO:<@relay.example,@other.example:user@example.test>",
		`FROM:<"quoted \" local"@example.test> SMTPUTF8`,
		"TO:<user@[192.0.2.1]>",
		"FROM: <spaced@example.test>",
		"TO:<caf\xc3\xa9@example.test>",
		"TO:<\xff@example.test>",
		"FROM:<a@b",
		"TO:<a\x00b@example.test>",
		"FROM:<" + strings.Repeat("x", 70) + "@example.test>",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, arg string) {
		for _, prefix := range []string{"FROM:", "TO:"} {
			path, params, err := parsePathArg(arg, prefix)
			if err != nil {
				continue
			}
			for _, p := range params {
				if p == "" || strings.ContainsAny(p, " \t") {
					t.Fatalf("parameter %q from %q", p, arg)
				}
			}
			parse := parseReversePath
			if prefix == "TO:" {
				parse = parseForwardPath
			}
			m, err := parse(path)
			if err != nil || m == "" || m == "postmaster" {
				continue
			}
			if !utf8.ValidString(m) {
				t.Fatalf("accepted invalid UTF-8 %q", m)
			}
			at := strings.LastIndexByte(m, '@')
			if at <= 0 || at == len(m)-1 || at > 64 || len(m)-at-1 > 255 {
				t.Fatalf("accepted %q", m)
			}
			for _, r := range m {
				if r < 0x20 || r == 0x7f {
					t.Fatalf("accepted control character in %q", m)
				}
			}
		}
	})
}
