// Package queuetest is the conformance suite of queue.Queue: every queue
// implementation (the embedded file queue, a database queue later) runs
// Run in its tests.
package queuetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/queue"
)

// Run runs the suite; open returns a new, empty queue whose clock is now.
func Run(t *testing.T, open func(t *testing.T, now func() time.Time) queue.Queue) {
	tests := []struct {
		name string
		f    func(t *testing.T, q queue.Queue, clk *Clock)
	}{
		{"EnqueueGetOpen", testEnqueue},
		{"ClaimUpdateLifecycle", testLifecycle},
		{"PartialResults", testPartial},
		{"HoldRelease", testHold},
		{"Retry", testRetry},
		{"DelayNotified", testDelayNotified},
		{"Delete", testDelete},
		{"BeginAbort", testTx},
		{"BadIDs", testBadIDs},
		{"Unclaim", testUnclaim},
		{"ConcurrentEnqueue", testConcurrent},
		{"Stats", testStats},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := &Clock{T: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
			q := open(t, clk.Now)
			t.Cleanup(func() { q.Close() })
			tc.f(t, q, clk)
		})
	}
}

// Clock is a settable clock.
type Clock struct {
	mu sync.Mutex
	T  time.Time
}

func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.T
}

func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.T = c.T.Add(d)
}

func enqueue(t *testing.T, q queue.Queue, from string, to []string, body string) string {
	t.Helper()
	id, err := q.Enqueue(context.Background(), queue.Envelope{From: from, To: to}, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// ReadBody returns the bytes of a queued message.
func ReadBody(t testing.TB, q queue.Queue, id string) string {
	t.Helper()
	rc, err := q.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func claimOne(t *testing.T, q queue.Queue, now time.Time) queue.Job {
	t.Helper()
	jobs, err := q.Claim(now, 10)
	if err != nil || len(jobs) != 1 {
		t.Fatalf("Claim = %d jobs, %v; want 1", len(jobs), err)
	}
	return jobs[0]
}

func testEnqueue(t *testing.T, q queue.Queue, clk *Clock) {
	body := "Subject: hi\r\n\r\nbody \xe2\x82\xac\r\n"
	id := enqueue(t, q, "a@local.test", []string{"b@remote.test", "c@remote.test"}, body)
	select {
	case <-q.Wake():
	default:
		t.Fatal("no wake-up after an enqueue")
	}
	m, err := q.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	if m.ID != id || m.Envelope.From != "a@local.test" || m.Size != int64(len(body)) || m.Held ||
		len(m.Rcpts) != 2 || m.Rcpts[0].Addr != "b@remote.test" || m.Rcpts[1].Status != queue.Pending {
		t.Fatalf("Get = %+v", m)
	}
	if !m.Envelope.Received.Equal(clk.Now()) {
		t.Errorf("Received = %v, want the queue's clock %v", m.Envelope.Received, clk.Now())
	}
	if got := ReadBody(t, q, id); got != body {
		t.Fatalf("body = %q", got)
	}
	clk.Add(time.Second)
	id2 := enqueue(t, q, "", []string{"x@remote.test"}, "second")
	l, err := q.List()
	if err != nil || len(l) != 2 || l[0].ID != id || l[1].ID != id2 || l[1].Envelope.From != "" {
		t.Fatalf("List = %+v, %v", l, err)
	}
}

func testLifecycle(t *testing.T, q queue.Queue, clk *Clock) {
	ctx := context.Background()
	id := enqueue(t, q, "a@local.test", []string{"b@remote.test"}, "x")
	now := clk.Now()
	j := claimOne(t, q, now)
	if j.ID != id || len(j.Rcpts) != 1 || j.Rcpts[0].Addr != "b@remote.test" || j.Size != 1 {
		t.Fatalf("job = %+v", j)
	}
	if jobs, _ := q.Claim(now, 10); len(jobs) != 0 {
		t.Fatalf("claimed twice: %+v", jobs)
	}
	next := now.Add(5 * time.Minute)
	if err := q.Update(ctx, id, []queue.Result{{Rcpt: "b@remote.test", Status: queue.Deferred, Reply: "451 4.3.0 later", Next: next}}); err != nil {
		t.Fatal(err)
	}
	m, _ := q.Get(id)
	if r := m.Rcpts[0]; r.Status != queue.Deferred || r.Attempts != 1 || !r.Next.Equal(next) || r.Reply != "451 4.3.0 later" {
		t.Fatalf("after deferral: %+v", r)
	}
	if jobs, _ := q.Claim(next.Add(-time.Second), 10); len(jobs) != 0 {
		t.Fatal("deferred recipient claimed before its time")
	}
	j = claimOne(t, q, next)
	if j.Rcpts[0].Attempts != 1 {
		t.Fatalf("claimed state = %+v", j.Rcpts[0])
	}
	if err := q.Update(ctx, id, []queue.Result{{Rcpt: "b@remote.test", Status: queue.Delivered, Reply: "250 ok"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Get(id); !errors.Is(err, queue.ErrNotFound) {
		t.Fatalf("finished message still there: %v", err)
	}
	if _, err := q.Open(id); !errors.Is(err, queue.ErrNotFound) {
		t.Fatalf("finished message body still there: %v", err)
	}
}

func testPartial(t *testing.T, q queue.Queue, clk *Clock) {
	ctx := context.Background()
	id := enqueue(t, q, "a@local.test", []string{"ok@one.test", "later@two.test", "bad@two.test"}, "x")
	j := claimOne(t, q, clk.Now())
	if len(j.Rcpts) != 3 {
		t.Fatalf("job rcpts = %+v", j.Rcpts)
	}
	err := q.Update(ctx, id, []queue.Result{
		{Rcpt: "ok@one.test", Status: queue.Delivered, Reply: "250"},
		{Rcpt: "later@two.test", Status: queue.Deferred, Reply: "421", Next: clk.Now().Add(time.Hour)},
		{Rcpt: "bad@two.test", Status: queue.Bounced, Reply: "550 5.1.1 no such user"},
	})
	if err != nil {
		t.Fatal(err)
	}
	m, err := q.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	got := []queue.Status{m.Rcpts[0].Status, m.Rcpts[1].Status, m.Rcpts[2].Status}
	if !slices.Equal(got, []queue.Status{queue.Delivered, queue.Deferred, queue.Bounced}) {
		t.Fatalf("statuses = %v", got)
	}
	clk.Add(time.Hour)
	j = claimOne(t, q, clk.Now())
	if len(j.Rcpts) != 1 || j.Rcpts[0].Addr != "later@two.test" {
		t.Fatalf("only the deferred recipient should be due: %+v", j.Rcpts)
	}
}

func testHold(t *testing.T, q queue.Queue, clk *Clock) {
	id := enqueue(t, q, "a@local.test", []string{"b@remote.test"}, "x")
	if err := q.Hold(id); err != nil {
		t.Fatal(err)
	}
	if m, _ := q.Get(id); !m.Held {
		t.Fatal("not held")
	}
	if jobs, _ := q.Claim(clk.Now(), 10); len(jobs) != 0 {
		t.Fatal("held message claimed")
	}
	if err := q.Release(id); err != nil {
		t.Fatal(err)
	}
	claimOne(t, q, clk.Now())
}

func testRetry(t *testing.T, q queue.Queue, clk *Clock) {
	id := enqueue(t, q, "a@local.test", []string{"b@remote.test"}, "x")
	claimOne(t, q, clk.Now())
	q.Update(context.Background(), id, []queue.Result{{Rcpt: "b@remote.test", Status: queue.Deferred, Next: clk.Now().Add(4 * time.Hour)}})
	if jobs, _ := q.Claim(clk.Now(), 10); len(jobs) != 0 {
		t.Fatal("due too early")
	}
	if err := q.Retry(id, clk.Now()); err != nil {
		t.Fatal(err)
	}
	claimOne(t, q, clk.Now())
}

// testDelayNotified: a result can record that the sender was told of the
// delay; the message and its later jobs say so.
func testDelayNotified(t *testing.T, q queue.Queue, clk *Clock) {
	id := enqueue(t, q, "a@local.test", []string{"b@remote.test", "c@remote.test"}, "x")
	if j := claimOne(t, q, clk.Now()); j.DelayNotified {
		t.Fatal("new job marked notified")
	}
	q.Update(context.Background(), id, []queue.Result{
		{Rcpt: "b@remote.test", Status: queue.Deferred, Next: clk.Now(), DelayNotified: true},
		{Rcpt: "c@remote.test", Status: queue.Deferred, Next: clk.Now()},
	})
	if m, _ := q.Get(id); !m.DelayNotified {
		t.Fatal("message not marked notified")
	}
	if j := claimOne(t, q, clk.Now()); !j.DelayNotified {
		t.Fatal("later job not marked notified")
	}
}

func testDelete(t *testing.T, q queue.Queue, clk *Clock) {
	ctx := context.Background()
	keep := enqueue(t, q, "a@local.test", []string{"keep@remote.test"}, "keep")
	id := enqueue(t, q, "a@local.test", []string{"b@remote.test"}, "x")
	jobs, _ := q.Claim(clk.Now(), 10)
	if len(jobs) != 2 {
		t.Fatalf("jobs = %d", len(jobs))
	}
	if err := q.Delete(id); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Get(id); !errors.Is(err, queue.ErrNotFound) {
		t.Fatalf("deleted message: %v", err)
	}
	// The delivery that had claimed it reports afterwards: ignored.
	q.Update(ctx, id, []queue.Result{{Rcpt: "b@remote.test", Status: queue.Deferred, Next: clk.Now()}})
	if _, err := q.Get(id); !errors.Is(err, queue.ErrNotFound) {
		t.Fatal("update resurrected a deleted message")
	}
	if err := q.Delete(id); !errors.Is(err, queue.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if got := ReadBody(t, q, keep); got != "keep" {
		t.Fatalf("neighbour body = %q", got)
	}
}

func testTx(t *testing.T, q queue.Queue, clk *Clock) {
	ctx := context.Background()
	tx, err := q.Begin(ctx, queue.Envelope{From: "a@local.test", To: []string{"b@remote.test"}}, strings.NewReader("aborted"))
	if err != nil {
		t.Fatal(err)
	}
	if l, _ := q.List(); len(l) != 0 {
		t.Fatal("uncommitted message visible")
	}
	tx.Abort()
	tx, err = q.Begin(ctx, queue.Envelope{From: "a@local.test", To: []string{"b@remote.test"}}, strings.NewReader("committed"))
	if err != nil {
		t.Fatal(err)
	}
	id, err := tx.Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if l, _ := q.List(); len(l) != 1 || l[0].ID != id || ReadBody(t, q, id) != "committed" {
		t.Fatalf("after commit: %+v", l)
	}
	if _, err := q.Enqueue(ctx, queue.Envelope{From: "a@local.test"}, strings.NewReader("x")); err == nil {
		t.Fatal("enqueue without recipients accepted")
	}
}

func testBadIDs(t *testing.T, q queue.Queue, clk *Clock) {
	for _, id := range []string{"", "../x", "/etc/passwd", "ABC", "a b"} {
		if _, err := q.Get(id); !errors.Is(err, queue.ErrBadID) {
			t.Errorf("Get(%q) = %v, want ErrBadID", id, err)
		}
		if err := q.Delete(id); !errors.Is(err, queue.ErrBadID) {
			t.Errorf("Delete(%q) = %v, want ErrBadID", id, err)
		}
	}
	if err := q.Hold("0123abcd"); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("Hold(unknown) = %v", err)
	}
	id := enqueue(t, q, "a@local.test", []string{"b@remote.test"}, "x")
	err := q.Update(context.Background(), id, []queue.Result{{Rcpt: "b@remote.test", Status: queue.Delivered}})
	if !errors.Is(err, queue.ErrNotClaimed) {
		t.Errorf("update of an unclaimed recipient = %v", err)
	}
}

func testUnclaim(t *testing.T, q queue.Queue, clk *Clock) {
	id := enqueue(t, q, "a@local.test", []string{"b@remote.test"}, "x")
	j := claimOne(t, q, clk.Now())
	q.Unclaim(id, []string{j.Rcpts[0].Addr})
	j = claimOne(t, q, clk.Now())
	if j.Rcpts[0].Attempts != 0 || j.Rcpts[0].Status != queue.Pending {
		t.Fatalf("unclaim changed the state: %+v", j.Rcpts[0])
	}
}

func testConcurrent(t *testing.T, q queue.Queue, clk *Clock) {
	const n = 40
	ids := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			body := fmt.Sprintf("message %d\r\n%s", i, bytes.Repeat([]byte("x"), i*100))
			id, err := q.Enqueue(context.Background(), queue.Envelope{From: "a@local.test", To: []string{fmt.Sprintf("r%d@remote.test", i)}}, strings.NewReader(body))
			if err != nil {
				errs <- err
				return
			}
			ids[i] = id
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i, id := range ids {
		want := fmt.Sprintf("message %d\r\n%s", i, bytes.Repeat([]byte("x"), i*100))
		if got := ReadBody(t, q, id); got != want {
			t.Fatalf("message %d: body of %d bytes, want %d", i, len(got), len(want))
		}
	}
	if st := q.Stats(); st.Messages != n {
		t.Fatalf("Stats.Messages = %d", st.Messages)
	}
}

func testStats(t *testing.T, q queue.Queue, clk *Clock) {
	first := clk.Now()
	a := enqueue(t, q, "a@local.test", []string{"x@one.test", "y@two.test"}, "12345")
	clk.Add(time.Minute)
	b := enqueue(t, q, "a@local.test", []string{"z@Two.test"}, "123")
	q.Hold(b)
	claimOne(t, q, clk.Now())
	q.Update(context.Background(), a, []queue.Result{
		{Rcpt: "x@one.test", Status: queue.Delivered},
		{Rcpt: "y@two.test", Status: queue.Deferred, Next: clk.Now().Add(time.Hour)},
	})
	st := q.Stats()
	if st.Messages != 2 || st.Recipients != 2 || st.Held != 1 || st.Deferred != 1 || st.Bytes != 8 ||
		!st.Oldest.Equal(first) || st.ByDomain["two.test"] != 2 || st.ByDomain["one.test"] != 0 {
		t.Fatalf("Stats = %+v", st)
	}
}

// OpenNodes opens two queues on one shared store, as two nodes of a
// cluster would, with the same clock; both must claim with the given
// lease. An implementation that one process owns (the file queue) skips.
type OpenNodes func(t *testing.T, now func() time.Time) (a, b queue.Queue)

// RunNodes runs the cases of a queue shared by several nodes: what one
// enqueues the other sees and is woken for, no recipient is claimed by two
// at once, and a claim whose lease ran out (its node died) is taken over.
func RunNodes(t *testing.T, lease time.Duration, open OpenNodes) {
	tests := []struct {
		name string
		f    func(t *testing.T, a, b queue.Queue, clk *Clock, lease time.Duration)
	}{
		{"SeenAndWoken", testNodesSeen},
		{"NoDoubleClaim", testNodesNoDoubleClaim},
		{"ExpiredClaimTakenOver", testNodesTakeover},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := &Clock{T: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
			a, b := open(t, clk.Now)
			t.Cleanup(func() { a.Close(); b.Close() })
			tc.f(t, a, b, clk, lease)
		})
	}
}

// drain empties a wake channel.
func drain(c <-chan struct{}) {
	for {
		select {
		case <-c:
		default:
			return
		}
	}
}

func testNodesSeen(t *testing.T, a, b queue.Queue, clk *Clock, lease time.Duration) {
	drain(b.Wake())
	id := enqueue(t, a, "a@local.test", []string{"b@remote.test"}, "from node a")
	// Bounded wait: a notification crosses nodes asynchronously.
	select {
	case <-b.Wake():
	case <-time.After(30 * time.Second):
		t.Fatal("node b was not woken by node a's enqueue")
	}
	m, err := b.Get(id)
	if err != nil || m.Envelope.From != "a@local.test" {
		t.Fatalf("node b Get = %+v, %v", m, err)
	}
	if got := ReadBody(t, b, id); got != "from node a" {
		t.Fatalf("node b body = %q", got)
	}
	j := claimOne(t, b, clk.Now())
	if err := b.Update(context.Background(), j.ID, []queue.Result{{Rcpt: "b@remote.test", Status: queue.Delivered}}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Get(id); !errors.Is(err, queue.ErrNotFound) {
		t.Fatalf("node a still has the message b delivered: %v", err)
	}
}

func testNodesNoDoubleClaim(t *testing.T, a, b queue.Queue, clk *Clock, lease time.Duration) {
	const n = 30
	want := map[string]bool{}
	for i := range n {
		to := []string{fmt.Sprintf("x%d@one.test", i), fmt.Sprintf("y%d@two.test", i)}
		enqueue(t, a, "a@local.test", to, "x")
		want[to[0]], want[to[1]] = true, true
	}
	var mu sync.Mutex
	claimedBy := map[string]string{}
	var double []string
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for name, q := range map[string]queue.Queue{"a": a, "b": b} {
		wg.Go(func() {
			for {
				jobs, err := q.Claim(clk.Now(), 3)
				if err != nil {
					errs <- err
					return
				}
				if len(jobs) == 0 {
					return
				}
				mu.Lock()
				for _, j := range jobs {
					for _, r := range j.Rcpts {
						if by, ok := claimedBy[r.Addr]; ok {
							double = append(double, r.Addr+" by "+by+" and "+name)
						}
						claimedBy[r.Addr] = name
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(double) > 0 {
		t.Fatalf("claimed twice: %v", double)
	}
	if len(claimedBy) != len(want) {
		t.Fatalf("%d recipients claimed, want %d", len(claimedBy), len(want))
	}
	// A node cannot record results for what the other claimed.
	for addr, by := range claimedBy {
		other := a
		if by == "a" {
			other = b
		}
		l, _ := other.List()
		for _, m := range l {
			for _, r := range m.Rcpts {
				if r.Addr == addr {
					err := other.Update(context.Background(), m.ID, []queue.Result{{Rcpt: addr, Status: queue.Delivered}})
					if !errors.Is(err, queue.ErrNotClaimed) {
						t.Fatalf("update by the node that did not claim %s = %v", addr, err)
					}
					return
				}
			}
		}
	}
}

func testNodesTakeover(t *testing.T, a, b queue.Queue, clk *Clock, lease time.Duration) {
	ctx := context.Background()
	id := enqueue(t, a, "a@local.test", []string{"b@remote.test"}, "x")
	claimOne(t, a, clk.Now())
	// Node a "dies": it renews nothing from here on, as its clock says the
	// lease has run out (a claim already expired is never renewed).
	if jobs, err := b.Claim(clk.Now(), 10); err != nil || len(jobs) != 0 {
		t.Fatalf("node b claimed a live claim of node a: %+v, %v", jobs, err)
	}
	clk.Add(lease + time.Second)
	j := claimOne(t, b, clk.Now())
	if j.ID != id || len(j.Rcpts) != 1 {
		t.Fatalf("takeover job = %+v", j)
	}
	// Node a comes back with its old outcome: not recorded, b owns it now.
	err := a.Update(ctx, id, []queue.Result{{Rcpt: "b@remote.test", Status: queue.Deferred, Next: clk.Now().Add(time.Hour)}})
	if !errors.Is(err, queue.ErrNotClaimed) {
		t.Fatalf("update by the node whose claim was taken over = %v", err)
	}
	if err := b.Update(ctx, id, []queue.Result{{Rcpt: "b@remote.test", Status: queue.Delivered}}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Get(id); !errors.Is(err, queue.ErrNotFound) {
		t.Fatalf("delivered message still queued: %v", err)
	}
}
