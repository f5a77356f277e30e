package imapd

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

// FuzzSession feeds arbitrary command lines to a logged-in session (with
// a selected mailbox holding a message): the server must neither panic
// nor stop serving others.
func FuzzSession(f *testing.F) {
	for _, s := range []string{
		"a FETCH 1:* (FLAGS BODY[])",
		"a UID FETCH 1:* (BODY.PEEK[1.MIME] BODY[HEADER.FIELDS (From)]<0.10>)",
		"a STORE 1 FLAGS (\\Seen \\Deleted $Junk)",
		"a SEARCH OR BODY x NOT FLAGGED",
		"a COPY 1 Trash\r\nb MOVE 1 Junk",
		"a APPEND INBOX {3+}\r\nabc",
		"a CREATE ../../x",
		"a LIST \"\" *",
		"a STATUS INBOX (MESSAGES UIDNEXT SIZE)",
		"a IDLE\r\nDONE",
		"a FETCH 4294967295 FLAGS",
		"a FETCH 1 BODY[99.99.99]",
		"a RENAME Sent ..",
		"a EXPUNGE",
		"\x00\xff{999999999}",
		// Literals (issue 10): over and within the limits, synchronizing
		// or not, in every place one can appear.
		"a APPEND INBOX {26214401+}\r\nX-Hdr: CREATE evil",
		"a APPEND INBOX {26214401}",
		"a APPEND {5000+}\r\n" + strings.Repeat("X CREATE evil\r\n", 334)[:5000] + " {3+}\r\nabc",
		"a CREATE {5000+}\r\n" + strings.Repeat("X CREATE evil\r\n", 334)[:5000],
		"a CREATE a b {18+}\r\nX-Hdr: CREATE evil",
		"a SEARCH TEXT {4+}\r\nabcd CHARSET {5}",
		"a LOGIN {5}\r\nalice {3+}\r\npass",
		"a AUTHENTICATE PLAIN {10+}\r\n0123456789",
		"a AUTHENTICATE PLAIN !!!notbase64",
		"a IDLE\r\nb CREATE {3+}\r\nabc",
		"a RENAME {3+}\r\nabc {3+}\r\ndef",
		"a CREATE \"x {3+}\r\nabc",
		"a NOOP\r\rb CREATE evil",
		"a FETCH 0 FLAGS",
		"a SEARCH ((((((((((ALL))))))))))",
		"a CREATE &Jjo",
		"a STARTTLS\r\nb NOOP",
	} {
		f.Add(s)
	}
	ts := startTest(f, nil)
	ts.deliver(f, "Subject: fuzz\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b--\r\n")
	f.Fuzz(func(t *testing.T, input string) {
		// After login with a mailbox selected, and before login.
		for _, preamble := range []string{"l LOGIN alice@example.test \"secret pass\"\r\ns SELECT INBOX\r\n", ""} {
			c, err := net.DialTimeout("tcp", ts.addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(4 * time.Second))
			io.WriteString(c, preamble+input+"\r\nz LOGOUT\r\n")
			buf := make([]byte, 64<<10)
			var got strings.Builder
			for {
				n, err := c.Read(buf)
				got.Write(buf[:n])
				if err != nil || strings.Contains(got.String(), "z OK") {
					break
				}
			}
			c.Close()
			if ts.srv.Panics() != 0 {
				t.Fatalf("session panicked on %q", input)
			}
		}
	})
}

// FuzzLiteralInjection sends a command line (fuzzed) that announces a
// literal, before or after login, synchronizing or not, of any size from
// exactly its octets to far more, whose octets are commands: a login and
// "CREATE injected". Whatever the command and size, the literal's octets
// must never be run as commands (issue 10): the folder must not appear.
// A synchronizing literal is sent only after "+", as a client must, and
// the server must answer its announcement at once.
func FuzzLiteralInjection(f *testing.F) {
	for _, s := range []struct {
		cmd     string
		extra   uint32
		nonSync bool
		login   bool
	}{
		{"APPEND INBOX", 26214400, true, true},
		{"APPEND INBOX", 0, true, true},
		{"APPEND INBOX", 0, false, true},
		{"CREATE", 5000, true, true},
		{"CREATE a b", 0, true, true},
		{"SEARCH TEXT", 6000, true, true},
		{"SEARCH CHARSET UTF-8 TEXT", 0, false, true},
		{"LOGIN", 5000, true, false},
		{"LOGIN", 5000, false, false},
		{"LOGIN", 999999999, false, false},
		{"AUTHENTICATE PLAIN", 0, true, false},
		{"STATUS", 0, true, true},
	} {
		f.Add(s.cmd, s.extra, s.nonSync, s.login)
	}
	ts := startTest(f, nil)
	f.Fuzz(func(t *testing.T, cmd string, extra uint32, nonSync, login bool) {
		if strings.ContainsAny(cmd, "\r\n") {
			t.Skip("one command line")
		}
		ts.store.DeleteFolder(testUser, "injected") // each input on its own
		extra %= 1 << 26                            // beyond any limit: as good as bigger
		payload := "M0 LOGIN alice@example.test \"secret pass\"\r\nM1 CREATE injected\r\n"
		size := int64(len(payload)) + int64(extra)
		c, err := net.DialTimeout("tcp", ts.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		r := bufio.NewReader(c)
		r.ReadString('\n') // greeting
		if login {
			io.WriteString(c, "L LOGIN alice@example.test \"secret pass\"\r\n")
		}
		plus := ""
		if nonSync {
			plus = "+"
		}
		fmt.Fprintf(c, "X1 %s {%d%s}\r\n", cmd, size, plus)
		send := nonSync
		for !send {
			// Issue 10: an announced literal is answered at once ("+",
			// a tagged reply, or a close).
			l, err := r.ReadString('\n')
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("no answer to %q {%d}", cmd, size)
			}
			if err != nil || strings.HasPrefix(l, "X1 ") {
				break
			}
			send = strings.HasPrefix(l, "+ ")
		}
		if send {
			go func() {
				io.WriteString(c, payload)
				for left := int64(extra); left > 0; {
					k := min(left, 1<<20)
					if _, err := c.Write(bytes.Repeat([]byte("x"), int(k))); err != nil {
						return
					}
					left -= k
				}
				io.WriteString(c, "\r\nz LOGOUT\r\n")
			}()
		} else {
			io.WriteString(c, "\r\nz LOGOUT\r\n")
		}
		io.Copy(io.Discard, r)
		names, err := ts.store.ListFolders(testUser)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(names, "injected") {
			t.Fatalf("literal octets run as commands: %q {%d%s}", cmd, size, plus)
		}
	})
}
