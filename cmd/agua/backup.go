package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/agua-mail/agua/internal/admin"
	"github.com/agua-mail/agua/internal/backup"
	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/server"
)

// cmdBackup: agua backup DIR — a consistent snapshot while the server runs.
func cmdBackup(e *env) error {
	pos, err := e.parse()
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("backup DIR")
	}
	cfg := e.cfg
	if err := refusePostgres(cfg, "backup"); err != nil {
		return err
	}
	var logFile string
	if cfg.Log.File != "" {
		logFile, _ = filepath.Abs(cfg.Resolve(cfg.Log.File))
	}
	logStem := strings.TrimSuffix(logFile, filepath.Ext(logFile)) + "-"
	m, err := backup.Create(context.Background(), pos[0], backup.Options{
		DataDir: cfg.DataDir, Database: server.DatabasePath(cfg), ConfigFile: e.cfgPath, Version: version,
		// The log and its rotated files are not state; they can be large.
		Skip: func(p string) bool { return logFile != "" && (p == logFile || strings.HasPrefix(p, logStem)) },
	})
	if err != nil {
		return err
	}
	printManifest(e, "backup written to "+pos[0], m)
	return nil
}

// cmdRestore: agua restore [-force] DIR — into a stopped server's data folder.
func cmdRestore(e *env) error {
	force := e.flags.Bool("force", false, "restore into a data folder that is not empty, moving what is there aside first")
	pos, err := e.parse()
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("restore [-force] DIR")
	}
	cfg := e.cfg
	if err := refusePostgres(cfg, "restore"); err != nil {
		return err
	}
	running := func() bool {
		err := admin.NewClient(server.AdminSocket(cfg)).Do("GET", "/v1/status", nil, nil)
		return !errors.Is(err, admin.ErrNotRunning)
	}
	r, err := backup.Restore(context.Background(), pos[0], backup.RestoreOptions{
		DataDir: cfg.DataDir, Database: server.DatabasePath(cfg), Running: running, Force: *force,
	})
	if err != nil {
		return err
	}
	for _, a := range r.MovedAside {
		fmt.Fprintf(e.stdout, "previous contents moved to %s\n", a)
	}
	printManifest(e, "restored into "+cfg.DataDir, r.Manifest)
	if r.Config != "" {
		fmt.Fprintf(e.stdout, "the backup's config file is %s (not installed: compare it with yours)\n", filepath.Join(pos[0], r.Config))
	}
	return nil
}

func printManifest(e *env, what string, m backup.Manifest) {
	fmt.Fprintf(e.stdout, "%s\n  accounts: %d domains, %d users, %d aliases\n  mail: %d messages (%d bytes) in %d folders\n  other files: %d (shield state, DKIM keys, queue, certificates)\n  %d files hard-linked, %d copied\n",
		what, m.Accounts.Domains, m.Accounts.Users, m.Accounts.Aliases, m.Mail.Messages, m.Mail.Bytes, m.Mail.Folders, m.Files, m.Linked, m.Copied)
}

// errAccountsOnPostgres: backup and restore handle the SQLite directory and
// a node's files; a directory on PostgreSQL is the database's to back up.
var errAccountsOnPostgres = errors.New("the accounts are on PostgreSQL ([postgres] accounts = true)")

// refusePostgres stops backup and restore when the accounts are on
// PostgreSQL rather than produce a backup without them.
func refusePostgres(cfg config.Config, verb string) error {
	if !cfg.Postgres.Accounts {
		return nil
	}
	return fmt.Errorf("%s: %w: agua %s copies the SQLite accounts file and this node's data folder only, so it would leave the accounts out. "+
		"Back up the database with PostgreSQL's own tools (pg_dump -Fc, or base backups with WAL archiving) and restore it with pg_restore; "+
		"copy the data folder (DKIM keys, TLS, shield state) as files", verb, errAccountsOnPostgres, verb)
}
