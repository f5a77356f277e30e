package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/server"
)

// Every verb agua runs is listed in `agua help`.
func TestUsageListsEveryVerb(t *testing.T) {
	help := mustAgua(t, "", "help")
	for verb := range verbs() {
		if !regexp.MustCompile(`(?m)^  ` + verb + `\b`).MatchString(help) {
			t.Errorf("agua help does not list the verb %q", verb)
		}
	}
}

// A mistyped verb gets one line naming it and where the list is, not the
// whole help with the error scrolled off the top.
func TestUnknownVerbIsOneLine(t *testing.T) {
	code, out, errs := agua(t, "", "stauts")
	if code != 2 || out != "" || errs != "agua: unknown verb \"stauts\" (`agua help` lists the verbs)\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errs)
	}
}

// The domain verb's own usage names all its forms.
func TestDomainUsageNamesDNSAndCheck(t *testing.T) {
	data := t.TempDir()
	mustAgua(t, "", "domain", "add", "example.org", "-data", data)
	for _, args := range [][]string{{"domain"}, {"domain", "dns"}, {"domain", "check"}} {
		code, _, errs := agua(t, "", append(args, "-data", data)...)
		if code != 2 || !strings.Contains(errs, "domain add|remove|dns NAME") || !strings.Contains(errs, "domain check NAME -resolver HOST:PORT") {
			t.Errorf("agua %v: exit %d, stderr %q", args, code, errs)
		}
	}
}

// reload with no server says only that: no "previous settings stay in
// force" when nothing is in force.
func TestReloadWithoutServer(t *testing.T) {
	code, _, errs := agua(t, "", "reload", "-data", t.TempDir())
	if code != 1 || !strings.Contains(errs, "agua is not running") || strings.Contains(errs, "previous settings") {
		t.Errorf("exit %d, stderr %q", code, errs)
	}
}

// A verb that reads accounts, run against a data folder agua never used
// (the wrong working folder, a forgotten -config), says so instead of
// creating an empty database; list still exits 0 with an empty list
// (scripts list before they add on a fresh folder), dns fails.
func TestListVerbsOnAFolderWithoutDatabase(t *testing.T) {
	data := filepath.Join(t.TempDir(), "agua-data")
	for _, args := range [][]string{{"user", "list"}, {"domain", "list"}, {"alias", "list"}, {"domain", "dns", "example.org"}} {
		want := 0
		if args[1] == "dns" {
			want = 1
		}
		code, out, errs := agua(t, "", append(args, "-data", data)...)
		if code != want || out != "" || !strings.Contains(errs, "no accounts database at "+filepath.Join(data, "agua.db")) {
			t.Errorf("agua %v: exit %d (want %d), stdout %q, stderr %q", args, code, want, out, errs)
		}
	}
	if _, err := os.Stat(data); err == nil {
		t.Errorf("a list verb created %s", data)
	}
	// Adding is how a new data folder starts: it still works, and list
	// then reads it.
	mustAgua(t, "", "domain", "add", "example.org", "-data", data)
	if out := mustAgua(t, "", "domain", "list", "-data", data); out != "example.org\n" {
		t.Errorf("domain list: %q", out)
	}
}

// `agua config check -config FILE` checks FILE, as `config check FILE`
// does: every other verb takes the config as -config.
func TestConfigCheckTakesDashConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "agua.toml")
	os.WriteFile(good, []byte(mustAgua(t, "", "config", "example")), 0o644)
	if out := mustAgua(t, "", "config", "check", "-config", good); out != good+": OK\n" {
		t.Errorf("config check -config: %q", out)
	}
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("[smtp]\nmax_recipients = -1\n"), 0o644)
	code, _, errs := agua(t, "", "config", "check", "-config", bad)
	if code != 1 || !strings.Contains(errs, "bad.toml:2: smtp.max_recipients") {
		t.Errorf("config check -config bad: exit %d, stderr %q", code, errs)
	}
}

// bans and report on a stopped server's data folder that holds no shield
// state (agua never ran there) say so in a sentence, not with the path of
// a missing JSON file and ENOENT.
func TestStoppedVerbsOnAFolderAguaNeverUsed(t *testing.T) {
	data := t.TempDir()
	for _, args := range [][]string{{"bans"}, {"report", "abuse"}, {"report", "attack"}} {
		code, _, errs := agua(t, "", append(args, "-data", data)...)
		if code != 1 || !strings.Contains(errs, "has agua run with this data folder?") || strings.Contains(errs, "no such file") {
			t.Errorf("agua %v: exit %d, stderr %q", args, code, errs)
		}
	}
}

// agua reload tells the operator which changed sections wait for a
// restart (before: only the server's log said so, and the CLI printed the
// rule files as if all of it had applied).
func TestReloadNamesRestartOnlyChanges(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "agua.toml")
	body := func(host string) string { return smtpOnlyConfig(filepath.Join(dir, "data"), host, "127.0.0.1:0", "") }
	os.WriteFile(file, []byte(body("mx1.example.org")), 0o644)
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(cfg, slog.New(slog.DiscardHandler), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	srv.SetConfigFile(file)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	if out := mustAgua(t, "", "reload", "-config", file); strings.Contains(out, "next restart") {
		t.Errorf("reload of an unchanged file: %q", out)
	}
	os.WriteFile(file, []byte(body("mx2.example.org")), 0o644)
	out := mustAgua(t, "", "reload", "-config", file)
	if !strings.Contains(out, "changed but applied only at the next restart: hostname") {
		t.Errorf("reload after a hostname change: %q", out)
	}
}

// dkim keygen for a domain that is not local (a typo) makes the keys, as
// before, but warns.
func TestDKIMKeygenWarnsForANonLocalDomain(t *testing.T) {
	data := t.TempDir()
	mustAgua(t, "", "domain", "add", "example.org", "-data", data)
	code, out, errs := agua(t, "", "dkim", "keygen", "exmaple.org", "-algo", "ed25519", "-data", data)
	if code != 0 || !strings.Contains(out, "._domainkey.exmaple.org.") ||
		!strings.Contains(errs, "warning: exmaple.org is not a local domain: its keys sign nothing until `agua domain add exmaple.org`") {
		t.Errorf("typo: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if code, _, errs := agua(t, "", "dkim", "keygen", "Example.ORG", "-algo", "ed25519", "-data", data); code != 0 || errs != "" {
		t.Errorf("local domain: exit %d, stderr %q", code, errs)
	}
}

// smtpOnlyConfig is the text of a config for a test's agua serve: data
// folder, hostname, the MX listener on smtpAddr and no other listener (the
// admin one off too: the default 127.0.0.1:8025 may be another agua's on
// this machine, and serve refuses a port in use), then extra sections.
func smtpOnlyConfig(data, hostname, smtpAddr, extra string) string {
	return fmt.Sprintf(`data_dir = %q
hostname = %q
[smtp]
listen = [%q]
submission_listen = []
submissions_listen = []
[pop3]
listen = []
tls_listen = []
[imap]
listen = []
tls_listen = []
[admin]
listen = ""
`, data, hostname, smtpAddr) + extra
}
