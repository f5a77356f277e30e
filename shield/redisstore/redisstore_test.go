package redisstore_test

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/agua-mail/agua/shield"
	"github.com/agua-mail/agua/shield/redisstore"
	"github.com/agua-mail/agua/shield/redisstore/redistest"
	"github.com/agua-mail/agua/shield/statetest"
)

// The Redis store passes the suite against a real redis-server: each
// subtest gets its own key prefix (its own state and channel) on one
// server, and every handle is another node.
func TestConformance(t *testing.T) {
	srv := redistest.Start(t)
	var n atomic.Int64
	statetest.Run(t, func(t *testing.T) statetest.Open {
		prefix := fmt.Sprintf("test%d:", n.Add(1))
		return func(t *testing.T) shield.StateStore {
			st, err := redisstore.Open(redisstore.Options{URL: srv.URL(0), Prefix: prefix, Capacity: 1000})
			if err != nil {
				t.Fatal(err)
			}
			return st
		}
	})
}
