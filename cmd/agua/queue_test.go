package main

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/pg"
	"github.com/agua-mail/agua/internal/pg/pgtest"
	"github.com/agua-mail/agua/internal/pgqueue"
	"github.com/agua-mail/agua/internal/queue"
	"github.com/agua-mail/agua/internal/queue/queuehttp"
	"github.com/agua-mail/agua/internal/server"
)

func fillQueue(t *testing.T, q queue.Queue) (string, string) {
	t.Helper()
	ctx := context.Background()
	a, err := q.Enqueue(ctx, queue.Envelope{From: "a@l.test", To: []string{"x@r.test"}}, strings.NewReader("AAAA"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := q.Enqueue(ctx, queue.Envelope{From: "", To: []string{"y@s.test"}}, strings.NewReader("BB"))
	if err != nil {
		t.Fatal(err)
	}
	q.Claim(time.Now(), 10)
	q.Update(ctx, b, []queue.Result{{Rcpt: "y@s.test", Status: queue.Deferred, Reply: "451 later", Next: time.Now().Add(time.Hour)}})
	return a, b
}

// queueVerbs runs the same script against a queue the CLI opens itself,
// one held by a "server" (the admin API on the socket) and one on
// PostgreSQL; flags tell the CLI where.
func queueVerbs(t *testing.T, flags []string, get func(id string) (queue.Message, error), a, b string) {
	t.Helper()
	args := func(a ...string) []string { return append(a, flags...) }
	out := mustAgua(t, "", args("queue", "list")...)
	if !strings.Contains(out, a) || !strings.Contains(out, b) || !strings.Contains(out, "y@s.test deferred #1") || !strings.Contains(out, "<>") {
		t.Fatalf("list:\n%s", out)
	}
	out = mustAgua(t, "", args("queue", "stats")...)
	if !strings.Contains(out, "messages 2 (0 held), recipients waiting 2 (1 deferred), 6 bytes") {
		t.Fatalf("stats:\n%s", out)
	}
	out = mustAgua(t, "", args("queue", "show", b)...)
	if !strings.Contains(out, `"reply": "451 later"`) {
		t.Fatalf("show:\n%s", out)
	}
	mustAgua(t, "", args("queue", "hold", a)...)
	if m, _ := get(a); !m.Held {
		t.Fatal("hold had no effect")
	}
	mustAgua(t, "", args("queue", "release", a)...)
	if m, _ := get(a); m.Held {
		t.Fatal("release had no effect")
	}
	if out := mustAgua(t, "", args("queue", "retry", "-all")...); !strings.Contains(out, "2 messages retried") {
		t.Fatalf("retry -all: %s", out)
	}
	if m, _ := get(b); m.Rcpts[0].Next.After(time.Now()) {
		t.Fatal("retry left the recipient deferred into the future")
	}
	mustAgua(t, "", args("queue", "delete", a)...)
	if _, err := get(a); err == nil {
		t.Fatal("delete had no effect")
	}
	code, _, errs := agua(t, "", args("queue", "show", a)...)
	if code != 1 || !strings.Contains(errs, "no such message \""+a+"\"") || !strings.Contains(errs, "`agua queue list` shows the queued ones") {
		t.Fatalf("show deleted: %d %s", code, errs)
	}
	// A malformed ID: what an ID looks like, and where to find them.
	code, _, errs = agua(t, "", args("queue", "show", "BADID")...)
	if code != 1 || !strings.Contains(errs, `malformed message ID "BADID": a message ID is lower-case hex, 24 digits as `+"`agua queue list`") {
		t.Fatalf("show BADID: %d %s", code, errs)
	}
	code, _, errs = agua(t, "", args("queue", "hold", "../../etc")...)
	if code != 1 || !strings.Contains(errs, "malformed message ID") {
		t.Fatalf("hold with a path: %d %s", code, errs)
	}
	if code, _, _ := agua(t, "", args("queue", "frobnicate")...); code != 2 {
		t.Fatal("unknown queue command accepted")
	}
}

func TestQueueVerbsOffline(t *testing.T) {
	data := t.TempDir()
	cfg := config.Default()
	cfg.DataDir = data
	q, err := queue.Open(server.QueueDir(cfg), queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, b := fillQueue(t, q)
	q.Close()
	// The CLI opens and closes the queue each time; so does the test, to
	// look.
	queueVerbs(t, []string{"-data", data}, func(id string) (queue.Message, error) {
		q, err := queue.Open(server.QueueDir(cfg), queue.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer q.Close()
		return q.Get(id)
	}, a, b)
}

func TestQueueVerbsThroughServer(t *testing.T) {
	data := t.TempDir()
	cfg := config.Default()
	cfg.DataDir = data
	q, err := queue.Open(server.QueueDir(cfg), queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	a, b := fillQueue(t, q)
	sock := server.AdminSocket(cfg)
	os.MkdirAll(filepath.Dir(sock), 0o700)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	h := queuehttp.Handler(q)
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	defer srv.Close()
	queueVerbs(t, []string{"-data", data}, q.Get, a, b)
}

// TestQueueVerbsOnPostgres: with [postgres] queue the CLI works on the
// database directly, beside running nodes (no folder lock, no admin API);
// a database that does not answer is an error, not an empty queue.
func TestQueueVerbsOnPostgres(t *testing.T) {
	pgs := pgtest.Start(t)
	url := pgs.NewDatabase(t)
	data := t.TempDir()
	cfgFile := filepath.Join(t.TempDir(), "agua.toml")
	conf := "data_dir = \"" + data + "\"\n[postgres]\nurl = \"" + url + "\"\nqueue = true\n"
	if err := os.WriteFile(cfgFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	mustAgua(t, "", "db", "migrate", "-config", cfgFile)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, err := pg.Open(ctx, url, pg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	q, err := pgqueue.New(pool, pgqueue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	a, b := fillQueue(t, q)
	queueVerbs(t, []string{"-config", cfgFile}, q.Get, a, b)

	pgs.Kill()
	code, out, errs := agua(t, "", "queue", "stats", "-config", cfgFile)
	if code != 1 || !strings.Contains(errs, "postgresql unavailable") {
		t.Fatalf("stats with PostgreSQL down: exit %d\n%s%s", code, out, errs)
	}
}
