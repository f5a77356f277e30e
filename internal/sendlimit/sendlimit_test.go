package sendlimit

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)

func open(t *testing.T, lim Limits, path string) *Tracker {
	t.Helper()
	tr, err := Open(lim, Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

// send submits one message to rcpts (all external) and returns the first error.
func send(tr *Tracker, acct string, now time.Time, rcpts ...string) error {
	tx, err := tr.Begin(acct, now)
	if err != nil {
		return err
	}
	for _, r := range rcpts {
		if err := tx.Rcpt(r, true, now); err != nil {
			return err
		}
	}
	return tx.Commit(now)
}

func limitOf(err error) Limit {
	var le *LimitError
	if errors.As(err, &le) {
		return le.Limit
	}
	return ""
}

func TestMessagesPerHourAndDay(t *testing.T) {
	tr := open(t, Limits{MessagesPerHour: 3, MessagesPerDay: 5, SuspendHits: 100}, "")
	for i := range 3 {
		if err := send(tr, "a@x.test", t0.Add(time.Duration(i)*time.Minute), "r@ext.test"); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	err := send(tr, "a@x.test", t0.Add(5*time.Minute), "r@ext.test")
	if !errors.Is(err, ErrLimit) || limitOf(err) != MessagesPerHour {
		t.Fatalf("4th message in an hour: %v", err)
	}
	// Another account is not affected.
	if err := send(tr, "b@x.test", t0.Add(5*time.Minute), "r@ext.test"); err != nil {
		t.Fatal(err)
	}
	// An hour later the hourly window has room; the day has 5.
	later := t0.Add(61 * time.Minute)
	for i := range 2 {
		if err := send(tr, "a@x.test", later.Add(time.Duration(i)*time.Second), "r@ext.test"); err != nil {
			t.Fatalf("after an hour, message %d: %v", i, err)
		}
	}
	if err := send(tr, "a@x.test", later.Add(time.Minute), "r@ext.test"); limitOf(err) != MessagesPerDay {
		t.Fatalf("6th message in a day: %v", err)
	}
	if err := send(tr, "a@x.test", t0.Add(25*time.Hour), "r@ext.test"); err != nil {
		t.Fatalf("next day: %v", err)
	}
}

func TestRecipientsPerMessageDoesNotSuspend(t *testing.T) {
	tr := open(t, Limits{RcptsPerMessage: 2, SuspendHits: 2}, "")
	for i := range 5 {
		tx, err := tr.Begin("a@x.test", t0)
		if err != nil {
			t.Fatal(err)
		}
		tx.Rcpt(fmt.Sprintf("r%d@ext.test", i), true, t0)
		tx.Rcpt(fmt.Sprintf("s%d@ext.test", i), true, t0)
		if err := tx.Rcpt("third@ext.test", true, t0); limitOf(err) != RcptsPerMessage {
			t.Fatalf("3rd recipient: %v", err)
		}
		if err := tx.Commit(t0); err != nil {
			t.Fatal(err)
		}
	}
	if tr.IsSuspended("a@x.test") {
		t.Fatal("suspended for recipients over the per-message limit")
	}
	if tr.Hits()[RcptsPerMessage] != 5 {
		t.Fatalf("hits %v", tr.Hits())
	}
}

func TestNewRecipientsPerDay(t *testing.T) {
	tr := open(t, Limits{NewRcptsPerDay: 3, SuspendHits: 100}, "")
	if err := send(tr, "a@x.test", t0, "1@e.test", "2@e.test"); err != nil {
		t.Fatal(err)
	}
	// Known recipients do not count again; the same one twice in a message is one.
	if err := send(tr, "a@x.test", t0, "1@E.TEST", "2@e.test", "3@e.test", "3@e.test"); err != nil {
		t.Fatal(err)
	}
	tx, _ := tr.Begin("a@x.test", t0)
	if err := tx.Rcpt("1@e.test", true, t0); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rcpt("local@x.test", false, t0); err != nil {
		t.Fatal("a local recipient counted as first-time external:", err)
	}
	if err := tx.Rcpt("4@e.test", true, t0); limitOf(err) != NewRcptsPerDay {
		t.Fatalf("4th new recipient: %v", err)
	}
	// A day later there is room again.
	if err := send(tr, "a@x.test", t0.Add(25*time.Hour), "4@e.test"); err != nil {
		t.Fatal(err)
	}
}

// Two sessions of one account racing past the limit: the commit re-checks.
func TestNewRecipientsCommitRechecks(t *testing.T) {
	tr := open(t, Limits{NewRcptsPerDay: 2, SuspendHits: 100}, "")
	a, _ := tr.Begin("a@x.test", t0)
	b, _ := tr.Begin("a@x.test", t0)
	if a.Rcpt("1@e.test", true, t0) != nil || a.Rcpt("2@e.test", true, t0) != nil || b.Rcpt("3@e.test", true, t0) != nil {
		t.Fatal("refused before the limit")
	}
	if err := a.Commit(t0); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(t0); limitOf(err) != NewRcptsPerDay {
		t.Fatalf("second session's commit over the limit: %v", err)
	}
}

func TestSuspendAfterHitsAndPersist(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sendlimit.json")
	tr, err := Open(Limits{NewRcptsPerDay: 2, SuspendHits: 3, SuspendWindow: time.Hour}, Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	suspended := make(chan Suspension, 1)
	tr.opts.OnSuspend = func(s Suspension) { suspended <- s }
	send(tr, "a@x.test", t0, "1@e.test", "2@e.test")
	var last error
	for i := range 3 {
		last = send(tr, "a@x.test", t0.Add(time.Duration(i)*time.Minute), fmt.Sprintf("n%d@e.test", i))
	}
	if !errors.Is(last, ErrSuspended) {
		t.Fatalf("third hit: %v", last)
	}
	select {
	case s := <-suspended:
		if s.Account != "a@x.test" || s.By != "auto" {
			t.Fatalf("suspension %+v", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("OnSuspend not called")
	}
	if err := send(tr, "a@x.test", t0.Add(2*time.Hour), "1@e.test"); !errors.Is(err, ErrSuspended) {
		t.Fatalf("suspended account sends: %v", err)
	}
	tr.Close()

	// A restart keeps the suspension and the first-time recipient record.
	tr = open(t, Limits{NewRcptsPerDay: 2, SuspendHits: 3}, path)
	if !tr.IsSuspended("A@x.test") {
		t.Fatal("suspension lost on restart")
	}
	if ok, err := tr.Unsuspend("a@x.test"); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if err := send(tr, "a@x.test", t0.Add(3*time.Hour), "1@e.test", "2@e.test"); err != nil {
		t.Fatalf("known recipients after restart and unsuspend: %v", err)
	}
	if err := send(tr, "a@x.test", t0.Add(3*time.Hour), "brand-new@e.test"); limitOf(err) != NewRcptsPerDay {
		t.Fatalf("record of first-time recipients reset by restart: %v", err)
	}
}

func TestLoginNetworks(t *testing.T) {
	tr := open(t, Limits{SuspendNetworks: 3}, "")
	tr.Login("a@x.test", netip.MustParseAddr("127.0.1.1"), t0)
	tr.Login("a@x.test", netip.MustParseAddr("127.0.1.2"), t0) // same /24
	tr.Login("a@x.test", netip.MustParseAddr("127.0.2.1"), t0)
	if tr.IsSuspended("a@x.test") {
		t.Fatal("suspended after 2 networks")
	}
	tr.Login("a@x.test", netip.MustParseAddr("127.0.3.1"), t0.Add(2*time.Hour)) // the others are old
	if tr.IsSuspended("a@x.test") {
		t.Fatal("networks older than an hour counted")
	}
	tr.Login("a@x.test", netip.MustParseAddr("127.0.4.1"), t0.Add(2*time.Hour))
	tr.Login("a@x.test", netip.MustParseAddr("::ffff:127.0.5.1"), t0.Add(2*time.Hour))
	if !tr.IsSuspended("a@x.test") {
		t.Fatal("3 networks within an hour: not suspended")
	}
}

func TestBounceRatio(t *testing.T) {
	tr := open(t, Limits{BounceMinSample: 10, BounceRatio: 0.3, SuspendBounceRatio: 0.6, SuspendHits: 100}, "")
	for i := range 10 {
		tr.Outcome("a@x.test", i < 4, t0)
	}
	if err := send(tr, "a@x.test", t0, "r@e.test"); limitOf(err) != BounceRatio {
		t.Fatalf("40%% bounces: %v", err)
	}
	if tr.IsSuspended("a@x.test") {
		t.Fatal("suspended at 40%")
	}
	for range 10 {
		tr.Outcome("a@x.test", true, t0)
	}
	if !tr.IsSuspended("a@x.test") {
		t.Fatal("70% bounces: not suspended")
	}
}

func TestBounded(t *testing.T) {
	tr := open(t, Limits{KnownRecipients: 5, MaxAccounts: 3, NewRcptsPerDay: 1000, MessagesPerHour: 1000}, "")
	for i := range 20 {
		send(tr, "a@x.test", t0.Add(time.Duration(i)*time.Second), fmt.Sprintf("%d@e.test", i))
	}
	if n := len(tr.accounts["a@x.test"].Known); n != 5 {
		t.Fatalf("known recipients %d, want 5", n)
	}
	for i := range 10 {
		send(tr, fmt.Sprintf("u%d@x.test", i), t0, "r@e.test")
	}
	if len(tr.accounts) > 3 {
		t.Fatalf("%d accounts tracked, max 3", len(tr.accounts))
	}
}
