package server

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/smtptest"
)

// The bad-input matrix: one file per hostile case under
// testdata/badinput/<protocol>/, replayed by one test per protocol against
// one real server. Each case says what the server must answer; after it the
// runner checks, for every case, that a fresh client from another address
// is still greeted on the same listener and that the mailbox holds what the
// case says (by default: exactly what it held before, so nothing partial
// was stored and nothing deleted). Format, one step per line:
//
//	# listener: pop3s         listener to dial (default smtp, pop3)
//	# tls                     dial with TLS (implicit-TLS listeners; the
//	                          fresh client always does on those)
//	# greeting: no            do not read a greeting (TLS garbage, pre-greet)
//	# stored: 1               messages the case adds to alice's mailbox
//	c: EHLO x                 send a line (CRLF added)
//	raw: NOOP\r\nNO           send bytes; \r \n \t \\ \xHH are unescaped
//	repeat: 5000 x            send the (unescaped) text that many times
//	s: 250 2.0.0              read a reply whose last line starts with this
//	s: 250 | SIZE             ... and which contains each text after " | "
//	n: 1000 250 2.0.0         read that many replies starting with this
//	m: 1 | 2                  read a POP3 multi-line body; each text in it
//	closed                    the server has closed the connection
//	tls-alert                 read one fatal TLS alert record
//
// Cases run one after another from their own source address
// (127.0.20.x, fresh clients from 127.0.21.x), so bans and per-address
// limits of one case cannot decide another.
func TestBadInputSMTP(t *testing.T) { runBadInput(t, "smtp", "220 ") }

// TestBadInputPOP3 is the POP3 half of the matrix; alice has two messages
// that no case may delete.
func TestBadInputPOP3(t *testing.T) { runBadInput(t, "pop3", "+OK") }

func runBadInput(t *testing.T, proto, greeting string) {
	files, err := filepath.Glob(filepath.Join("testdata/badinput", proto, "*.case"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no cases: %v", err)
	}
	ts := startServer(t, nil)
	if proto == "pop3" {
		c := dialFrom(t, ts.srv.Addr("smtp"), "127.0.21.250")
		c.expect("220 ")
		c.cmd("EHLO setup.example", "250")
		for i := range 2 {
			c.deliver("setup@example.net", []string{testUser}, fmt.Sprintf("Subject: %d\r\n\r\nbody\r\n", i))
		}
		c.cmd("QUIT", "221")
	}
	for i, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".case"), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			script := string(data)
			hdr := caseHeader(script, proto)
			before := len(ts.messages(t, testUser))
			c := dialCase(t, ts.srv.Addr(hdr.listener), fmt.Sprintf("127.0.20.%d", i+1), hdr.tls)
			if hdr.greeting {
				c.expect(greeting)
			}
			runCase(t, c, script)
			c.conn.Close()
			implicitTLS := hdr.listener == "submissions" || hdr.listener == "pop3s"
			fresh := dialCase(t, ts.srv.Addr(hdr.listener), fmt.Sprintf("127.0.21.%d", i+1), implicitTLS)
			fresh.expect(greeting)
			fresh.send("QUIT")
			fresh.expect(map[string]string{"smtp": "221", "pop3": "+OK"}[proto])
			// The case's session has ended (and released what it held,
			// such as the POP3 maildrop lock) before the next case starts.
			waitForCond(t, "sessions ended", func() bool {
				var n int64
				for _, v := range ts.srv.sessionCounts() {
					n += v
				}
				return n == 0
			})
			if got := len(ts.messages(t, testUser)); got != before+hdr.stored {
				t.Fatalf("mailbox has %d messages, want %d", got, before+hdr.stored)
			}
		})
	}
}

type badInputHeader struct {
	listener string
	tls      bool
	greeting bool
	stored   int
}

func caseHeader(script, proto string) badInputHeader {
	h := badInputHeader{listener: proto, greeting: true}
	for _, line := range strings.Split(script, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "# listener:"):
			h.listener = strings.TrimSpace(line[len("# listener:"):])
		case line == "# tls":
			h.tls = true
		case line == "# greeting: no":
			h.greeting = false
		case strings.HasPrefix(line, "# stored:"):
			h.stored, _ = strconv.Atoi(strings.TrimSpace(line[len("# stored:"):]))
		}
	}
	return h
}

func dialCase(t *testing.T, addr, src string, useTLS bool) *client {
	t.Helper()
	if addr == "" {
		t.Fatal("no such listener")
	}
	c := dialFrom(t, addr, src)
	if useTLS {
		tc := tls.Client(c.conn, &tls.Config{InsecureSkipVerify: true})
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		c.conn = tc
		c.r = bufio.NewReader(tc)
	}
	return c
}

func runCase(t *testing.T, c *client, script string) {
	t.Helper()
	for n, line := range strings.Split(script, "\n") {
		line = strings.TrimRight(line, "\r")
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case line == "c:" || strings.HasPrefix(line, "c: "):
			c.send(strings.TrimPrefix(line[2:], " "))
		case strings.HasPrefix(line, "raw: "):
			c.raw(smtptest.Unescape(line[5:]))
		case strings.HasPrefix(line, "repeat: "):
			count, text, _ := strings.Cut(line[8:], " ")
			k, err := strconv.Atoi(count)
			if err != nil {
				t.Fatalf("line %d: %v", n+1, err)
			}
			c.raw(strings.Repeat(smtptest.Unescape(text), k))
		case strings.HasPrefix(line, "s: "):
			t.Logf("line %d: %s", n+1, line)
			c.expect(line[3:])
		case strings.HasPrefix(line, "n: "):
			count, want, _ := strings.Cut(line[3:], " ")
			k, err := strconv.Atoi(count)
			if err != nil {
				t.Fatalf("line %d: %v", n+1, err)
			}
			for range k {
				c.expect(want)
			}
		case strings.HasPrefix(line, "m:"):
			var body []string
			for {
				l, err := c.r.ReadString('\n')
				if err != nil {
					t.Fatalf("line %d: multi-line body: %v", n+1, err)
				}
				if l = strings.TrimRight(l, "\r\n"); l == "." {
					break
				}
				body = append(body, l)
			}
			all := strings.Join(body, "\n")
			for _, want := range strings.Split(strings.TrimSpace(line[2:]), " | ") {
				if !strings.Contains(all, want) {
					t.Fatalf("line %d: multi-line body lacks %q:\n%s", n+1, want, all)
				}
			}
		case line == "closed":
			expectEOF(t, c)
		case line == "tls-alert":
			// RFC 8446 6 / RFC 5246 7.2: a fatal alert record, the only
			// thing a TLS server may send to a broken handshake.
			b := make([]byte, 7)
			c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadFull(c.r, b); err != nil || b[0] != 0x15 || b[5] != 2 {
				t.Fatalf("line %d: want a fatal TLS alert, got %q (%v)", n+1, b, err)
			}
		default:
			t.Fatalf("line %d: bad step %q", n+1, line)
		}
	}
}

// expectEOF checks that the server has closed the connection: a read
// ends in EOF (or a reset), not in a timeout with the connection still
// open, and the server sends nothing more first.
func expectEOF(t *testing.T, c *client) {
	t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := c.r.ReadString('\n')
	var ne net.Error
	switch {
	case err == nil || b != "":
		t.Fatalf("want connection closed, got %q", b)
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatal("want connection closed, it is still open")
	}
}
