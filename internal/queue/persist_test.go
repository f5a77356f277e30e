package queue_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/queue"
	"github.com/agua-mail/agua/internal/queue/queuetest"
)

func open(t *testing.T, dir string, logs *bytes.Buffer) *queue.File {
	t.Helper()
	opts := queue.Options{}
	if logs != nil {
		opts.Logger = slog.New(slog.NewTextHandler(logs, nil))
	}
	q, err := queue.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func TestReopenKeepsState(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	q := open(t, dir, nil)
	a, _ := q.Enqueue(ctx, queue.Envelope{From: "a@l.test", To: []string{"x@r.test", "y@r.test"}, UTF8: true, Account: "a@l.test"}, strings.NewReader("AAA"))
	b, _ := q.Enqueue(ctx, queue.Envelope{From: "", To: []string{"z@r.test"}}, strings.NewReader("BBB"))
	done, _ := q.Enqueue(ctx, queue.Envelope{From: "a@l.test", To: []string{"w@r.test"}}, strings.NewReader("CCC"))
	now := time.Now()
	q.Claim(now, 10)
	next := now.Add(time.Hour).Truncate(time.Second)
	if err := q.Update(ctx, a, []queue.Result{
		{Rcpt: "x@r.test", Status: queue.Delivered, Reply: "250 ok"},
		{Rcpt: "y@r.test", Status: queue.Deferred, Reply: "451 try later", Next: next, DelayNotified: true},
	}); err != nil {
		t.Fatal(err)
	}
	q.Unclaim(b, []string{"z@r.test"})
	q.Hold(b)
	q.Update(ctx, done, []queue.Result{{Rcpt: "w@r.test", Status: queue.Delivered}})
	q.Close()

	q = open(t, dir, nil)
	defer q.Close()
	l, _ := q.List()
	if len(l) != 2 {
		t.Fatalf("after reopen: %d messages, want 2", len(l))
	}
	m, err := q.Get(a)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Envelope.UTF8 || m.Envelope.Account != "a@l.test" || m.Rcpts[0].Status != queue.Delivered ||
		m.Rcpts[1].Status != queue.Deferred || !m.Rcpts[1].Next.Equal(next) || m.Rcpts[1].Reply != "451 try later" || m.Rcpts[1].Attempts != 1 || !m.DelayNotified {
		t.Fatalf("state after reopen: %+v", m)
	}
	if m, _ := q.Get(b); !m.Held || queuetest.ReadBody(t, q, b) != "BBB" {
		t.Fatalf("held message after reopen: %+v", m)
	}
	if _, err := q.Get(done); !errors.Is(err, queue.ErrNotFound) {
		t.Fatal("delivered message came back")
	}
}

// TestCorruptFilesQuarantined: every kind of damage sends the one file to
// corrupt/ with a log line; the neighbours are delivered as usual.
func TestCorruptFilesQuarantined(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	q := open(t, dir, nil)
	var ids []string
	for i := range 6 {
		id, err := q.Enqueue(ctx, queue.Envelope{From: "a@l.test", To: []string{fmt.Sprintf("r%d@r.test", i)}}, strings.NewReader(fmt.Sprintf("body %d", i)))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	q.Close()
	msg := func(id string) string { return filepath.Join(dir, "msg", id) }
	// 0: truncated (a torn write of the body)
	data, _ := os.ReadFile(msg(ids[0]))
	os.WriteFile(msg(ids[0]), data[:len(data)-2], 0o600)
	// 1: garbage
	os.WriteFile(msg(ids[1]), []byte("\x00\x01garbage that is not a queue file at all........"), 0o600)
	// 2: envelope not JSON
	data, _ = os.ReadFile(msg(ids[2]))
	copy(data[40:], "{{{{")
	os.WriteFile(msg(ids[2]), data, 0o600)
	// 3: state file garbage
	os.WriteFile(msg(ids[3])+".state", []byte("{not json"), 0o600)
	// 4: state file for other recipients
	os.WriteFile(msg(ids[4])+".state", []byte(`{"rcpts":[{"addr":"evil@x.test","status":0}]}`), 0o600)
	// a stray file with a name that is no ID, an orphan state, a leftover write
	os.WriteFile(filepath.Join(dir, "msg", "README"), []byte("hi"), 0o600)
	os.WriteFile(filepath.Join(dir, "msg", "abcdef.state"), []byte("{}"), 0o600)
	os.WriteFile(filepath.Join(dir, "tmp", "0123"), []byte("half"), 0o600)
	os.WriteFile(filepath.Join(dir, "tmp", "0124.state"), []byte("half"), 0o600)

	var logs bytes.Buffer
	q = open(t, dir, &logs)
	defer q.Close()
	l, _ := q.List()
	if len(l) != 1 || l[0].ID != ids[5] || queuetest.ReadBody(t, q, ids[5]) != "body 5" {
		t.Fatalf("survivors = %+v, want only %s", l, ids[5])
	}
	for _, id := range ids[:5] {
		if _, err := os.Stat(filepath.Join(dir, "corrupt", id)); err != nil {
			t.Errorf("%s not quarantined: %v", id, err)
		}
		if !strings.Contains(logs.String(), id) {
			t.Errorf("no log line for %s", id)
		}
	}
	if n := strings.Count(logs.String(), "corrupt queue file quarantined"); n != 6 {
		t.Errorf("%d quarantine log lines, want 6 (5 messages and the stray file):\n%s", n, logs.String())
	}
	for _, p := range []string{"msg/abcdef.state", "tmp/0123", "tmp/0124.state"} {
		if _, err := os.Stat(filepath.Join(dir, p)); !os.IsNotExist(err) {
			t.Errorf("%s left behind", p)
		}
	}
	// The survivor is delivered as usual.
	jobs, _ := q.Claim(time.Now(), 10)
	if len(jobs) != 1 || q.Update(ctx, ids[5], []queue.Result{{Rcpt: "r5@r.test", Status: queue.Delivered}}) != nil {
		t.Fatalf("survivor not deliverable: %+v", jobs)
	}
}

func TestOneOwner(t *testing.T) {
	dir := t.TempDir()
	q := open(t, dir, nil)
	if _, err := queue.Open(dir, queue.Options{}); !errors.Is(err, queue.ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
	q.Close()
	open(t, dir, nil).Close()
}

func TestClosedQueue(t *testing.T) {
	q := open(t, t.TempDir(), nil)
	q.Close()
	if _, err := q.Enqueue(context.Background(), queue.Envelope{To: []string{"a@b.test"}}, strings.NewReader("x")); !errors.Is(err, queue.ErrClosed) {
		t.Fatalf("enqueue after close: %v", err)
	}
	if _, err := q.Claim(time.Now(), 1); !errors.Is(err, queue.ErrClosed) {
		t.Fatalf("claim after close: %v", err)
	}
}

// The kill -9 test: a child process enqueues from several goroutines and
// prints each ID once Enqueue has returned; the parent kills it with
// SIGKILL mid-stream, reopens the queue, and checks that every
// acknowledged message is there, complete, and nothing is quarantined.

const childEnv = "AGUA_QUEUE_CRASH_CHILD"

func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		crashChild(dir)
		return
	}
	os.Exit(m.Run())
}

func crashBody(worker, n int) string {
	// Sizes vary from a few bytes to ~300 KiB so kills land mid-write.
	return fmt.Sprintf("Subject: %d/%d\r\n\r\n%s", worker, n, strings.Repeat("0123456789abcdef", (n*7919+worker*104729)%20000))
}

func crashChild(dir string) {
	q, err := queue.Open(dir, queue.Options{})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for n := 0; ; n++ {
				body := crashBody(w, n)
				id, err := q.Enqueue(context.Background(), queue.Envelope{From: "a@l.test", To: []string{fmt.Sprintf("w%d-%d@r.test", w, n)}}, strings.NewReader(body))
				if err != nil {
					fmt.Println("error", err)
					os.Exit(1)
				}
				sum := sha256.Sum256([]byte(body))
				mu.Lock()
				fmt.Fprintf(out, "ack %s %x\n", id, sum)
				out.Flush()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}

func TestKill9Durability(t *testing.T) {
	if testing.Short() {
		t.Skip("kill -9 rounds skipped in -short")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	acked := map[string]string{} // id → sha256
	for round := range 3 {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"="+dir)
		stdout, _ := cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		got := 0
		want := 30 + round*20
		for got < want && sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) != 3 || f[0] != "ack" {
				t.Fatalf("child said %q", sc.Text())
			}
			acked[f[1]] = f[2]
			got++
		}
		cmd.Process.Kill() // SIGKILL
		// Acknowledgements printed before the kill landed count too.
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == "ack" {
				acked[f[1]] = f[2]
			}
		}
		cmd.Wait()
		if got < want {
			t.Fatalf("round %d: child stopped after %d acknowledgements", round, got)
		}

		var logs bytes.Buffer
		q := open(t, dir, &logs)
		for id, sum := range acked {
			body := queuetest.ReadBody(t, q, id)
			if fmt.Sprintf("%x", sha256.Sum256([]byte(body))) != sum {
				t.Fatalf("round %d: acknowledged message %s damaged (%d bytes)", round, id, len(body))
			}
		}
		if strings.Contains(logs.String(), "quarantined") {
			t.Fatalf("round %d: a kill left a corrupt file:\n%s", round, logs.String())
		}
		l, _ := q.List()
		t.Logf("round %d: %d acknowledged, %d in the queue", round, len(acked), len(l))
		q.Close()
	}
}
