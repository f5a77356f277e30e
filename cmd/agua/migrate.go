package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/agua-mail/agua/internal/admin"
	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/maildir"
	"github.com/agua-mail/agua/internal/mailmove"
	"github.com/agua-mail/agua/internal/mailstore"
	"github.com/agua-mail/agua/internal/pg"
	"github.com/agua-mail/agua/internal/pgstore"
	"github.com/agua-mail/agua/internal/server"
)

const migrateUsage = "migrate maildir-to-db|db-to-maildir [-user ADDRESS] [-progress] [-verify sample|full|none]"

// errServerRunning: agua migrate found the server running on this data
// folder.
var errServerRunning = errors.New("the server is running: stop it (and every node sharing [postgres]) before migrating mail")

// cmdMigrate: agua migrate maildir-to-db|db-to-maildir — every user's (or
// one user's) mail between the data folder's Maildirs and PostgreSQL,
// UIDs and UIDVALIDITY kept (internal/mailmove).
func cmdMigrate(e *env) error {
	user := e.flags.String("user", "", "move this user only (default: every user of the accounts directory)")
	progress := e.flags.Bool("progress", false, "show progress: a bar on a terminal, a line every 10 s otherwise")
	verify := e.flags.String("verify", "sample", "content compared at the end: sample (32 messages per folder), full, or none; counts, UIDs, sizes and flags always")
	pos, err := e.parse()
	if err != nil {
		return err
	}
	if len(pos) != 1 || pos[0] != "maildir-to-db" && pos[0] != "db-to-maildir" {
		return usagef(migrateUsage)
	}
	opts := mailmove.Options{}
	switch *verify {
	case "sample":
		opts.Verify = mailmove.VerifySample
	case "full":
		opts.Verify = mailmove.VerifyFull
	case "none":
		opts.Verify = mailmove.VerifyNone
	default:
		return usagef(migrateUsage)
	}
	cfg := e.cfg
	// The move reads a source nobody may change meanwhile, and writes
	// UIDs a running server would not know about: it needs the server
	// stopped, as agua restore does.
	if err := admin.NewClient(server.AdminSocket(cfg)).Do("GET", "/v1/status", nil, nil); !errors.Is(err, admin.ErrNotRunning) {
		return errServerRunning
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	md, err := maildir.Open(filepath.Join(cfg.DataDir, "mail"), maildir.Options{
		Logger: newLogger(cfg, e.stderr), Hostname: cfg.Hostname, FsyncEach: cfg.Store.Sync == "fsync"})
	if err != nil {
		return fmt.Errorf("mail store: %w", err)
	}
	defer md.Close()
	db, closeDB, err := openDBStore(ctx, cfg, newLogger(cfg, e.stderr))
	if err != nil {
		return err
	}
	defer closeDB()
	src, dst := md.MailStore(), db
	if pos[0] == "db-to-maildir" {
		src, dst = dst, src
	}

	if pos[0] == "db-to-maildir" {
		if err := checkOwner(cfg.DataDir); err != nil {
			return err
		}
	}
	if *user != "" {
		address := strings.ToLower(*user)
		if _, err := checkUser(e, address); err != nil {
			return err
		}
		opts.Users = []string{address}
	} else if opts.Users, err = allUsers(ctx, e); err != nil {
		return err
	}
	if *progress {
		opts.Progress = mailmove.Printer(e.stderr, isTerminal(e.stderr), 0)
	}
	fmt.Fprintf(e.stderr, "migrate %s: %d users\n", pos[0], len(opts.Users))
	rep, err := mailmove.Move(ctx, src, dst, opts)
	fmt.Fprintf(e.stdout, "migrate %s: %d users, %d folders; %d messages (%d bytes) copied, %d already there; content of %d compared\n",
		pos[0], rep.Users, rep.Folders, rep.Messages, rep.Bytes, rep.Present, rep.Compared)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("migrate interrupted; run the same command again to resume: %w", err)
		}
		if errors.Is(err, mailstore.ErrNotEmpty) {
			return fmt.Errorf("%w\nThe target already holds other mail in that folder (delivered there, or copied the other way): agua copies only into an empty folder, or resumes its own copy. Move that mail aside first, or migrate in the other direction", err)
		}
		return err
	}
	fmt.Fprintln(e.stdout, "verified: every folder's UIDVALIDITY, UIDNEXT, UIDs, sizes and flags match")
	return nil
}

// allUsers lists every user of the accounts directory.
func allUsers(ctx context.Context, e *env) ([]string, error) {
	d, err := server.OpenDirectory(e.cfg, newLogger(e.cfg, e.stderr))
	if err != nil {
		return nil, err
	}
	defer d.Close()
	us, err := d.ListUsers(ctx, "")
	if err != nil {
		return nil, err
	}
	out := make([]string, len(us))
	for i, u := range us {
		out[i] = u.Address
	}
	return out, nil
}

// openDBStore opens the mail store on PostgreSQL of cfg's [postgres] url,
// whose schema must be migrated (agua db migrate); the one place agua
// migrate names it. Tests replace it.
var openDBStore = func(ctx context.Context, cfg config.Config, log *slog.Logger) (mailstore.Store, func(), error) {
	if cfg.Postgres.URL == "" {
		return nil, nil, errors.New("migrate: [postgres] url is not set in the config")
	}
	pool, err := server.OpenPostgres(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	if err := pg.Ready(ctx, pool, server.PostgresMigrations()); err != nil {
		pool.Close()
		return nil, nil, fmt.Errorf("postgres: %w (agua db migrate applies the schema)", err)
	}
	st := pgstore.Open(pool, pgstore.Options{Logger: log})
	return st, func() { st.Close(); pool.Close() }, nil
}
