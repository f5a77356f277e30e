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
