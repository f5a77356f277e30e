package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agua-mail/agua/internal/pg/pgtest"
)

// pgConfig writes a config file with the accounts on the database at url
// and returns its path and the data folder.
func pgConfig(t *testing.T, url string) (cfgFile, data string) {
	t.Helper()
	dir := t.TempDir()
	data = filepath.Join(dir, "data")
	cfgFile = filepath.Join(dir, "agua.toml")
	text := "data_dir = " + quoteTOML(data) + "\n\n[postgres]\nurl = " + quoteTOML(url) + "\naccounts = true\n"
	if err := os.WriteFile(cfgFile, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfgFile, data
}

func quoteTOML(s string) string { return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"` }

// agua db migrate against a real PostgreSQL: status lists the accounts
// steps as pending, migrate applies them, a second run applies nothing;
// the account verbs refuse an unmigrated database and then work on it.
func TestDBMigrateAndAccountVerbsOnPostgres(t *testing.T) {
	cfg, data := pgConfig(t, pgtest.Shared(t).NewDatabase(t))

	code, _, errs := agua(t, "", "domain", "add", "example.org", "-config", cfg)
	if code == 0 || !strings.Contains(errs, "agua db migrate") {
		t.Fatalf("domain add before migrating: exit %d, %q; want a refusal naming agua db migrate", code, errs)
	}
	if out := mustAgua(t, "", "db", "migrate", "-status", "-config", cfg); !strings.Contains(out, "pending  accounts/1 ") {
		t.Fatalf("db migrate -status on an empty database: %q", out)
	}
	if out := mustAgua(t, "", "db", "migrate", "-config", cfg); !strings.Contains(out, "applied  accounts/1 ") {
		t.Fatalf("db migrate: %q", out)
	}
	if out := mustAgua(t, "", "db", "migrate", "-config", cfg); !strings.Contains(out, "(0 migrations applied now)") {
		t.Fatalf("db migrate again: %q", out)
	}
	out := mustAgua(t, "", "db", "migrate", "-status", "-config", cfg)
	if !strings.Contains(out, "applied  accounts/1 ") || strings.Contains(out, "pending") || !strings.Contains(out, "schema up to date") {
		t.Fatalf("db migrate -status after migrating: %q", out)
	}

	mustAgua(t, "", "domain", "add", "Example.ORG", "-config", cfg)
	mustAgua(t, "password-one\n", "user", "add", "ann@example.org", "-quota", "10MiB", "-config", cfg)
	mustAgua(t, "", "alias", "add", "info@example.org", "ann@example.org", "-config", cfg)
	if out := mustAgua(t, "", "user", "list", "-config", cfg); !strings.Contains(out, "ann@example.org") || !strings.Contains(out, "10MiB") {
		t.Fatalf("user list: %q", out)
	}
	if out := mustAgua(t, "", "alias", "list", "-config", cfg); !strings.Contains(out, "info@example.org -> ann@example.org") {
		t.Fatalf("alias list: %q", out)
	}
	if code, _, errs := agua(t, "password-two\n", "user", "add", "ann@example.org", "-config", cfg); code == 0 || !strings.Contains(errs, "already exists") {
		t.Fatalf("user add twice: exit %d, %q", code, errs)
	}
	// Nothing went to the SQLite file.
	if _, err := os.Stat(filepath.Join(data, "agua.db")); err == nil {
		t.Fatal("the accounts also went to the SQLite file")
	}

	// agua backup does not pretend to have saved the accounts.
	code, _, errs = agua(t, "", "backup", filepath.Join(t.TempDir(), "b"), "-config", cfg)
	if code == 0 || !strings.Contains(errs, "pg_dump") {
		t.Fatalf("backup with the accounts on PostgreSQL: exit %d, %q; want a refusal pointing to pg_dump", code, errs)
	}
}
