package outbound

import (
	"log/slog"
	"sync"
	"time"
)

// The log of a destination that keeps failing is folded: after
// failStreak failed attempts in a row, the per-attempt lines drop to debug
// level and one "outbound destination failing" line, at most every
// failSummaryEvery, says how many attempts failed since the last one and
// the last reply; the first success afterwards logs "outbound destination
// recovered". A dead destination with a thousand deferred messages thus
// writes a line every few minutes, not one per message per retry.
const (
	failStreak       = 3
	failSummaryEvery = 5 * time.Minute
	maxFailing       = 1000 // destinations tracked; beyond it, lines are not folded
)

type failLog struct {
	mu    sync.Mutex
	dests map[string]*failing
}

type failing struct {
	streak  int       // failed attempts in a row
	unsaid  int       // failed attempts since the last summary line
	said    time.Time // when the last summary line was written
	reply   string    // the last failure
	summary bool      // a summary line was written in this streak
}

// attempt records an attempt at dest (n messages; failed: nothing was
// delivered and something must be retried) and returns the level for its
// own log lines.
func (f *failLog) attempt(log *slog.Logger, dest string, failed bool, n int, reply string, now time.Time) slog.Level {
	f.mu.Lock()
	defer f.mu.Unlock()
	x := f.dests[dest]
	if !failed {
		if x != nil {
			if x.summary {
				log.Info("outbound destination recovered", "destination", dest, "failed_attempts", x.streak)
			}
			delete(f.dests, dest)
		}
		return slog.LevelInfo
	}
	if x == nil {
		if len(f.dests) >= maxFailing {
			return slog.LevelInfo
		}
		if f.dests == nil {
			f.dests = map[string]*failing{}
		}
		x = &failing{}
		f.dests[dest] = x
	}
	x.streak++
	x.unsaid += n
	x.reply = reply
	if x.streak < failStreak {
		return slog.LevelInfo
	}
	if !x.summary || now.Sub(x.said) >= failSummaryEvery {
		log.Warn("outbound destination failing", "destination", dest, "failed_attempts", x.streak,
			"messages_since_last_line", x.unsaid, "last_reply", x.reply)
		x.summary, x.said, x.unsaid = true, now, 0
	}
	return slog.LevelDebug
}
