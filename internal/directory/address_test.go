package directory

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestNormaliseAddress(t *testing.T) {
	for in, want := range map[string]string{
		" Alice@Example.ORG ":     "alice@example.org",
		"o'brien+tag@example.org": "o'brien+tag@example.org",
		"ÉLODIE@example.org":      "élodie@example.org",
		"用户@example.org":          "用户@example.org",
		"a.b@localhost":           "a.b@localhost",
		"x@xn--mnchen-3ya.de":     "x@xn--mnchen-3ya.de",
	} {
		got, _, err := normaliseAddress(in)
		if err != nil || got != want {
			t.Errorf("normaliseAddress(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"a\"b@example.org", "a<b@example.org", "a,b@example.org", "a@b@c.org", "a\u00a0b@example.org", strings.Repeat("a", 65) + "@example.org", "a@example..org", "a/b@example.org", "a@example.org.", "a@.example.org", "a@"} {
		if _, _, err := normaliseAddress(in); !errors.Is(err, ErrInvalid) {
			t.Errorf("normaliseAddress(%q) accepted", in)
		}
	}
}

func FuzzNormaliseAddress(f *testing.F) {
	for _, s := range []string{"alice@example.org", " A@B.C ", "@example.org", "a@@b", "ü@x.y", "a\x00@b.c", "a..b@c.d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		addr, domain, err := normaliseAddress(in)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v is not ErrInvalid", err)
			}
			return
		}
		if !utf8.ValidString(addr) || strings.Count(addr, "@") != 1 || !strings.HasSuffix(addr, "@"+domain) {
			t.Fatalf("normaliseAddress(%q) = %q, %q", in, addr, domain)
		}
		if strings.ContainsAny(addr, " \t\r\n/\\\"") {
			t.Fatalf("normaliseAddress(%q) = %q contains a forbidden character", in, addr)
		}
		// Normalising is idempotent.
		again, _, err := normaliseAddress(addr)
		if err != nil || again != addr {
			t.Fatalf("not idempotent: %q → %q → %q, %v", in, addr, again, err)
		}
	})
}

func FuzzVerifyPassword(f *testing.F) {
	f.Add("$argon2id$v=19$m=8,t=1,p=1$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "pw")
	f.Add("$2b$04$abcdefghijklmnopqrstuu", "pw")
	f.Add("$argon2id$v=19$m=19456,t=2,p=1$$", "")
	f.Fuzz(func(t *testing.T, hash, pw string) {
		if strings.HasPrefix(hash, "$argon2id$") {
			// Keep the fuzzer fast: refuse costly parameters before hashing.
			if !strings.Contains(hash, "m=8,") || !strings.Contains(hash, "t=1,") {
				return
			}
		}
		verifyPassword(hash, pw) // must not panic
	})
}
