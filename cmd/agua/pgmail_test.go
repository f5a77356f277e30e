package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/mailstore/storetest"
	"github.com/agua-mail/agua/internal/pg"
	"github.com/agua-mail/agua/internal/pg/pgtest"
	"github.com/agua-mail/agua/internal/pgstore"
	"github.com/agua-mail/agua/internal/resolver/dnstest"
	"github.com/agua-mail/agua/internal/server"
	"github.com/agua-mail/agua/internal/smtptest"
)

// TestPostgresMailKill9 kills agua serve with SIGKILL while twelve clients
// deliver to a mailbox on PostgreSQL, twice, and checks after each kill
// that every message answered 250 is in the mailbox exactly once (a 250
// is sent only after COMMIT returned) and that nothing is there twice.
func TestPostgresMailKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("kill -9 rounds skipped in -short")
	}
	const ip, user, pass = "127.0.1.6", "alice@example.test", "alice's password"
	url := pgtest.Start(t).NewDatabase(t)
	dns := dnstest.Start(t, "127.0.1.7")
	data := t.TempDir()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	smtpAddr := ln.Addr().String()
	ln.Close()
	cfgFile := filepath.Join(t.TempDir(), "agua.toml")
	cfgText := smtpOnlyConfig(data, "mx.example.test", smtpAddr, fmt.Sprintf(`[log]
level = "warn"
[dns]
resolver = [%q]
[postgres]
url = %q
mail = true
migrate = true
`, dns.Addr, url))
	if err := os.WriteFile(cfgFile, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := server.OpenDirectory(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := dir.AddDomain(ctx, "example.test"); err != nil {
		t.Fatal(err)
	}
	if err := dir.AddUser(ctx, user, pass, 0); err != nil {
		t.Fatal(err)
	}
	dir.Close()

	acked := map[string]bool{} // subjects answered 250
	var mu sync.Mutex
	for round := range 2 {
		child := exec.Command(os.Args[0], "serve", "-config", cfgFile)
		child.Env = append(os.Environ(), "AGUA_TEST_CLI=1")
		var logs syncLog
		child.Stdout, child.Stderr = &logs, &logs
		if err := child.Start(); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(60 * time.Second); ; {
			c, err := net.DialTimeout("tcp", smtpAddr, time.Second)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				child.Process.Kill()
				child.Wait()
				t.Fatalf("round %d: agua serve does not listen: %v\n%s", round, err, &logs)
			}
			time.Sleep(50 * time.Millisecond)
		}
		want := len(acked) + 60
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range 12 {
			wg.Go(func() {
				for n := 0; ; n++ {
					select {
					case <-stop:
						return
					default:
					}
					subject := fmt.Sprintf("kill9-r%d-w%d-n%d", round, w, n)
					body := strings.Repeat(subject+" 0123456789abcdef\r\n", 1+(n*7919+w*104729)%600)
					reply, err := smtptest.Deliver(smtpAddr, "", "someone@elsewhere.example", user, "Subject: "+subject+"\r\n\r\n"+body)
					if err != nil {
						return // the server is gone
					}
					if strings.HasPrefix(reply, "250 ") {
						mu.Lock()
						acked[subject] = true
						mu.Unlock()
					}
				}
			})
		}
		for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(5 * time.Millisecond) {
			mu.Lock()
			n := len(acked)
			mu.Unlock()
			if n >= want {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: %d messages acknowledged in 2 minutes, want %d\n%s", round, n, want, &logs)
			}
		}
		child.Process.Kill() // SIGKILL, with deliveries in flight
		child.Wait()
		close(stop)
		wg.Wait()

		found := mailboxSubjects(t, url, user)
		mu.Lock()
		for s := range acked {
			if found[s] != 1 {
				t.Errorf("round %d: acknowledged message %s found %d times", round, s, found[s])
			}
		}
		extra := 0
		for s, n := range found {
			if n > 1 {
				t.Errorf("round %d: message %s stored %d times", round, s, n)
			}
			if !acked[s] {
				extra++ // committed, but the kill came before the 250
			}
		}
		t.Logf("round %d: %d acknowledged, %d stored without acknowledgement", round, len(acked), extra)
		mu.Unlock()
		if t.Failed() {
			t.Fatalf("server log:\n%s", &logs)
		}
	}
}

// mailboxSubjects counts the Subjects of the messages in user's INBOX,
// read with a store of its own (another node).
func mailboxSubjects(t *testing.T, url, user string) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, err := pg.Open(ctx, url, pg.Options{MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	st := pgstore.Open(pool, pgstore.Options{})
	defer st.Close()
	out := map[string]int{}
	for _, m := range storetest.Contents(t, st, user, "") {
		_, rest, _ := strings.Cut(m, "\r\nSubject: ")
		subject, _, _ := strings.Cut(rest, "\r\n")
		out[subject]++
	}
	return out
}
