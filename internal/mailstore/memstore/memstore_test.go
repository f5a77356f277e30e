package memstore

import (
	"testing"

	"github.com/agua-mail/agua/internal/mailstore"
	"github.com/agua-mail/agua/internal/mailstore/storetest"
)

// TestConformance runs the contract's suite against the reference store.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Env {
		d := NewData()
		return storetest.Env{
			Open: func(t *testing.T) (mailstore.Store, func()) { return Open(d), func() {} },
			Deliver: func(t *testing.T, user, msg string) {
				d.Deliver(user, []byte(msg))
			},
		}
	})
}
