package accounts

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
		got, _, err := NormaliseAddress(in)
		if err != nil || got != want {
			t.Errorf("NormaliseAddress(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"a\"b@example.org", "a<b@example.org", "a,b@example.org", "a@b@c.org", "a\u00a0b@example.org", strings.Repeat("a", 65) + "@example.org", "a@example..org", "a/b@example.org", "a@example.org.", "a@.example.org", "a@"} {
		if _, _, err := NormaliseAddress(in); !errors.Is(err, ErrInvalid) {
			t.Errorf("NormaliseAddress(%q) accepted", in)
		}
	}
}

func FuzzNormaliseAddress(f *testing.F) {
	for _, s := range []string{"alice@example.org", " A@B.C ", "@example.org", "a@@b", "ü@x.y", "a\x00@b.c", "a..b@c.d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		addr, domain, err := NormaliseAddress(in)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v is not ErrInvalid", err)
			}
			return
		}
		if !utf8.ValidString(addr) || strings.Count(addr, "@") != 1 || !strings.HasSuffix(addr, "@"+domain) {
			t.Fatalf("NormaliseAddress(%q) = %q, %q", in, addr, domain)
		}
		if strings.ContainsAny(addr, " \t\r\n/\\\"") {
			t.Fatalf("NormaliseAddress(%q) = %q contains a forbidden character", in, addr)
		}
		// Normalising is idempotent.
		again, _, err := NormaliseAddress(addr)
		if err != nil || again != addr {
			t.Fatalf("not idempotent: %q → %q → %q, %v", in, addr, again, err)
		}
	})
}
