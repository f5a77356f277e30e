package importer

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Progress reports an import as it goes: a bar redrawn in place on a
// terminal, else a plain line every Every (and one at the end), so that
// logs of a long import show it is moving.
type Progress struct {
	w     io.Writer
	tty   bool
	every time.Duration
	now   func() time.Time

	mu           sync.Mutex
	total, done  int
	folder       string
	began, drawn time.Time
}

// NewProgress reports to w: as a bar if tty, else a line every every
// (10 s if zero).
func NewProgress(w io.Writer, tty bool, every time.Duration) *Progress {
	if every <= 0 {
		every = 10 * time.Second
	}
	return &Progress{w: w, tty: tty, every: every, now: time.Now}
}

func (p *Progress) start(total int) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.total, p.began = total, p.now()
	if !p.tty {
		fmt.Fprintf(p.w, "import: %d messages to copy\n", total)
	}
}

func (p *Progress) add(folder string, n int) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += n
	p.folder = folder
	now := p.now()
	if p.tty && now.Sub(p.drawn) >= 100*time.Millisecond || !p.tty && now.Sub(p.drawn) >= p.every {
		p.draw(now)
	}
}

func (p *Progress) finish() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.total == 0 && !p.tty {
		return // "0 messages to copy" said it all
	}
	p.draw(p.now())
	if p.tty {
		fmt.Fprintln(p.w)
	}
}

// draw writes the current state; p.mu is held.
func (p *Progress) draw(now time.Time) {
	p.drawn = now
	pct := 100
	if p.total > 0 {
		pct = p.done * 100 / p.total
	}
	rate := ""
	if el := now.Sub(p.began).Seconds(); el > 0 && p.done > 0 {
		rate = fmt.Sprintf(" %.0f msg/s", float64(p.done)/el)
	}
	if !p.tty {
		where := ""
		if p.folder != "" { // none yet: stopped before the first message
			where = ", folder " + p.folder
		}
		fmt.Fprintf(p.w, "import: %d/%d messages (%d%%)%s%s\n", p.done, p.total, pct, rate, where)
		return
	}
	const width = 30
	filled := width * pct / 100
	folder := p.folder
	if len(folder) > 24 {
		folder = folder[:21] + "..."
	}
	fmt.Fprintf(p.w, "\r[%s%s] %3d%% %d/%d%s %-24s", strings.Repeat("#", filled), strings.Repeat(".", width-filled), pct, p.done, p.total, rate, folder)
}
