package server

import (
	"runtime/debug"
	"testing"

	"github.com/agua-mail/agua/internal/config"
)

// memory_limit becomes the Go runtime's soft memory limit at start.
func TestMemoryLimitApplied(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	const limit = 300 << 20
	startServer(t, func(c *config.Config) { c.MemoryLimit = limit })
	if got := debug.SetMemoryLimit(-1); got != limit {
		t.Fatalf("memory limit %d, want %d", got, limit)
	}
}
