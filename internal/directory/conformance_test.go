package directory

import (
	"path/filepath"
	"testing"

	"github.com/agua-mail/agua/internal/accounts"
	"github.com/agua-mail/agua/internal/accounts/accountstest"
)

// TestConformance runs the accounts contract's suite against SQLite.
func TestConformance(t *testing.T) {
	accountstest.Run(t, func(t *testing.T, defaultQuota int64) accounts.Directory {
		d, err := Open(filepath.Join(t.TempDir(), "agua.db"), Options{DefaultQuota: defaultQuota})
		if err != nil {
			t.Fatal(err)
		}
		return d
	})
}
