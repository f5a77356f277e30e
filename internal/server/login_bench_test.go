package server

import (
	"bytes"
	"testing"

	"github.com/agua-mail/agua/internal/config"
)

// BenchmarkPOP3Login is a mail client's poll end to end (issue 15): a
// stranger connects, logs in (USER/PASS, answered by the login cache: a
// first login, which pays argon2id, runs before the measure), reads
// its three 1 KiB-ish messages (STAT, RETR each) and quits, as
// compare/logins.sh's bursts do. allocs/login and B/login count the whole
// process, the server and the benchmark's raw-socket client (its net.Dial
// and Close: about 20 allocations); they do not depend on the machine's
// load, ns/op does.
//
//	go test -run '^$' -bench 'POP3Login' -benchtime 2000x ./internal/server/
func BenchmarkPOP3Login(b *testing.B) {
	ts := startServer(b, func(c *config.Config) { c.Auth.Enabled = false })
	src := 0
	s := benchSession{b: b, addr: ts.srv.Addr("smtp"), src: &src, per: 3}
	tx := benchTransaction(testUser)
	for range 3 {
		s.next().transaction(tx)
	}
	s.close()
	addr := ts.srv.Addr("pop3")
	user := []byte("USER " + testUser + "\r\n")
	pass := []byte("PASS " + testPass + "\r\n")
	stat := []byte("STAT\r\n")
	retr := [][]byte{[]byte("RETR 1\r\n"), []byte("RETR 2\r\n"), []byte("RETR 3\r\n")}
	quit := []byte("QUIT\r\n")
	login := func() {
		c := dialBench(b, addr, &src)
		c.expectPOP(false)
		c.sendPOP(user, false)
		c.sendPOP(pass, false)
		c.sendPOP(stat, false)
		for _, r := range retr {
			c.sendPOP(r, true)
		}
		c.sendPOP(quit, false)
		c.conn.Close()
	}
	login() // the one that pays argon2id and fills the login cache
	measure(b, "login", 1, login)
}

func (c *benchClient) sendPOP(p []byte, multi bool) {
	if _, err := c.conn.Write(p); err != nil {
		c.b.Fatal(err)
	}
	c.expectPOP(multi)
}

// expectPOP reads one +OK reply, and the multi-line body after it up to the
// lone dot (RFC 1939 3) when multi.
func (c *benchClient) expectPOP(multi bool) {
	end := []byte("\r\n")
	if multi {
		end = []byte("\r\n.\r\n")
	}
	n := 0
	for {
		if n == len(c.buf) {
			c.buf = append(c.buf, make([]byte, len(c.buf))...)
		}
		m, err := c.conn.Read(c.buf[n:])
		if err != nil {
			c.b.Fatalf("reading the reply: %v after %q", err, c.buf[:n])
		}
		n += m
		r := c.buf[:n]
		if !bytes.HasPrefix(r, []byte("+OK")) && bytes.HasSuffix(r, []byte("\r\n")) {
			c.b.Fatalf("reply %q, want +OK", r)
		}
		if bytes.HasSuffix(r, end) {
			return
		}
	}
}
