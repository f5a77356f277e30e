package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agua-mail/agua/internal/directory"
)

// `agua user hash` makes a hash that `agua user import` takes, bare or
// with Dovecot's {ARGON2ID} prefix and passwd-file fields, and the users log
// in with the password. A file with a bad line imports nobody and says
// which lines are wrong.
func TestUserImport(t *testing.T) {
	data := t.TempDir()
	mustAgua(t, "", "domain", "add", "example.org", "-data", data)
	hash := strings.TrimSpace(mustAgua(t, "the shared secret\n", "user", "hash", "-data", data))
	if !strings.HasPrefix(hash, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("user hash printed %q", hash)
	}

	bad := fmt.Sprintf("# users\nu1@example.org:%s\nnocolon\nu2@example.org:{SHA512-CRYPT}$6$abc\nu3@example.org:plain\n", hash)
	code, _, errs := agua(t, bad, "user", "import", "-", "-data", data)
	for _, want := range []string{"line 3: no ':'", "line 4: password scheme {SHA512-CRYPT}", "line 5: u3@example.org: unsupported password hash scheme"} {
		if code == 0 || !strings.Contains(errs, want) {
			t.Errorf("import of a bad file: exit %d, stderr %q, want it to mention %q", code, errs, want)
		}
	}
	if strings.Contains(errs, hash) {
		t.Errorf("an error shows the hash: %q", errs)
	}
	if out := mustAgua(t, "", "user", "list", "-data", data); strings.Contains(out, "u1@") {
		t.Fatalf("a refused import added users: %q", out)
	}

	var file strings.Builder
	file.WriteString("\n# Dovecot passwd-file lines\n")
	for i := range 50 {
		fmt.Fprintf(&file, "u%d@example.org:{ARGON2ID}%s:1000:1000::/var/mail/u%d::\r\n", i, hash, i)
	}
	fmt.Fprintf(&file, "bare@example.org:%s\n", hash)
	if out := mustAgua(t, file.String(), "user", "import", "-", "-quota", "5MiB", "-data", data); out != "51 users imported\n" {
		t.Fatalf("import: %q", out)
	}
	// Again: they exist now, so nothing is imported.
	if code, _, errs := agua(t, file.String(), "user", "import", "-", "-data", data); code == 0 || !strings.Contains(errs, "already exists") {
		t.Errorf("second import: exit %d, stderr %q", code, errs)
	}

	d, err := directory.Open(filepath.Join(data, "agua.db"), directory.Options{DefaultQuota: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, addr := range []string{"u0@example.org", "u49@example.org", "bare@example.org"} {
		u, err := d.Authenticate(context.Background(), addr, "the shared secret")
		if err != nil || u.Quota != 5<<20 {
			t.Errorf("Authenticate(%s) = %+v, %v", addr, u, err)
		}
	}
	if _, err := d.Authenticate(context.Background(), "u1@example.org", "wrong secret"); err == nil {
		t.Error("a wrong password logs in")
	}
}
