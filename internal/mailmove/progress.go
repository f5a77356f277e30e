package mailmove

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Printer returns a Progress callback that writes to w: a bar redrawn in
// place at most ten times a second when tty, else a plain line every
// every (10 s if zero) and at the end.
func Printer(w io.Writer, tty bool, every time.Duration) func(Progress) {
	if every <= 0 {
		every = 10 * time.Second
	}
	var drawn time.Time
	began := time.Now()
	return func(p Progress) {
		now := time.Now()
		end := p.FoldersDone == p.FolderCount
		if !end && (tty && now.Sub(drawn) < 100*time.Millisecond || !tty && now.Sub(drawn) < every) {
			return
		}
		drawn = now
		line := fmt.Sprintf("%d/%d messages, %s/%s, %d/%d folders",
			p.Messages, p.TotalMessages, mib(p.Bytes), mib(p.TotalBytes), p.FoldersDone, p.FolderCount)
		if !end && p.User != "" {
			line += fmt.Sprintf(" (%s %s)", p.User, folderName(p.Folder))
		}
		if end {
			line += fmt.Sprintf(" in %s", now.Sub(began).Round(time.Second/10))
		}
		if !tty {
			fmt.Fprintln(w, "migrate:", line)
			return
		}
		const width = 30
		filled := width
		if p.TotalBytes > 0 {
			filled = int(int64(width) * p.Bytes / p.TotalBytes)
		}
		fmt.Fprintf(w, "\r\x1b[K[%s%s] %s", strings.Repeat("#", filled), strings.Repeat(".", width-filled), line)
		if end {
			fmt.Fprintln(w)
		}
	}
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
