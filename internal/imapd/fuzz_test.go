package imapd

import (
	"io"
	"net"
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
	} {
		f.Add(s)
	}
	ts := startTest(f, nil)
	ts.deliver(f, "Subject: fuzz\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b--\r\n")
	f.Fuzz(func(t *testing.T, input string) {
		c, err := net.DialTimeout("tcp", ts.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "l LOGIN alice@example.test \"secret pass\"\r\ns SELECT INBOX\r\n"+input+"\r\nz LOGOUT\r\n")
		buf := make([]byte, 64<<10)
		var got strings.Builder
		for {
			n, err := c.Read(buf)
			got.Write(buf[:n])
			if err != nil || strings.Contains(got.String(), "z OK") {
				break
			}
		}
		if ts.srv.Panics() != 0 {
			t.Fatalf("session panicked on %q", input)
		}
	})
}
