package config

import (
	"net/url"
)

// PostgresConfig puts the accounts directory, the mail store and the
// outbound queue on PostgreSQL (issue 17), so that several nodes serve the
// same users. Each part is chosen on its own; what is not on PostgreSQL
// stays on this node (SQLite directory, Maildir store, file queue), which
// is the single-machine default.
type PostgresConfig struct {
	URL      string `toml:"url" doc:"PostgreSQL connection URL shared by every node, e.g. \"postgres://agua:secret@127.0.0.1:5432/agua?sslmode=disable\" (PG* environment variables fill in what it leaves out, e.g. PGPASSWORD). Empty: nothing is on PostgreSQL."`
	MaxConns int    `toml:"max_conns" doc:"Most connections this node opens to PostgreSQL (a pool shared by every part on it)."`
	Migrate  bool   `toml:"migrate" doc:"Apply pending schema migrations when agua serve starts (one node at a time, under an advisory lock). Off: run agua db migrate before starting a new version; serve refuses to start while migrations are pending."`
	Accounts bool   `toml:"accounts" doc:"Keep the accounts directory (domains, users, aliases, quotas, password hashes) on PostgreSQL instead of the SQLite file of [accounts] database."`
	Mail     bool   `toml:"mail" doc:"Keep the mailboxes (messages, folders, flags, UIDs) on PostgreSQL instead of Maildir folders in <data_dir>/mail."`
	Queue    bool   `toml:"queue" doc:"Keep the outbound queue on PostgreSQL instead of <data_dir>/queue, so that mail queued by a node that dies is delivered by the others."`
}

// Enabled says whether any part is on PostgreSQL.
func (c PostgresConfig) Enabled() bool { return c.Accounts || c.Mail || c.Queue }

func (c PostgresConfig) validate() []Problem {
	var ps []Problem
	if c.URL != "" {
		u, err := url.Parse(c.URL)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			ps = append(ps, Problem{Key: "postgres.url", Msg: "must be a postgres:// or postgresql:// URL"})
		}
	}
	if c.Enabled() && c.URL == "" {
		ps = append(ps, Problem{Key: "postgres.url", Msg: "is needed when accounts, mail or queue is on PostgreSQL"})
	}
	if c.MaxConns < 1 || c.MaxConns > 10000 {
		ps = append(ps, Problem{Key: "postgres.max_conns", Msg: "must be between 1 and 10000"})
	}
	return ps
}
