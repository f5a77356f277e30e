package outbound

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// A destination that keeps failing gets one summary line per interval
// instead of a line per attempt, and one line when it recovers.
func TestFailLogFolds(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	var f failLog
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	var levels []slog.Level
	for i := range 50 {
		levels = append(levels, f.attempt(log, "dead.test", true, 2, "451 4.4.1 connection refused", now.Add(time.Duration(i)*time.Second)))
	}
	if levels[0] != slog.LevelInfo || levels[failStreak-2] != slog.LevelInfo || levels[failStreak-1] != slog.LevelDebug || levels[49] != slog.LevelDebug {
		t.Fatalf("levels: %v", levels)
	}
	if n := strings.Count(buf.String(), "outbound destination failing"); n != 1 {
		t.Fatalf("%d summary lines within 50s, want 1:\n%s", n, buf.String())
	}
	// After the interval, another summary counting the attempts since.
	f.attempt(log, "dead.test", true, 2, "451 4.4.1 connection refused", now.Add(failSummaryEvery+time.Minute))
	if n := strings.Count(buf.String(), "outbound destination failing"); n != 2 || !strings.Contains(buf.String(), "messages_since_last_line=96") {
		t.Fatalf("second summary:\n%s", buf.String())
	}
	// Other destinations are not affected.
	if lvl := f.attempt(log, "ok.test", false, 1, "", now); lvl != slog.LevelInfo {
		t.Fatal(lvl)
	}
	if lvl := f.attempt(log, "dead.test", false, 1, "", now); lvl != slog.LevelInfo || !strings.Contains(buf.String(), `msg="outbound destination recovered" destination=dead.test failed_attempts=51`) {
		t.Fatalf("recovery: %v\n%s", lvl, buf.String())
	}
	if len(f.dests) != 0 {
		t.Fatalf("table not emptied: %v", f.dests)
	}
}
