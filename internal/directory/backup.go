package directory

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strings"
)

// Counts are the numbers of rows a backup holds.
type Counts struct {
	Domains int `json:"domains"`
	Users   int `json:"users"`
	Aliases int `json:"aliases"`
}

// BackupTo writes a consistent copy of the database at path to dest with
// SQLite's VACUUM INTO (https://sqlite.org/lang_vacuum.html#vacuuminto): one
// read transaction, so the copy is the database as of one moment even while
// the server and the CLI write to it (WAL mode lets the read proceed
// alongside them). dest must not exist. It returns the copy's row counts.
func BackupTo(ctx context.Context, path, dest string) (Counts, error) {
	if _, err := os.Stat(path); err != nil {
		return Counts{}, fmt.Errorf("accounts database: %w", err)
	}
	db, err := sql.Open("sqlite", "file:"+uriEscape(path)+fmt.Sprintf("?_busy_timeout=%d", busyTimeout.Milliseconds()))
	if err != nil {
		return Counts{}, err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "VACUUM INTO ?", dest); err != nil {
		return Counts{}, fmt.Errorf("snapshot of %s: %w", path, err)
	}
	return countRows(ctx, dest)
}

// RestoreFrom copies a backup made by BackupTo to path (which must not
// exist), through SQLite so the copy is checked as it is read.
func RestoreFrom(ctx context.Context, backup, path string) (Counts, error) {
	if _, err := os.Stat(path); err == nil {
		return Counts{}, fmt.Errorf("%s exists; restore writes only a new database", path)
	}
	return BackupTo(ctx, backup, path)
}

func countRows(ctx context.Context, path string) (Counts, error) {
	db, err := sql.Open("sqlite", "file:"+uriEscape(path)+"?mode=ro")
	if err != nil {
		return Counts{}, err
	}
	defer db.Close()
	var c Counts
	for _, q := range []struct {
		table string
		n     *int
	}{{"domains", &c.Domains}, {"users", &c.Users}, {"aliases", &c.Aliases}} {
		if err := db.QueryRowContext(ctx, "SELECT count(*) FROM "+q.table).Scan(q.n); err != nil {
			return c, fmt.Errorf("%s: %w", path, err)
		}
	}
	return c, nil
}

func uriEscape(path string) string {
	return strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
}
