package pgqueue_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/outbound"
	"github.com/agua-mail/agua/internal/pg"
	"github.com/agua-mail/agua/internal/pg/pgtest"
	"github.com/agua-mail/agua/internal/pgqueue"
	"github.com/agua-mail/agua/internal/queue"
	"github.com/agua-mail/agua/internal/queue/queuetest"
)

// sink is an SMTP server that accepts everything and keeps each message
// with its envelope.
type sink struct {
	ln   net.Listener
	mu   sync.Mutex
	msgs []string // "from|rcpt,rcpt|data"
}

func startSink(t *testing.T, ip string) *sink {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	s := &sink{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	return s
}

func (s *sink) serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	say := func(l string) { fmt.Fprintf(c, "%s\r\n", l) }
	say("220 sink.test ESMTP")
	var from string
	var rcpts []string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimSpace(line))
		switch {
		case strings.HasPrefix(cmd, "EHLO"), strings.HasPrefix(cmd, "HELO"):
			say("250 sink.test")
		case strings.HasPrefix(cmd, "MAIL FROM:"):
			from, rcpts = strings.TrimSpace(line[10:]), nil
			say("250 ok")
		case strings.HasPrefix(cmd, "RCPT TO:"):
			rcpts = append(rcpts, strings.TrimSpace(line[8:]))
			say("250 ok")
		case cmd == "DATA":
			say("354 go on")
			var data strings.Builder
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				data.WriteString(strings.TrimPrefix(l, "."))
			}
			s.mu.Lock()
			s.msgs = append(s.msgs, from+"|"+strings.Join(rcpts, ",")+"|"+data.String())
			s.mu.Unlock()
			say("250 queued")
		case cmd == "RSET", cmd == "NOOP":
			say("250 ok")
		case cmd == "QUIT":
			say("221 bye")
			return
		default:
			say("502 5.5.1 not here")
		}
	}
}

func (s *sink) received() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.msgs...)
}

// startEngine runs a delivery engine on q that sends everything to the
// sink, until the test ends.
func startEngine(t *testing.T, q *pgqueue.Queue, s *sink) {
	t.Helper()
	e, err := outbound.New(outbound.Options{
		Queue:      q,
		RelayHost:  s.ln.Addr().String(),
		DisableTLS: true,
		Bounce:     func(context.Context, string, []byte) error { return nil },
		RetryMin:   100 * time.Millisecond,
		RetryMax:   200 * time.Millisecond,
		Poll:       200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// waitFor polls cond for at most two minutes (the machine may be busy;
// nothing here depends on how long it takes).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLeaseRenewed: while a delivery runs, its node renews the claim, so
// the lease never runs out under it.
func TestLeaseRenewed(t *testing.T) {
	srv := pgtest.Shared(t)
	pool := openPool(t, srv.NewDatabase(t))
	clk := &queuetest.Clock{T: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	const lease = 300 * time.Millisecond // renewed every 100 ms of real time
	q := newQueue(t, pool, pgqueue.Options{Now: clk.Now, Lease: lease})
	id, err := q.Enqueue(t.Context(), queue.Envelope{From: "a@local.test", To: []string{"b@remote.test"}}, strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	if jobs, err := q.Claim(clk.Now(), 1); err != nil || len(jobs) != 1 {
		t.Fatalf("Claim = %v, %v", jobs, err)
	}
	until := func() time.Time {
		var u time.Time
		if err := pool.QueryRow(t.Context(), `SELECT claimed_until FROM queue_rcpt WHERE message = $1`, id).Scan(&u); err != nil {
			t.Fatal(err)
		}
		return u
	}
	first := until()
	if !first.Equal(clk.Now().Add(lease)) {
		t.Fatalf("claimed until %v, want %v", first, clk.Now().Add(lease))
	}
	clk.Add(lease / 2) // still held: the renewal moves the end on
	want := clk.Now().Add(lease)
	waitFor(t, "the lease renewed", func() bool { return until().Equal(want) })
	if err := q.Update(t.Context(), id, []queue.Result{{Rcpt: "b@remote.test", Status: queue.Delivered}}); err != nil {
		t.Fatalf("update after renewals: %v", err)
	}
}

// childEnv names the database a child process claims from (TestKilledNode).
const childEnv = "PGQUEUE_TEST_CHILD_URL"

// TestKilledNode: a node claims mail and is killed with SIGKILL before it
// delivers; the other node, which could not claim it while the lease ran,
// delivers it once the lease is over, exactly once.
func TestKilledNode(t *testing.T) {
	if url := os.Getenv(childEnv); url != "" {
		childClaims(url)
		return
	}
	srv := pgtest.Shared(t)
	url := srv.NewDatabase(t)
	pool := openPool(t, url)
	const lease = 2 * time.Second
	q := newQueue(t, pool, pgqueue.Options{Lease: lease, Poll: 100 * time.Millisecond})
	var ids []string
	for i := range 3 {
		id, err := q.Enqueue(t.Context(), queue.Envelope{From: "a@local.test", To: []string{fmt.Sprintf("r%d@remote.test", i)}},
			strings.NewReader(fmt.Sprintf("Subject: %d\r\n\r\nmessage %d\r\n", i, i)))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}

	// Node 1: another process that claims everything and then hangs.
	cmd := exec.Command(os.Args[0], "-test.run=^TestKilledNode$")
	cmd.Env = append(os.Environ(), childEnv+"="+url)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "claimed 3\n" {
		t.Fatalf("child said %q, %v", line, err)
	}
	// Its claims hold while it lives.
	if jobs, err := q.Claim(time.Now(), 10); err != nil || len(jobs) != 0 {
		t.Fatalf("node 2 claimed node 1's live claims: %d jobs, %v", len(jobs), err)
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL: nothing given back
		t.Fatal(err)
	}
	cmd.Wait()

	// Node 2 delivers them once the lease is over.
	s := startSink(t, "127.0.0.71")
	startEngine(t, q, s)
	waitFor(t, "the killed node's mail delivered", func() bool { return q.Stats().Messages == 0 })
	got := s.received()
	if len(got) != 3 {
		t.Fatalf("sink received %d messages, want 3: %q", len(got), got)
	}
	seen := map[string]int{}
	for _, m := range got {
		seen[m]++
	}
	for i := range 3 {
		want := fmt.Sprintf("<a@local.test>|<r%d@remote.test>|Subject: %d\r\n\r\nmessage %d\r\n", i, i, i)
		if seen[want] != 1 {
			t.Errorf("message %d received %d times; got %q", i, seen[want], got)
		}
	}
}

// childClaims is node 1 of TestKilledNode: it claims all and waits to be
// killed.
func childClaims(url string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, err := pg.Open(ctx, url, pg.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	q, err := pgqueue.New(pool, pgqueue.Options{Lease: 2 * time.Second, Node: "child"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	jobs, err := q.Claim(time.Now(), 10)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	n := 0
	for _, j := range jobs {
		n += len(j.Rcpts)
	}
	fmt.Printf("claimed %d\n", n)
	time.Sleep(10 * time.Minute) // killed long before
	os.Exit(3)
}

// TestDatabaseRestart: PostgreSQL killed (SIGKILL) and restarted under a
// running node: enqueues while it is down fail with pg.ErrUnavailable
// (the SMTP server's 451), never a false success; the outcome of a
// delivery made during the outage is kept and recorded after it; mail
// queued before and after is delivered without restarting the node.
func TestDatabaseRestart(t *testing.T) {
	srv := pgtest.Start(t)
	url := srv.NewDatabase(t)
	pool := openPool(t, url)
	q := newQueue(t, pool, pgqueue.Options{Poll: 100 * time.Millisecond, Timeout: 10 * time.Second})
	ctx := t.Context()
	env := func(to string) queue.Envelope { return queue.Envelope{From: "a@local.test", To: []string{to}} }

	before, err := q.Enqueue(ctx, env("before@remote.test"), strings.NewReader("before\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	jobs, err := q.Claim(time.Now(), 10)
	if err != nil || len(jobs) != 1 {
		t.Fatalf("Claim = %v, %v", jobs, err)
	}

	srv.Kill()
	if _, err := q.Enqueue(ctx, env("down@remote.test"), strings.NewReader("down\r\n")); !errors.Is(err, pg.ErrUnavailable) {
		t.Fatalf("enqueue with the database down = %v, want pg.ErrUnavailable", err)
	}
	// The delivery of the claimed message ended meanwhile (deferred): its
	// outcome cannot be written now, and is kept.
	err = q.Update(ctx, before, []queue.Result{{Rcpt: "before@remote.test", Status: queue.Deferred, Reply: "421 try later", Next: time.Now()}})
	if !errors.Is(err, pg.ErrUnavailable) {
		t.Fatalf("update with the database down = %v", err)
	}

	srv.Restart()
	waitFor(t, "the kept outcome recorded", func() bool {
		m, err := q.Get(before)
		return err == nil && m.Rcpts[0].Attempts == 1 && m.Rcpts[0].Reply == "421 try later"
	})
	after, err := q.Enqueue(ctx, env("after@remote.test"), strings.NewReader("after\r\n"))
	if err != nil {
		t.Fatalf("enqueue after the restart: %v", err)
	}
	s := startSink(t, "127.0.0.72")
	startEngine(t, q, s)
	waitFor(t, "the queue delivered", func() bool { return q.Stats().Messages == 0 })
	got := strings.Join(s.received(), "\n")
	if len(s.received()) != 2 || !strings.Contains(got, "<before@remote.test>|before") || !strings.Contains(got, "<after@remote.test>|after") ||
		strings.Contains(got, "down@") {
		t.Fatalf("sink received %q (ids %s, %s)", got, before, after)
	}
}
