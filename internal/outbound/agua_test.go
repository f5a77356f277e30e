package outbound_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/queue"
	"github.com/agua-mail/agua/internal/server"
)

// startAgua runs a real agua in MX mode on ip, with user alice@example.test.
func startAgua(t *testing.T, ip string) (port string, dataDir string) {
	t.Helper()
	probe, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ = net.SplitHostPort(probe.Addr().String())
	probe.Close()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Accounts.Demo = false
	cfg.Hostname = "mx.example.test"
	cfg.SMTP.Listen = []string{net.JoinHostPort(ip, port)}
	cfg.SMTP.SubmissionListen = nil
	cfg.SMTP.SubmissionsListen = nil
	cfg.POP3.Listen, cfg.POP3.TLSListen = nil, nil
	cfg.IMAP.Listen, cfg.IMAP.TLSListen = nil, nil
	cfg.Admin.Listen = ""
	srv, err := server.New(cfg, slog.New(slog.DiscardHandler), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("agua did not stop")
		}
	})
	dir, err := server.OpenDirectory(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	if err := dir.AddDomain(ctx, "example.test"); err != nil {
		t.Fatal(err)
	}
	if err := dir.AddUser(ctx, "alice@example.test", "correct horse battery", 0); err != nil {
		t.Fatal(err)
	}
	// Wait until the listener answers.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", net.JoinHostPort(ip, port))
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("agua did not start listening")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return port, cfg.DataDir
}

// TestDeliverToAgua: the engine delivers to a real agua MX found through
// the test's DNS; an unknown user there bounces with agua's own reply.
func TestDeliverToAgua(t *testing.T) {
	port, data := startAgua(t, "127.0.0.80")
	p, _ := strconv.Atoi(port)
	se := startEngine(t, p, "example.test. 300 IN MX 10 mx.example.test.", "mx.example.test. 300 IN A 127.0.0.80")
	q, ctx := se.q, t.Context()

	body := "From: s@sender.test\r\nTo: alice@example.test\r\nSubject: over the wire\r\n\r\nHi Alice.\r\n"
	for range 2 {
		_, err := q.Enqueue(ctx, queue.Envelope{From: "s@sender.test", To: []string{"alice@example.test", "bob@example.test"}}, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "the queue to empty", func() bool { return q.Stats().Messages == 0 })
	newDir := filepath.Join(data, "mail", "example.test", "alice", "new")
	ents, err := os.ReadDir(newDir)
	if err != nil || len(ents) != 2 {
		t.Fatalf("alice has %d messages (%v), want 2", len(ents), err)
	}
	b, _ := os.ReadFile(filepath.Join(newDir, ents[0].Name()))
	if !strings.Contains(string(b), "Subject: over the wire") || !strings.Contains(string(b), "Hi Alice.") {
		t.Fatalf("delivered message:\n%s", b)
	}
	se.mu.Lock()
	defer se.mu.Unlock()
	dsns := se.dsns
	if len(dsns) != 2 || !strings.HasPrefix(dsns[0], "s@sender.test\n") || !strings.Contains(dsns[0], "Final-Recipient: rfc822; bob@example.test") ||
		!strings.Contains(dsns[0], "Diagnostic-Code: smtp; 550 5.1.1") {
		t.Fatalf("DSNs: %q", dsns)
	}
}
