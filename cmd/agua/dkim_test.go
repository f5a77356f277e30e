package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestDKIMVerbs(t *testing.T) {
	data := t.TempDir()
	if out := mustAgua(t, "", "dkim", "list", "-data", data); !strings.Contains(out, "no DKIM keys") {
		t.Fatalf("list without keys: %q", out)
	}
	out := mustAgua(t, "", "dkim", "keygen", "Example.ORG", "-data", data)
	ed := regexp.MustCompile(`(?m)^(agua\d{8}e)\._domainkey\.example\.org\. IN TXT "v=DKIM1; k=ed25519; p=[A-Za-z0-9+/=]+"$`).FindStringSubmatch(out)
	rsa := regexp.MustCompile(`(?m)^(agua\d{8}r)\._domainkey\.example\.org\. IN TXT \( "v=DKIM1; k=rsa; p=[^"]+"( "[^"]+")+ \)$`).FindStringSubmatch(out)
	if ed == nil || rsa == nil {
		t.Fatalf("keygen output:\n%s", out)
	}
	for _, sel := range []string{ed[1], rsa[1]} {
		fi, err := os.Stat(filepath.Join(data, "dkim", "example.org", sel+".key"))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("key file %s: %v %v", sel, fi, err)
		}
	}
	mustAgua(t, "", "dkim", "keygen", "other.example", "-algo", "ed25519", "-selector", "mail1", "-data", data)
	// A rotation: the next key is published now and signs in two days.
	out = mustAgua(t, "", "dkim", "keygen", "other.example", "-algo", "ed25519", "-selector", "mail2", "-start", "48h", "-data", data)
	if !strings.Contains(out, "sign from ") || !strings.Contains(out, "mail2._domainkey.other.example. IN TXT") {
		t.Errorf("keygen -start:\n%s", out)
	}
	out = mustAgua(t, "", "dkim", "list", "other.example", "-data", data)
	if !regexp.MustCompile(`(?m)^other\.example +mail1 +ed25519 .* yes$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^other\.example +mail2 +ed25519 .* from \d{4}-\d\d-\d\d \d\d:\d\d$`).MatchString(out) {
		t.Errorf("list during a rotation:\n%s", out)
	}

	out = mustAgua(t, "", "dkim", "list", "example.org", "-data", data)
	for _, want := range []string{ed[0], rsa[0], "example.org  " + ed[1] + "  ed25519", "yes"} {
		if !strings.Contains(out, want) {
			t.Errorf("list lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "other.example") {
		t.Errorf("list example.org shows other.example:\n%s", out)
	}
	if out := mustAgua(t, "", "dkim", "list", "-data", data); !strings.Contains(out, "mail1._domainkey.other.example.") {
		t.Errorf("list:\n%s", out)
	}

	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"dkim", "keygen", "other.example", "-algo", "ed25519", "-selector", "mail1"}, 1, "already exists"},
		{[]string{"dkim", "keygen", "other.example", "-selector", "mail2"}, 2, "-selector names one key"},
		{[]string{"dkim", "keygen", "other.example", "-algo", "dsa"}, 2, "unknown key algorithm"},
		{[]string{"dkim", "keygen", "../etc", "-algo", "ed25519"}, 1, "invalid domain"},
		{[]string{"dkim", "keygen"}, 2, "dkim keygen DOMAIN"},
		{[]string{"dkim", "rotate", "x"}, 2, "dkim keygen DOMAIN"},
	} {
		code, out, errs := agua(t, "", append(c.args, "-data", data)...)
		if code != c.code || !strings.Contains(errs, c.want) {
			t.Errorf("agua %v: exit %d, stdout %q stderr %q; want exit %d and %q", c.args, code, out, errs, c.code, c.want)
		}
	}
}
