package server

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"

	"github.com/agua-mail/agua/internal/config"
)

// The durable accept path end to end (issue 15): an SMTP client on
// loopback and agua wired as `agua serve` wires it (shield, router,
// directory snapshot, Maildir with group commit), every message
// acknowledged only once it is on disk. The figures that do not depend on
// the machine's load are the allocations: allocs/msg and B/msg (allocs/rcpt
// for recipients) count the whole process, the server and the benchmark's
// raw-socket client, whose own share is its net.Dial and Close (about 20
// allocations per connection; nothing per command). ns/op is the disk's and
// the machine's.
//
//	go test -run '^$' -bench 'Accept' -benchtime 2000x ./internal/server/
//
// Clients are strangers, each connection from its own address (as
// `agua bench` draws them), never 127.0.0.1, which the default config
// allowlists; sender authentication is off, as in compare/compare.sh.
func BenchmarkAccept(b *testing.B) {
	ts := startServer(b, func(c *config.Config) { c.Auth.Enabled = false })
	addr := ts.srv.Addr("smtp")
	var boxes []string
	for i := range 10 {
		u := fmt.Sprintf("box%d@%s", i, testDomain)
		if err := ts.dir.AddUser(context.Background(), u, testPass, 0); err != nil {
			b.Fatal(err)
		}
		boxes = append(boxes, u)
	}
	src := 0
	// Session: one message per connection, as smtp-source sends them
	// (connect, EHLO, MAIL, RCPT, DATA, QUIT).
	b.Run("Session", func(b *testing.B) {
		tx := benchTransaction(testUser)
		measure(b, "msg", 1, func() {
			c := dialBench(b, addr, &src)
			c.expect("220")
			c.send(cmdEHLO, "250")
			c.transaction(tx)
			c.send(cmdQUIT, "221")
			c.conn.Close()
		})
	})
	// Reuse: messages back to back on one connection (a new one every
	// 400 messages, under the shield's 500 a minute from one address).
	b.Run("Reuse", func(b *testing.B) {
		tx := benchTransaction(testUser)
		s := benchSession{b: b, addr: addr, src: &src, per: 400}
		measure(b, "msg", 1, func() { s.next().transaction(tx) })
		s.close()
	})
	// TenRcpts: each message to ten mailboxes (a new connection every 150
	// messages, under the shield's 2,000 recipients a minute).
	b.Run("TenRcpts", func(b *testing.B) {
		tx := benchTransaction(boxes...)
		s := benchSession{b: b, addr: addr, src: &src, per: 150}
		measure(b, "msg", len(boxes), func() { s.next().transaction(tx) })
		s.close()
	})
}

// BenchmarkAcceptRCPT measures one RCPT TO of a known user in an open
// transaction (a RSET and MAIL FROM every 50 recipients, and a new
// connection every 1,500, amortized).
//
//	go test -run '^$' -bench 'AcceptRCPT' ./internal/server/
func BenchmarkAcceptRCPT(b *testing.B) {
	ts := startServer(b, func(c *config.Config) { c.Auth.Enabled = false })
	src := 0
	s := benchSession{b: b, addr: ts.srv.Addr("smtp"), src: &src, per: 1500}
	rcpt := []byte("RCPT TO:<" + testUser + ">\r\n")
	n := 0
	measure(b, "rcpt", 1, func() {
		c := s.next()
		if n%50 == 0 {
			c.send(cmdRSET, "250")
			c.send(cmdMAIL, "250")
		}
		n++
		c.send(rcpt, "250")
	})
	s.close()
}

// measure runs op b.N times and reports the allocations per op (unit
// "msg" or "rcpt"), and per recipient when op delivers to rcpts > 1
// mailboxes.
func measure(b *testing.B, unit string, rcpts int, op func()) {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ReportAllocs()
	for b.Loop() {
		op()
	}
	runtime.ReadMemStats(&after)
	allocs := float64(after.Mallocs-before.Mallocs) / float64(b.N)
	b.ReportMetric(allocs, "allocs/"+unit)
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/float64(b.N), "B/"+unit)
	if rcpts > 1 {
		b.ReportMetric(allocs/float64(rcpts), "allocs/rcpt")
	}
}

// benchTransaction is MAIL, RCPT for each mailbox, DATA, and the message
// (2 KiB, as smtp-source -l 2048 sends), each with the reply it expects.
func benchTransaction(rcpts ...string) []benchStep {
	steps := []benchStep{{cmdMAIL, "250"}}
	for _, r := range rcpts {
		steps = append(steps, benchStep{[]byte("RCPT TO:<" + r + ">\r\n"), "250"})
	}
	var body strings.Builder
	body.WriteString("From: sender@client.example\r\nTo: " + rcpts[0] + "\r\nSubject: benchmark\r\n\r\n")
	for body.Len() < 2048 {
		body.WriteString("The quick brown fox jumps over the lazy dog, again and again.\r\n")
	}
	body.WriteString(".\r\n")
	return append(steps, benchStep{[]byte("DATA\r\n"), "354"}, benchStep{[]byte(body.String()), "250"})
}

type benchStep struct {
	send []byte
	want string
}

// benchClient speaks SMTP over a raw connection without allocating per
// command, so that the allocations counted are the server's.
type benchClient struct {
	b    *testing.B
	conn net.Conn
	buf  []byte
}

// dialBench connects from the next stranger address: every connection
// from its own /24 in 127.128.0.0/9 (clear of the shield's per-address and
// per-prefix rates).
func dialBench(b *testing.B, addr string, src *int) *benchClient {
	k := *src
	*src++
	ip := net.IPv4(127, byte(128+k>>16%127), byte(k), byte(1+k>>8%254))
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	return &benchClient{b: b, conn: conn, buf: make([]byte, 4096)}
}

// benchSession hands out a greeted connection, a new one (from the next
// address) every per uses.
type benchSession struct {
	b        *testing.B
	addr     string
	src      *int
	per, use int
	c        *benchClient
}

func (s *benchSession) next() *benchClient {
	if s.c == nil || s.use == s.per {
		s.close()
		s.c, s.use = dialBench(s.b, s.addr, s.src), 0
		s.c.expect("220")
		s.c.send(cmdEHLO, "250")
	}
	s.use++
	return s.c
}

func (s *benchSession) close() {
	if s.c != nil {
		s.c.send(cmdQUIT, "221")
		s.c.conn.Close()
	}
}

func (c *benchClient) transaction(steps []benchStep) {
	for _, s := range steps {
		c.send(s.send, s.want)
	}
}

var (
	cmdEHLO = []byte("EHLO client.example\r\n")
	cmdMAIL = []byte("MAIL FROM:<sender@client.example>\r\n")
	cmdRSET = []byte("RSET\r\n")
	cmdQUIT = []byte("QUIT\r\n")
)

func (c *benchClient) send(p []byte, want string) {
	if _, err := c.conn.Write(p); err != nil {
		c.b.Fatal(err)
	}
	c.expect(want)
}

// expect reads one reply, single or multi-line, and checks its code.
func (c *benchClient) expect(want string) {
	n := 0
	for {
		m, err := c.conn.Read(c.buf[n:])
		if err != nil {
			c.b.Fatalf("reading the reply (want %s): %v after %q", want, err, c.buf[:n])
		}
		n += m
		r := c.buf[:n]
		if !bytes.HasSuffix(r, []byte("\r\n")) {
			continue
		}
		last := r
		if i := bytes.LastIndex(r[:n-2], []byte("\r\n")); i >= 0 {
			last = r[i+2:]
		}
		if len(last) >= 4 && last[3] == ' ' {
			if string(last[:3]) != want {
				c.b.Fatalf("reply %q, want %s", r, want)
			}
			return
		}
	}
}
