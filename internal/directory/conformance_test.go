package directory

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/accounts"
	"github.com/agua-mail/agua/internal/accounts/accountstest"
)

// TestConformance runs the accounts contract's suite against SQLite: every
// lookup in SQL, and with the snapshot and the login cache as the server
// runs it.
func TestConformance(t *testing.T) {
	for _, c := range []struct {
		name string
		opts Options
	}{
		{"SQL", Options{}},
		{"Snapshot", Options{SnapshotMaxEntries: 1000, AuthCacheTTL: 5 * time.Minute, AuthCacheSize: 100}},
	} {
		t.Run(c.name, func(t *testing.T) {
			accountstest.Run(t, func(t *testing.T, defaultQuota int64) accounts.Directory {
				opts := c.opts
				opts.DefaultQuota = defaultQuota
				d, err := Open(filepath.Join(t.TempDir(), "agua.db"), opts)
				if err != nil {
					t.Fatal(err)
				}
				return d
			})
		})
	}
}
