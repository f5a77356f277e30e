package statetest_test

import (
	"testing"

	"github.com/agua-mail/agua/shield"
	"github.com/agua-mail/agua/shield/statetest"
)

// The default store passes the suite: every OpenLocalStore of one folder is
// another handle on the same state, and the folder is what survives.
func TestLocalStore(t *testing.T) {
	statetest.Run(t, func(t *testing.T) statetest.Open {
		dir := t.TempDir()
		return func(t *testing.T) shield.StateStore {
			st, err := shield.OpenLocalStore(dir, shield.LocalStoreOptions{Capacity: 1000})
			if err != nil {
				t.Fatal(err)
			}
			return st
		}
	})
}
