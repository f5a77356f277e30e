package outbound_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/outbound"
	"github.com/agua-mail/agua/internal/queue"
	"github.com/agua-mail/agua/internal/resolver"
	"github.com/agua-mail/agua/internal/resolver/dnstest"
)

// smtpSink starts Postfix's smtp-sink on ip with args, dumping each
// accepted transaction into the returned folder.
func smtpSink(t *testing.T, ip string, args ...string) (port int, dumps string) {
	t.Helper()
	bin, err := exec.LookPath("smtp-sink")
	if err != nil {
		bin = "/usr/sbin/smtp-sink" // Debian installs it outside a user's PATH
		if _, err := os.Stat(bin); err != nil {
			msg := "smtp-sink not installed (Debian package postfix; .ci/run installs it)"
			if os.Getenv("CI") == "true" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
	// The sink drops privileges to nobody when run as root, so its dump
	// folder must be open to it.
	dumps, err = os.MkdirTemp("", "agua-smtp-sink-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dumps, 0o777)
	t.Cleanup(func() { os.RemoveAll(dumps) })
	probe, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	port = probe.Addr().(*net.TCPAddr).Port
	probe.Close()
	all := []string{"-d", filepath.Join(dumps, "%M.")}
	if os.Geteuid() == 0 {
		all = append(all, "-u", "nobody")
	}
	all = append(all, args...)
	all = append(all, net.JoinHostPort(ip, strconv.Itoa(port)), "64")
	cmd := exec.Command(bin, all...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
		if err == nil {
			c.Close()
			return port, dumps
		}
		if time.Now().After(deadline) {
			t.Fatalf("smtp-sink did not start: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type sinkEnv struct {
	q    *queue.File
	mu   sync.Mutex
	dsns []string
}

func (s *sinkEnv) dsnCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.dsns)
}

// startEngine runs an engine on a new queue, to mail exchangers on port,
// with a test DNS server holding records. Each DSN is kept as
// "RCPT\nMESSAGE".
func startEngine(t *testing.T, port int, records ...string) *sinkEnv {
	t.Helper()
	dns := dnstest.Start(t, "127.0.0.53")
	dns.Add(t, records...)
	res, err := resolver.New(resolver.Config{Servers: []string{dns.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	se := &sinkEnv{}
	se.q, err = queue.Open(filepath.Join(t.TempDir(), "queue"), queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e, err := outbound.New(outbound.Options{
		Queue: se.q, Resolver: res, Hostname: "agua.test", Port: port, Poll: time.Hour,
		Bounce: func(_ context.Context, rcpt string, dsn []byte) error {
			se.mu.Lock()
			defer se.mu.Unlock()
			se.dsns = append(se.dsns, rcpt+"\n"+string(dsn))
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		se.q.Close()
	})
	return se
}

var sinkMX = []string{"sink.test. 300 IN MX 10 mx.sink.test.", "mx.sink.test. 300 IN A 127.0.0.82"}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPostfixSmtpSink delivers to Postfix's smtp-sink: every message
// arrives whole with its envelope; its fault options give a 4xx at RCPT
// (deferred), a 5xx after the final dot (bounced with its reply), and a
// 421 at MAIL (deferred).
func TestPostfixSmtpSink(t *testing.T) {
	const body = "From: a@agua.test\r\nTo: b@sink.test\r\nSubject: to the sink\r\n\r\nline one\r\n.dot line\r\n"
	t.Run("delivers", func(t *testing.T) {
		port, dumps := smtpSink(t, "127.0.0.82")
		se := startEngine(t, port, sinkMX...)
		var ids []string
		for range 5 {
			id, err := se.q.Enqueue(t.Context(), queue.Envelope{From: "a@agua.test", To: []string{"b@sink.test", "c@sink.test"}}, strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		waitUntil(t, "the queue to empty", func() bool { return se.q.Stats().Messages == 0 })
		var files []string
		waitUntil(t, "5 dumps", func() bool {
			files, _ = filepath.Glob(filepath.Join(dumps, "*"))
			return len(files) == 5
		})
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			s := string(b)
			for _, want := range []string{"X-Helo-Args: agua.test", "X-Mail-Args: <a@agua.test>", "X-Rcpt-Args: <b@sink.test>", "X-Rcpt-Args: <c@sink.test>", "Subject: to the sink", "line one", "\n.dot line"} {
				if !strings.Contains(s, want) {
					t.Errorf("%s lacks %q:\n%s", f, want, s)
				}
			}
		}
		if se.dsnCount() != 0 {
			t.Error("DSN for delivered mail")
		}
	})
	faults := []struct {
		name, flag, cmds string
		bounce           bool
		reply            string
	}{
		{"4xx at RCPT", "-r", "RCPT", false, "450 4.3.0 Error: command failed"},
		{"5xx after the dot", "-f", ".", true, "500 5.3.0 Error: command failed"},
		{"421 at MAIL", "-Q", "MAIL", false, "421"},
	}
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			port, _ := smtpSink(t, "127.0.0.82", f.flag, f.cmds)
			se := startEngine(t, port, sinkMX...)
			id, err := se.q.Enqueue(t.Context(), queue.Envelope{From: "a@agua.test", To: []string{"b@sink.test"}}, strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			if f.bounce {
				waitUntil(t, "the bounce", func() bool { return se.dsnCount() == 1 })
				se.mu.Lock()
				dsn := se.dsns[0]
				se.mu.Unlock()
				if !strings.Contains(dsn, "Diagnostic-Code: smtp; "+f.reply) {
					t.Fatalf("DSN:\n%s", dsn)
				}
				if _, err := se.q.Get(id); err == nil {
					t.Fatal("bounced message still queued")
				}
				return
			}
			var m queue.Message
			waitUntil(t, "a deferral", func() bool {
				m, err = se.q.Get(id)
				return err == nil && m.Rcpts[0].Status == queue.Deferred
			})
			if !strings.Contains(m.Rcpts[0].Reply, f.reply) {
				t.Fatalf("reply %q, want %q", m.Rcpts[0].Reply, f.reply)
			}
		})
	}
}
