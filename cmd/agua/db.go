package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/agua-mail/agua/internal/pg"
	"github.com/agua-mail/agua/internal/server"
)

// cmdDB: agua db migrate [-status] — the PostgreSQL schema of [postgres].
func cmdDB(e *env) error {
	status := e.flags.Bool("status", false, "only list the applied and pending migrations")
	pos, err := e.parse()
	if err != nil {
		return err
	}
	if len(pos) != 1 || pos[0] != "migrate" {
		return usagef("db migrate [-status]")
	}
	if e.cfg.Postgres.URL == "" {
		return errors.New("db migrate: [postgres] url is not set in the config")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	pool, err := server.OpenPostgres(ctx, e.cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	ms := server.PostgresMigrations()
	if *status {
		applied, err := pg.Applied(ctx, pool)
		if err != nil {
			return err
		}
		for _, m := range applied {
			fmt.Fprintf(e.stdout, "applied  %s/%d %s\n", m.Component, m.Version, m.Name)
		}
		todo, err := pg.Pending(ctx, pool, ms)
		for _, m := range todo {
			fmt.Fprintf(e.stdout, "pending  %s/%d %s\n", m.Component, m.Version, m.Name)
		}
		if err != nil {
			return err
		}
		if len(todo) == 0 {
			fmt.Fprintln(e.stdout, "schema up to date")
		}
		return nil
	}
	done, err := pg.Migrate(ctx, pool, ms)
	for _, m := range done {
		fmt.Fprintf(e.stdout, "applied  %s/%d %s\n", m.Component, m.Version, m.Name)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "schema up to date (%d migrations applied now)\n", len(done))
	return nil
}
