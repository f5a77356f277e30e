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
	"github.com/agua-mail/agua/internal/queue"
	"github.com/agua-mail/agua/internal/queue/queuehttp"
	"github.com/agua-mail/agua/internal/server"
)

func fillQueue(t *testing.T, q *queue.File) (string, string) {
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

// queueVerbs runs the same script against a queue the CLI opens itself and
// one held by a "server" (the admin API on the socket).
func queueVerbs(t *testing.T, data string, get func(id string) (queue.Message, error), a, b string) {
	t.Helper()
	out := mustAgua(t, "", "queue", "list", "-data", data)
	if !strings.Contains(out, a) || !strings.Contains(out, b) || !strings.Contains(out, "y@s.test deferred #1") || !strings.Contains(out, "<>") {
		t.Fatalf("list:\n%s", out)
	}
	out = mustAgua(t, "", "queue", "stats", "-data", data)
	if !strings.Contains(out, "messages 2 (0 held), recipients waiting 2 (1 deferred), 6 bytes") {
		t.Fatalf("stats:\n%s", out)
	}
	out = mustAgua(t, "", "queue", "show", b, "-data", data)
	if !strings.Contains(out, `"reply": "451 later"`) {
		t.Fatalf("show:\n%s", out)
	}
	mustAgua(t, "", "queue", "hold", a, "-data", data)
	if m, _ := get(a); !m.Held {
		t.Fatal("hold had no effect")
	}
	mustAgua(t, "", "queue", "release", a, "-data", data)
	if m, _ := get(a); m.Held {
		t.Fatal("release had no effect")
	}
	if out := mustAgua(t, "", "queue", "retry", "-all", "-data", data); !strings.Contains(out, "2 messages retried") {
		t.Fatalf("retry -all: %s", out)
	}
	if m, _ := get(b); m.Rcpts[0].Next.After(time.Now()) {
		t.Fatal("retry left the recipient deferred into the future")
	}
	mustAgua(t, "", "queue", "delete", a, "-data", data)
	if _, err := get(a); err == nil {
		t.Fatal("delete had no effect")
	}
	code, _, errs := agua(t, "", "queue", "show", a, "-data", data)
	if code != 1 || !strings.Contains(errs, "no such message") {
		t.Fatalf("show deleted: %d %s", code, errs)
	}
	code, _, errs = agua(t, "", "queue", "hold", "../../etc", "-data", data)
	if code != 1 || !strings.Contains(errs, "malformed message ID") {
		t.Fatalf("hold with a path: %d %s", code, errs)
	}
	if code, _, _ := agua(t, "", "queue", "frobnicate", "-data", data); code != 2 {
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
	queueVerbs(t, data, func(id string) (queue.Message, error) {
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
	queueVerbs(t, data, q.Get, a, b)
}
