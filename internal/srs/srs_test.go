package srs

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newTest(t *testing.T, now *time.Time) *SRS {
	t.Helper()
	s, err := New([]byte("0123456789abcdef0123456789abcdef"), 0, func() time.Time { return *now })
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRoundTrip(t *testing.T) {
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	s := newTest(t, &now)
	for _, sender := range []string{"alice@origin.test", "a=b+c@Origin.Test"} {
		f, err := s.Forward(sender, "fwd.example")
		if err != nil {
			t.Fatal(err)
		}
		if !IsSRS(f) || !strings.HasSuffix(f, "@fwd.example") {
			t.Fatalf("%s → %s", sender, f)
		}
		for _, variant := range []string{f, strings.ToLower(f), strings.ToUpper(f[:strings.IndexByte(f, '@')]) + f[strings.IndexByte(f, '@'):]} {
			back, err := s.Reverse(variant)
			if err != nil || !strings.EqualFold(back, sender) {
				t.Fatalf("Reverse(%s) = %q, %v; want %s", variant, back, err, sender)
			}
		}
	}
	if f, err := s.Forward("", "fwd.example"); f != "" || err != nil {
		t.Fatalf("null sender → %q %v", f, err)
	}
}

// TestSRS1: forwarding an SRS0 address makes SRS1, which reverses to that
// SRS0 address; forwarding SRS1 again keeps its length (only the outer
// hash and the domain change), and the chain reverses back to the sender.
func TestSRS1(t *testing.T) {
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	a := newTest(t, &now)
	b, _ := New([]byte("server b's secret, 32 bytes long"), 0, func() time.Time { return now })
	first, _ := a.Forward("carol@origin.test", "a.test")
	second, err := b.Forward(first, "b.test")
	if err != nil || !strings.HasPrefix(second, "SRS1=") || !strings.HasSuffix(second, "@b.test") {
		t.Fatalf("%s → %s, %v", first, second, err)
	}
	if at := strings.IndexByte(second, '@'); at > 64 {
		t.Fatalf("SRS1 local part of %d octets: %s", at, second)
	}
	third, _ := a.Forward(second, "a.test")
	fourth, _ := b.Forward(third, "b.test")
	if len(third) != len(second) || len(fourth) != len(second) {
		t.Fatalf("SRS1 grows: %s, %s, %s", second, third, fourth)
	}
	back, err := b.Reverse(fourth)
	if err != nil || back != first {
		t.Fatalf("Reverse(%s) = %q, %v; want %s", fourth, back, err, first)
	}
	if orig, err := a.Reverse(back); err != nil || orig != "carol@origin.test" {
		t.Fatalf("%q %v", orig, err)
	}
	if _, err := b.Reverse(strings.Replace(fourth, "=a.test==", "=evil.test==", 1)); !errors.Is(err, ErrBadHash) {
		t.Fatalf("tampered SRS1: %v", err)
	}
	if _, err := a.Reverse(fourth); !errors.Is(err, ErrBadHash) {
		t.Fatalf("SRS1 of another server: %v", err)
	}
}

func TestReverseRefuses(t *testing.T) {
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	s := newTest(t, &now)
	good, _ := s.Forward("alice@origin.test", "fwd.example")
	other, _ := New([]byte("another secret, another server!!"), 0, func() time.Time { return now })
	foreign, _ := other.Forward("alice@origin.test", "fwd.example")
	h := strings.Split(good, "=")
	for name, c := range map[string]struct {
		addr string
		err  error
	}{
		"other secret":   {foreign, ErrBadHash},
		"changed target": {strings.Replace(good, "alice@", "mallory@", 1), ErrBadHash},
		"changed domain": {strings.Replace(good, "origin.test", "victim.test", 1), ErrBadHash},
		"changed stamp":  {h[0] + "=" + h[1] + "=zz=" + strings.Join(h[3:], "="), ErrBadHash},
		"no hash":        {"SRS0==aa=origin.test=alice@fwd.example", ErrBadHash},
		"guessed":        {"SRS0=aaaaaa=aa=victim.test=anyone@fwd.example", ErrBadHash},
		"missing parts":  {"SRS0=abc@fwd.example", ErrSyntax},
		"percent hack":   {"SRS0=aaaaaa=aa=victim.test%relay.test=x@fwd.example", ErrSyntax},
		"not SRS":        {"alice@fwd.example", ErrNotSRS},
		"SRS1 forged":    {"SRS1=aaaaaa=fwd.test==aaaa=aa=x.test=y@fwd.example", ErrBadHash},
		"SRS1 malformed": {"SRS1=aaaaaa=fwd.test=aaaa@fwd.example", ErrSyntax},
	} {
		if _, err := s.Reverse(c.addr); !errors.Is(err, c.err) {
			t.Errorf("%s: Reverse(%q) = %v, want %v", name, c.addr, err, c.err)
		}
	}
	// Age: valid for MaxAge days, then refused; the stamp wraps at 1024.
	now = now.Add(DefaultMaxAge * day)
	if _, err := s.Reverse(good); err != nil {
		t.Fatalf("after %d days: %v", DefaultMaxAge, err)
	}
	now = now.Add(day)
	if _, err := s.Reverse(good); !errors.Is(err, ErrExpired) {
		t.Fatalf("after %d days: %v", DefaultMaxAge+1, err)
	}
	now = time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC).Add(-30 * day) // an address from the future
	if _, err := s.Reverse(good); !errors.Is(err, ErrExpired) {
		t.Fatalf("future stamp: %v", err)
	}
}

func TestSecretFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sub", "srs.key")
	a, err := LoadOrCreateSecret(p)
	if err != nil || len(a) != 32 {
		t.Fatal(len(a), err)
	}
	b, err := LoadOrCreateSecret(p)
	if err != nil || string(a) != string(b) {
		t.Fatal("secret changed on reload")
	}
}

func FuzzReverse(f *testing.F) {
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	s, _ := New([]byte("0123456789abcdef0123456789abcdef"), 0, func() time.Time { return now })
	good, _ := s.Forward("alice@origin.test", "fwd.example")
	f.Add(good)
	f.Add("SRS0=====@")
	f.Fuzz(func(t *testing.T, addr string) {
		back, err := s.Reverse(addr)
		if err == nil && (strings.Count(back, "@") != 1 || strings.ContainsAny(back[strings.IndexByte(back, '@'):], "%!")) {
			t.Fatalf("Reverse(%q) = %q", addr, back)
		}
	})
}
