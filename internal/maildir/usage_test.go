package maildir

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// TestUsageListingDoesNotBlockDeliveries: when a mailbox's usage is more
// than a minute old its folders are listed again, and a delivery to it
// goes on with the stale figure instead of waiting for the listing (which
// took hundreds of milliseconds for 100,000 messages, every delivery to
// the mailbox waiting meanwhile). The listing, held here by a hook, ends
// with the exact figure whether the delivery's file was committed before
// the folders were read (listed: not counted twice) or after (not listed:
// added).
func TestUsageListingDoesNotBlockDeliveries(t *testing.T) {
	for _, hook := range []string{"before", "after"} {
		t.Run(hook, func(t *testing.T) {
			s := openTest(t)
			ctx := context.Background()
			clock := time.Now()
			s.now = func() time.Time { return clock } // only the test's goroutine moves it
			r := rcpt("a@example.org", 1<<20)
			for range 3 {
				if err := s.Deliver(ctx, message(body), []Recipient{r}); err != nil {
					t.Fatal(err)
				}
			}
			size := int64(len(r.Prefix) + len(body))
			entered, release := make(chan struct{}), make(chan struct{})
			hold := func(string) { close(entered); <-release }
			if hook == "before" {
				s.beforeList = hold
			} else {
				s.afterList = hold
			}
			clock = clock.Add(2 * usageMaxAge)
			delivered := make(chan error, 1)
			go func() { delivered <- s.Deliver(ctx, message(body), []Recipient{r}) }()
			select {
			case <-entered:
			case <-time.After(20 * time.Second):
				t.Fatal("the stale usage was not listed again")
			}
			select {
			case err := <-delivered:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(20 * time.Second):
				close(release)
				t.Fatal("the delivery waited for the listing of its mailbox")
			}
			if used, count, _ := s.Usage("a@example.org"); used != 4*size || count != 4 {
				t.Errorf("usage while listing = %d, %d; want %d, 4", used, count, 4*size)
			}
			close(release)
			mb := s.mailbox("a@example.org")
			waitFor(t, func() bool {
				mb.mu.Lock()
				defer mb.mu.Unlock()
				return mb.scan == nil
			})
			if used, count, _ := s.Usage("a@example.org"); used != 4*size || count != 4 {
				t.Errorf("usage after the listing = %d, %d; want %d, 4", used, count, 4*size)
			}
		})
	}
}

// TestUsageWarmedAtOpen: Open lists every mailbox's usage in the
// background, so that the first deliveries after a start do not wait for
// a listing of their mailbox (the stall of the first second after `agua
// serve` started, with a mailbox of 100,000 messages).
func TestUsageWarmedAtOpen(t *testing.T) {
	root := filepath.Join(t.TempDir(), "mail")
	ctx := context.Background()
	first, err := Open(root, Options{Hostname: "mx"})
	if err != nil {
		t.Fatal(err)
	}
	boxes := map[string]int{"a@example.org": 5, "b@example.net": 2, "c.d@example.org": 1}
	for box, n := range boxes {
		for range n {
			if err := first.Deliver(ctx, message(body), []Recipient{rcpt(box, 1<<20)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	first.Close()

	s, err := Open(root, Options{Hostname: "mx"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	<-s.warmed
	s.beforeList = func(path string) { t.Errorf("a delivery listed %s after the warm-up", path) }
	for box, n := range boxes {
		r := rcpt(box, 1<<20)
		if err := s.Deliver(ctx, message(body), []Recipient{r}); err != nil {
			t.Fatal(err)
		}
		size := int64(len(r.Prefix) + len(body))
		if used, count, _ := s.Usage(box); used != int64(n+1)*size || count != n+1 {
			t.Errorf("%s: usage %d, %d; want %d, %d", box, used, count, int64(n+1)*size, n+1)
		}
	}
}
