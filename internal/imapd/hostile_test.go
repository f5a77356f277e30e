package imapd

import (
	"bufio"
	"crypto/tls"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestHostileInput runs the bad-input matrix of testdata/hostile: one
// file per case, each a dialog of what a hostile or broken client sends
// and what it must get back. Steps:
//
//	listener: imaps        dial the implicit-TLS listener (no greeting in clear)
//	login                  "L LOGIN" as alice, expecting "L OK"
//	c: LINE                send LINE and CRLF
//	raw: "QUOTED"          send the Go-quoted bytes as they are
//	fill: N "QUOTED"       send N bytes: the quoted string over and over
//
// (what a run of c:, raw: and fill: sends goes out in one write)
//
//	s: PREFIX              the next line starts with PREFIX
//	s~ PREFIX              skip lines up to one that starts with PREFIX
//	n: COUNT PREFIX        the next COUNT lines start with PREFIX
//	closed                 the server closes (after BYE/BAD/NO lines, if any)
//	folder: NAME           NAME exists afterwards
//	nofolder: NAME         NAME does not exist afterwards
//	messages: FOLDER N     FOLDER ("" for INBOX) holds N messages afterwards
//
// Client bytes are written by their own goroutine, so a case can send
// more than the socket buffers hold while it reads. After every case a
// fresh client must be greeted and served, and no Maildir holds a
// partial message (nothing in any tmp/).
func TestHostileInput(t *testing.T) {
	files, err := filepath.Glob("testdata/hostile/*.case")
	if err != nil || len(files) == 0 {
		t.Fatalf("no cases: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".case"), func(t *testing.T) {
			t.Parallel()
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			runHostile(t, string(data))
		})
	}
}

// hostileClient reads replies line by line while a goroutine writes.
type hostileClient struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
	out  chan []byte
	done chan struct{}
}

func dialHostile(t *testing.T, addr string) *hostileClient {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(60 * time.Second))
	h := &hostileClient{t: t, conn: c, r: bufio.NewReader(c), out: make(chan []byte, 64), done: make(chan struct{})}
	go func() {
		defer close(h.done)
		failed := false
		for b := range h.out {
			if !failed {
				// The server may close on us: later writes fail, which
				// is what some cases expect.
				_, err := c.Write(b)
				failed = err != nil
			}
		}
	}()
	t.Cleanup(func() {
		close(h.out)
		c.Close()
		<-h.done
	})
	return h
}

func (h *hostileClient) readLine() (string, error) {
	l, err := h.r.ReadString('\n')
	return strings.TrimSuffix(l, "\r\n"), err
}

func (h *hostileClient) expect(n int, prefix string) {
	h.t.Helper()
	l, err := h.readLine()
	if err != nil || !strings.HasPrefix(l, prefix) {
		h.t.Fatalf("line %d: want %q, got %q (%v)", n, prefix, sanitize(l), err)
	}
}

func runHostile(t *testing.T, script string) {
	ts := startTest(t, nil)
	lines := strings.Split(script, "\n")
	addr, implicit := ts.addr, false
	for _, l := range lines {
		if strings.TrimSpace(l) == "listener: imaps" {
			tlsSrv := startTest(t, func(c *Config) { c.ImplicitTLS = true })
			addr, implicit = tlsSrv.addr, true
			t.Cleanup(func() { checkFresh(t, tlsSrv, true) })
		}
	}
	h := dialHostile(t, addr)
	if !implicit {
		h.expect(0, "* OK [CAPABILITY IMAP4rev2 IMAP4rev1")
	}
	var pending []byte // client bytes not yet handed to the writer
	for i, line := range lines {
		n := i + 1
		line = strings.TrimRight(line, "\r")
		directive, arg, _ := strings.Cut(line, " ")
		switch directive {
		case "login", "c:", "raw:", "fill:", "", "#", "listener:":
		default:
			// The client writes all it has before it reads (in one
			// write: what a client pipelines arrives together).
			h.flush(&pending)
		}
		switch directive {
		case "", "#", "listener:":
		case "login":
			h.flush(&pending)
			h.out <- []byte("L LOGIN " + testUser + " \"" + testPass + "\"\r\n")
			h.expect(n, "L OK")
		case "c:":
			pending = append(pending, arg+"\r\n"...)
		case "raw:":
			pending = append(pending, unquote(t, n, arg)...)
		case "fill:":
			size, q, _ := strings.Cut(arg, " ")
			total, err := strconv.Atoi(size)
			if err != nil {
				t.Fatalf("line %d: %v", n, err)
			}
			unit := unquote(t, n, q)
			pending = append(pending, strings.Repeat(unit, total/len(unit)+1)[:total]...)
		case "s:":
			h.expect(n, arg)
		case "s~":
			for {
				l, err := h.readLine()
				if err != nil {
					t.Fatalf("line %d: want %q, read %v", n, arg, err)
				}
				if strings.HasPrefix(l, arg) {
					break
				}
			}
		case "n:":
			count, prefix, _ := strings.Cut(arg, " ")
			k, err := strconv.Atoi(count)
			if err != nil {
				t.Fatalf("line %d: %v", n, err)
			}
			for range k {
				h.expect(n, prefix)
			}
		case "closed":
			for {
				l, err := h.readLine()
				if err != nil {
					break
				}
				if !strings.HasPrefix(l, "* BYE") && !strings.Contains(l, " BAD ") && !strings.Contains(l, " NO ") {
					t.Fatalf("line %d: want connection closed, got %q", n, sanitize(l))
				}
			}
		case "folder:", "nofolder:":
			names, err := ts.store.ListFolders(testUser)
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, f := range names {
				found = found || f == arg
			}
			if found != (directive == "folder:") {
				t.Fatalf("line %d: folder %q exists: %v (folders %q)", n, arg, found, names)
			}
		case "messages:":
			folder, count, _ := strings.Cut(arg, " ")
			folder, _ = strconv.Unquote(folder)
			want, err := strconv.Atoi(count)
			if err != nil {
				t.Fatalf("line %d: %v", n, err)
			}
			f, err := ts.store.Folder(testUser, folder)
			if err != nil {
				t.Fatalf("line %d: %v", n, err)
			}
			l, err := f.List()
			f.Close()
			if err != nil || len(l.Messages) != want {
				t.Fatalf("line %d: %q holds %d messages (%v), want %d", n, folder, len(l.Messages), err, want)
			}
		default:
			t.Fatalf("line %d: bad step %q", n, line)
		}
	}
	h.flush(&pending)
	checkFresh(t, ts, false)
}

func (h *hostileClient) flush(pending *[]byte) {
	if len(*pending) > 0 {
		h.out <- *pending
		*pending = nil
	}
}

func unquote(t *testing.T, n int, q string) string {
	s, err := strconv.Unquote(q)
	if err != nil || s == "" {
		t.Fatalf("line %d: bad quoted string %s: %v", n, q, err)
	}
	return s
}

// checkFresh: a new client is greeted and served, and no message was left
// half-written.
func checkFresh(t *testing.T, ts *testServer, implicit bool) {
	t.Helper()
	var conn net.Conn
	var err error
	if implicit {
		conn, err = tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ts.addr, &tls.Config{InsecureSkipVerify: true})
	} else {
		conn, err = net.DialTimeout("tcp", ts.addr, 5*time.Second)
	}
	if err != nil {
		t.Fatalf("fresh client: %v", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	c := &client{t: t, conn: conn, r: bufio.NewReader(conn)}
	c.expect("* OK")
	c.send(`f1 LOGIN alice@example.test "secret pass"`)
	c.expect("f1 OK")
	c.send("f2 NOOP")
	c.expect("f2 OK")
	var partial []string
	filepath.WalkDir(ts.root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && filepath.Base(filepath.Dir(p)) == "tmp" {
			partial = append(partial, p)
		}
		return nil
	})
	if len(partial) > 0 {
		t.Fatalf("partial messages left: %q", partial)
	}
}
