package config

import (
	"errors"
	"slices"
	"testing"
	"time"
)

func TestAuthParseAndProblems(t *testing.T) {
	c, err := Parse("auth.toml", []byte("[auth]\nspf_fail_reject = true\ntemperror = \"defer\"\ntimeout = \"30s\"\njunk_folder = \"Spam\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if a := c.Auth; !a.Enabled || !a.SPFFailReject || a.TempError != "defer" || a.Timeout != 30*time.Second || a.JunkFolder != "Spam" || !a.DMARCReject {
		t.Fatalf("parsed %+v", a)
	}
	_, err = Parse("bad.toml", []byte("[auth]\ntemperror = \"maybe\"\ntimeout = \"0s\"\njunk_folder = \"../INBOX\"\n"))
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("want *Error, got %v", err)
	}
	var keys []string
	for _, p := range ce.Problems {
		keys = append(keys, p.Key)
		if p.Line == 0 {
			t.Errorf("problem without a line: %v", p)
		}
	}
	slices.Sort(keys)
	if want := []string{"auth.junk_folder", "auth.temperror", "auth.timeout"}; !slices.Equal(keys, want) {
		t.Fatalf("problems %v, want keys %v", ce.Problems, want)
	}
	for _, bad := range []string{"INBOX", "a/b", ".x", "x.", "a..b", ""} {
		a := defaultAuth()
		a.JunkFolder = bad
		if len(a.validate()) != 1 {
			t.Errorf("junk_folder %q accepted", bad)
		}
	}
}

func TestAuthDomainPolicy(t *testing.T) {
	c, err := Parse("auth.toml", []byte(`[auth]
spf_fail_reject = false
domain_policy = [
  "Example.COM: dmarc_reject=off, dmarc_quarantine=off",
  "strict.example: spf_fail_reject=on, temperror=defer",
]
`))
	if err != nil {
		t.Fatal(err)
	}
	pols, err := c.Auth.Policies()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]AuthPolicy{
		"example.com":    {DMARCReject: false, DMARCQuarantine: false, SPFFailReject: false, TempError: "accept"},
		"strict.example": {DMARCReject: true, DMARCQuarantine: true, SPFFailReject: true, TempError: "defer"},
	}
	if len(pols) != len(want) {
		t.Fatalf("policies %+v", pols)
	}
	for d, p := range want {
		if pols[d] != p {
			t.Errorf("%s: %+v, want %+v", d, pols[d], p)
		}
	}
	if g := c.Auth.Global(); g != (AuthPolicy{DMARCReject: true, DMARCQuarantine: true, TempError: "accept"}) {
		t.Errorf("global %+v", g)
	}

	_, err = Parse("bad.toml", []byte(`[auth]
domain_policy = [
  "no colon here",
  "a.example: dmarc_reject=maybe",
  "b.example: quarantine=on",
  "c.example: temperror=later",
  "d.example:",
  "e.example: dmarc_reject=on, dmarc_reject=off",
  "bad_domain!: dmarc_reject=on",
  "ok.example: dmarc_reject=on",
  "OK.example.: dmarc_reject=off",
]
`))
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("want *Error, got %v", err)
	}
	n := 0
	for _, p := range ce.Problems {
		if p.Key != "auth.domain_policy" || p.Line == 0 {
			t.Errorf("problem %v", p)
		}
		n++
	}
	// Seven bad entries, and the domain named twice.
	if n != 8 {
		t.Fatalf("%d problems, want 8: %v", n, ce.Problems)
	}
}

// The domain_policy parser never panics; what it accepts names a domain
// and only known values.
func FuzzDomainPolicy(f *testing.F) {
	for _, s := range []string{"example.com: dmarc_reject=off", "a.b: temperror=defer, spf_fail_reject=on", ":", "x:=,", "a.b: dmarc_quarantine=on,,"} {
		f.Add(s)
	}
	a := defaultAuth()
	f.Fuzz(func(t *testing.T, s string) {
		d, p, err := a.parseDomainPolicy(s)
		if err != nil {
			if !errors.Is(err, ErrPolicySyntax) {
				t.Fatalf("%q: untyped error %v", s, err)
			}
			return
		}
		if !isDomain(d) || (p.TempError != "accept" && p.TempError != "defer") {
			t.Fatalf("%q accepted as %q %+v", s, d, p)
		}
	})
}
