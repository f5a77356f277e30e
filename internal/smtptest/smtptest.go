// Package smtptest is the SMTP test client and dialog runner shared by the
// tests of internal/smtpd (against an in-memory backend) and
// internal/server (against the whole server). Dialogs are data files, one
// case per file with the extension .dlg (chasquid's .cmy style), so a new
// abuse or edge case is one small file.
package smtptest

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Client speaks SMTP line by line, as a test script would.
type Client struct {
	t    testing.TB
	Conn net.Conn
	R    *bufio.Reader
}

// Dial connects to addr; the connection closes with the test.
func Dial(t testing.TB, addr string) *Client {
	t.Helper()
	return DialFrom(t, addr, "")
}

// DialFrom connects from a chosen loopback source address ("" = the
// default), so tests can be many clients (127.x.y.z).
func DialFrom(t testing.TB, addr, src string) *Client {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return &Client{t: t, Conn: c, R: bufio.NewReader(c)}
}

// On speaks SMTP on a connection the caller already has, reading through r.
func On(t testing.TB, conn net.Conn, r *bufio.Reader) *Client {
	return &Client{t: t, Conn: conn, R: r}
}

// Send writes a line and CRLF.
func (c *Client) Send(line string) {
	c.t.Helper()
	if _, err := io.WriteString(c.Conn, line+"\r\n"); err != nil {
		c.t.Fatalf("send %q: %v", line, err)
	}
}

// Raw writes s as it is.
func (c *Client) Raw(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.Conn, s); err != nil {
		c.t.Fatalf("send raw: %v", err)
	}
}

// Reply reads one (possibly multi-line) reply and returns its lines.
func (c *Client) Reply() ([]string, error) {
	var lines []string
	for {
		l, err := c.R.ReadString('\n')
		if err != nil {
			return lines, err
		}
		l = strings.TrimRight(l, "\r\n")
		lines = append(lines, l)
		if len(l) < 4 || l[3] != '-' {
			return lines, nil
		}
	}
}

// Expect reads a reply whose last line starts with the text before the
// first " | "; each further text after " | " must be somewhere in the
// reply ("250 | SIZE | AUTH PLAIN").
func (c *Client) Expect(want string) string {
	c.t.Helper()
	prefix, has, _ := strings.Cut(want, " | ")
	lines, err := c.Reply()
	if err != nil {
		c.t.Fatalf("want %q, read error %v (got %q)", want, err, lines)
	}
	all := strings.Join(lines, "\n")
	if !strings.HasPrefix(lines[len(lines)-1], prefix) {
		c.t.Fatalf("want reply %q, got %q", want, lines)
	}
	if has != "" {
		for _, h := range strings.Split(has, " | ") {
			if !strings.Contains(all, h) {
				c.t.Fatalf("reply lacks %q: %q", h, lines)
			}
		}
	}
	return all
}

// Cmd sends a line and expects a reply starting with prefix.
func (c *Client) Cmd(line, prefix string) string {
	c.t.Helper()
	c.Send(line)
	return c.Expect(prefix)
}

// ExpectClosed checks that the server closed the connection.
func (c *Client) ExpectClosed() {
	c.t.Helper()
	c.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b, err := c.R.ReadString('\n'); err == nil {
		c.t.Fatalf("want connection closed, got %q", b)
	}
}

// StartTLS runs STARTTLS and the handshake (any certificate accepted).
func (c *Client) StartTLS() {
	c.t.Helper()
	c.Cmd("STARTTLS", "220 2.0.0")
	tc := tls.Client(c.Conn, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		c.t.Fatal(err)
	}
	c.Conn = tc
	c.R = bufio.NewReader(tc)
}

// RunDir replays every dialog in dir (*.dlg) as a subtest. addr maps the
// listener a dialog names to the address to dial.
//
// Format, one step per line:
//
//	# listener: submission      which listener to dial (default smtp)
//	c: EHLO x                   send a line (CRLF added)
//	raw: text\r\n               send bytes; \r \n \t \\ are unescaped
//	s: 250 2.1.0                read a reply whose last line starts with this
//	s: 250 | SIZE | AUTH PLAIN  ... and which contains each of these
//	starttls                    STARTTLS (220 2.0.0) and the TLS handshake
//	closed                      the server has closed the connection
//	# anything else             a comment
//
// The 220 greeting is read before the first step.
func RunDir(t *testing.T, dir string, addr func(t *testing.T, listener string) string) {
	files, err := filepath.Glob(filepath.Join(dir, "*.dlg"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no dialogs in %s: %v", dir, err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".dlg"), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			Run(t, string(data), addr)
		})
	}
}

// Run replays one dialog script (see RunDir).
func Run(t *testing.T, script string, addr func(t *testing.T, listener string) string) {
	listener := "smtp"
	for _, line := range strings.Split(script, "\n") {
		if v, ok := strings.CutPrefix(line, "# listener:"); ok {
			listener = strings.TrimSpace(v)
		}
	}
	c := Dial(t, addr(t, listener))
	c.Expect("220 ")
	for n, line := range strings.Split(script, "\n") {
		line = strings.TrimRight(line, "\r")
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case line == "c:" || strings.HasPrefix(line, "c: "):
			c.Send(strings.TrimPrefix(line[2:], " "))
		case strings.HasPrefix(line, "raw: "):
			c.Raw(Unescape(line[5:]))
		case strings.HasPrefix(line, "s: "):
			t.Logf("line %d", n+1)
			c.Expect(line[3:])
		case line == "starttls":
			c.StartTLS()
		case line == "closed":
			c.ExpectClosed()
		default:
			t.Fatalf("line %d: bad dialog step %q", n+1, line)
		}
	}
}

// Unescape turns \r \n \t \\ and \xHH into the bytes they name; the
// dialog and bad-input files of every protocol write raw bytes this way.
func Unescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		i++
		switch s[i] {
		case 'r':
			b.WriteByte('\r')
		case 'n':
			b.WriteByte('\n')
		case 't':
			b.WriteByte('\t')
		case 'x':
			if i+3 > len(s) {
				b.WriteString(`\x`)
				continue
			}
			v, _ := strconv.ParseUint(s[i+1:i+3], 16, 8)
			b.WriteByte(byte(v))
			i += 2
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}
