package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agua-mail/agua/internal/config"
)

// agua runs the CLI in-process and returns its exit code and output.
func agua(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func mustAgua(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	code, out, errs := agua(t, stdin, args...)
	if code != 0 {
		t.Fatalf("agua %v: exit %d\n%s%s", args, code, out, errs)
	}
	return out
}

func TestAccountVerbs(t *testing.T) {
	data := t.TempDir()
	mustAgua(t, "", "domain", "add", "Example.ORG", "-data", data)
	if out := mustAgua(t, "", "domain", "list", "-data", data); out != "example.org\n" {
		t.Fatalf("domain list: %q", out)
	}
	mustAgua(t, "password-one\n", "user", "add", "ann@example.org", "-data", data, "-quota", "10MiB")
	out := mustAgua(t, "", "user", "list", "-data", data)
	if !strings.Contains(out, "ann@example.org") || !strings.Contains(out, "10MiB") {
		t.Fatalf("user list: %q", out)
	}
	mustAgua(t, "password-two\n", "user", "passwd", "ann@example.org", "-data", data)
	mustAgua(t, "", "user", "quota", "ann@example.org", "0", "-data", data)
	if out := mustAgua(t, "", "user", "list", "-data", data); !strings.Contains(out, "(default)") {
		t.Fatalf("quota reset: %q", out)
	}
	mustAgua(t, "", "alias", "add", "@example.org", "ann@example.org", "-data", data)
	mustAgua(t, "", "alias", "add", "info@example.org", "ann@example.org", "-data", data)
	if out := mustAgua(t, "", "alias", "list", "-data", data); !strings.Contains(out, "@example.org -> ann@example.org") {
		t.Fatalf("alias list: %q", out)
	}

	// Errors are clear and exit non-zero.
	for _, tc := range []struct {
		stdin string
		args  []string
		want  string
	}{
		{"", []string{"user", "add", "bob@example.org"}, "no password on standard input"},
		{"short\n", []string{"user", "add", "bob@example.org"}, "password too short"},
		{"long-enough\n", []string{"user", "add", "bob@nowhere.example"}, "not a local domain"},
		{"", []string{"domain", "remove", "example.org"}, ""},
		{"", []string{"domain", "frobnicate"}, "domain add|remove"},
		{"", []string{"nonsense"}, "unknown verb"},
	} {
		code, _, errs := agua(t, tc.stdin, append(tc.args, "-data", data)...)
		if code == 0 || !strings.Contains(errs, tc.want) {
			t.Errorf("agua %v: exit %d, stderr %q, want it to mention %q", tc.args, code, errs, tc.want)
		}
	}
	mustAgua(t, "", "alias", "remove", "info@example.org", "ann@example.org", "-data", data)
	mustAgua(t, "", "alias", "remove", "@example.org", "ann@example.org", "-data", data)
	mustAgua(t, "", "user", "remove", "ann@example.org", "-data", data)
	mustAgua(t, "", "domain", "remove", "example.org", "-data", data)
}

func TestConfigVerbs(t *testing.T) {
	example := mustAgua(t, "", "config", "example")
	dir := t.TempDir()
	good := filepath.Join(dir, "agua.toml")
	os.WriteFile(good, []byte(example), 0o644)
	if out := mustAgua(t, "", "config", "check", good); !strings.Contains(out, "OK") {
		t.Fatalf("check: %q", out)
	}
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("[smtp]\nmax_errors = 0\nmax_recipients = -1\n"), 0o644)
	code, _, errs := agua(t, "", "config", "check", bad)
	if code == 0 || !strings.Contains(errs, "bad.toml:2: smtp.max_errors") || !strings.Contains(errs, "bad.toml:3: smtp.max_recipients") {
		t.Fatalf("check bad: exit %d\n%s", code, errs)
	}
	// What serve would read next is checked too: rule files, certificates.
	rules := filepath.Join(dir, "bad.rules")
	os.WriteFile(rules, []byte("deny 192.0.2.0/24\ndeny 1.2.3.4/40\n"), 0o644)
	refs := filepath.Join(dir, "refs.toml")
	os.WriteFile(refs, []byte(fmt.Sprintf("[tls]\ncert_file = %q\nkey_file = %q\n[shield]\nrule_files = [%q]\n", filepath.Join(dir, "none.pem"), filepath.Join(dir, "none.key"), rules)), 0o644)
	code, _, errs = agua(t, "", "config", "check", refs)
	if code == 0 || !strings.Contains(errs, "bad.rules:2: bad CIDR") || !strings.Contains(errs, "none.pem") {
		t.Fatalf("check refs: exit %d\n%s", code, errs)
	}
}

// The shield verbs talk to a running server; without one they say so.
func TestShieldVerbs(t *testing.T) {
	data := t.TempDir()
	code, _, errs := agua(t, "", "bans", "-data", data)
	if code == 0 || !strings.Contains(errs, "agua is not running") {
		t.Fatalf("bans without server: %d %q", code, errs)
	}
	if code, _, _ := agua(t, ""); code != 2 {
		t.Errorf("agua without a verb: exit %d, want 2", code)
	}
	if out := mustAgua(t, "", "--version"); !strings.HasPrefix(out, "agua ") {
		t.Errorf("--version: %q", out)
	}

	cfg := config.Default()
	cfg.DataDir = data
	cfg.SMTP.Listen = []string{"127.0.0.1:0"}
	cfg.SMTP.SubmissionListen = nil
	cfg.SMTP.SubmissionsListen = nil
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.POP3.Listen = nil
	cfg.POP3.TLSListen = nil
	cfg.IMAP.Listen = nil
	cfg.IMAP.TLSListen = nil
	runServer(t, cfg, nil)

	out := mustAgua(t, "", "block", "192.0.2.0/24", "-for", "2h", "-reason", "scanner", "-action", "drop", "-data", data)
	if !strings.Contains(out, "192.0.2.0/24 blocked") {
		t.Fatalf("block: %q", out)
	}
	out = mustAgua(t, "", "bans", "-data", data)
	if !strings.Contains(out, "192.0.2.0/24") || !strings.Contains(out, "scanner") || !strings.Contains(out, "drop") {
		t.Fatalf("bans: %q", out)
	}
	out = mustAgua(t, "", "why", "192.0.2.77", "-data", data)
	if !strings.Contains(out, "drop") || !strings.Contains(out, "ban:scanner") {
		t.Fatalf("why: %q", out)
	}
	// The block is part of the network's reputation score.
	if !strings.Contains(out, "network 192.0.2.0/24         -5 (ban -5)") {
		t.Fatalf("why lacks the network's score: %q", out)
	}
	if out := mustAgua(t, "", "why", "198.51.100.1", "-data", data); !strings.Contains(out, "served") {
		t.Fatalf("why for a clean address: %q", out)
	}
	code, _, errs = agua(t, "", "why", "not-an-ip", "-data", data)
	if code == 0 || !strings.Contains(errs, "agua: \"not-an-ip\" is not an IP address") {
		t.Fatalf("why bad ip: %d %q", code, errs)
	}
	code, _, errs = agua(t, "", "block", "192.0.2.0/24", "-action", "allow", "-data", data)
	if code == 0 || !strings.Contains(errs, "not \"allow\"") {
		t.Fatalf("block -action allow: %d %q", code, errs)
	}
	mustAgua(t, "", "unblock", "192.0.2.0/24", "-data", data)
	if out := mustAgua(t, "", "bans", "-data", data); !strings.Contains(out, "no bans") {
		t.Fatalf("after unblock: %q", out)
	}
	code, _, errs = agua(t, "", "unblock", "192.0.2.0/24", "-data", data)
	if code == 0 || !strings.Contains(errs, "not banned") {
		t.Fatalf("unblock twice: %d %q", code, errs)
	}
	mustAgua(t, "", "block", "198.51.100.7", "-reason", "x", "-data", data)
	mustAgua(t, "", "block", "198.51.100.8", "-reason", "x", "-data", data)
	if out := mustAgua(t, "", "unblock", "-reason", "x", "-data", data); !strings.Contains(out, "2 ban(s) lifted") {
		t.Fatalf("unblock by reason: %q", out)
	}

	if out := mustAgua(t, "", "lockdown", "on", "-data", data); !strings.Contains(out, "lockdown: on") {
		t.Fatalf("lockdown on: %q", out)
	}
	if out := mustAgua(t, "", "lockdown", "-data", data); !strings.Contains(out, "lockdown: on") {
		t.Fatalf("lockdown: %q", out)
	}
	mustAgua(t, "", "lockdown", "off", "-data", data)

	rules := filepath.Join(data, "shield.rules")
	os.WriteFile(rules, []byte("deny 203.0.113.0/24\nthis is not a rule\n"), 0o644)
	code, _, errs = agua(t, "", "reload", "-data", data)
	if code == 0 || !strings.Contains(errs, "shield.rules:2") {
		t.Fatalf("reload of a bad file: %d %q", code, errs)
	}
	os.WriteFile(rules, []byte("deny 203.0.113.0/24\n"), 0o644)
	mustAgua(t, "", "reload", "-data", data)
	if out := mustAgua(t, "", "why", "203.0.113.5", "-data", data); !strings.Contains(out, "shield.rules:1") {
		t.Fatalf("why after reload: %q", out)
	}
	mustAgua(t, "", "block", "192.0.2.9", "-reason", "top-test", "-data", data)
	if out := mustAgua(t, "", "top", "-once", "-data", data); !strings.Contains(out, "LISTENER") || !strings.Contains(out, "smtp") || !strings.Contains(out, "192.0.2.9/32") {
		t.Fatalf("top: %q", out)
	}
	if out := mustAgua(t, "", "status", "-data", data); !strings.Contains(out, `"smtp"`) {
		t.Fatalf("status: %q", out)
	}
}
