package bench

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"time"
)

// smtpConn is a minimal SMTP client for load generation: it keeps the
// reply codes visible (the failure causes are the point of the report),
// which net/smtp hides behind errors.
type smtpConn struct {
	c       net.Conn
	r       *bufio.Reader
	w       *bufio.Writer
	ext     map[string]string // being collected during EHLO
	extDone map[string]string // EHLO keywords of the server
	last    string            // last reply line, for failure causes
}

func newSMTPConn(c net.Conn) *smtpConn {
	return &smtpConn{c: c, r: bufio.NewReaderSize(c, 4096), w: bufio.NewWriterSize(c, 8192)}
}

// reply reads one reply and returns its code (0 when the connection ended).
func (s *smtpConn) reply() (int, error) {
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return 0, err
		}
		line = strings.TrimRight(line, "\r\n")
		s.last = line
		if len(line) < 3 || line[0] < '0' || line[0] > '9' {
			return 0, nil // not SMTP (e.g. a POP3 or IMAP greeting): see s.last
		}
		var code int
		fmt.Sscanf(line[:3], "%d", &code)
		if len(line) > 3 && line[3] == '-' {
			if s.ext != nil {
				kw, arg, _ := strings.Cut(line[4:], " ")
				s.ext[strings.ToUpper(kw)] = arg
			}
			continue
		}
		if s.ext != nil && len(line) > 4 {
			kw, arg, _ := strings.Cut(line[4:], " ")
			s.ext[strings.ToUpper(kw)] = arg
		}
		return code, nil
	}
}

func (s *smtpConn) send(format string, a ...any) error {
	fmt.Fprintf(s.w, format+"\r\n", a...)
	return s.w.Flush()
}

// cmd sends a command and returns the reply code.
func (s *smtpConn) cmd(format string, a ...any) (int, error) {
	if err := s.send(format, a...); err != nil {
		return 0, err
	}
	return s.reply()
}

func (s *smtpConn) ehlo(helo string) (int, error) {
	s.ext = map[string]string{}
	code, err := s.cmd("EHLO %s", helo)
	s.ext2()
	return code, err
}

// ext2 stops collecting extensions once EHLO is answered.
func (s *smtpConn) ext2() {
	if s.ext == nil {
		return
	}
	ext := s.ext
	s.ext = nil
	s.extDone = ext
}

func (s *smtpConn) has(kw string) bool {
	_, ok := s.extDone[kw]
	return ok
}

func (s *smtpConn) startTLS() error {
	code, err := s.cmd("STARTTLS")
	if err != nil {
		return err
	}
	if code != 220 {
		return fmt.Errorf("STARTTLS refused: %s", s.last)
	}
	tc := tls.Client(s.c, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		return err
	}
	s.c = tc
	s.r.Reset(tc)
	s.w.Reset(tc)
	return nil
}

func (s *smtpConn) authPlain(user, pass string) (int, error) {
	return s.cmd("AUTH PLAIN %s", base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+pass)))
}

// transaction sends one message; with PIPELINING, MAIL/RCPT/DATA go in one
// write (RFC 2920). It returns the code of the first failing reply or of the
// final reply to the data.
func (s *smtpConn) transaction(from, rcpt string, body []byte) (int, error) {
	if s.has("PIPELINING") {
		fmt.Fprintf(s.w, "MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n", from, rcpt)
		if err := s.w.Flush(); err != nil {
			return 0, err
		}
		var first int
		for i := 0; i < 3; i++ {
			code, err := s.reply()
			if err != nil {
				return 0, err
			}
			if first == 0 && ((i < 2 && code != 250) || (i == 2 && code != 354)) {
				first = code
			}
		}
		if first != 0 {
			s.cmd("RSET")
			return first, nil
		}
	} else {
		for _, c := range []struct {
			line string
			want int
		}{{"MAIL FROM:<" + from + ">", 250}, {"RCPT TO:<" + rcpt + ">", 250}, {"DATA", 354}} {
			code, err := s.cmd("%s", c.line)
			if err != nil {
				return 0, err
			}
			if code != c.want {
				if c.want == 250 {
					s.cmd("RSET")
				}
				return code, nil
			}
		}
	}
	s.w.Write(body)
	s.w.WriteString(".\r\n")
	if err := s.w.Flush(); err != nil {
		return 0, err
	}
	return s.reply()
}

func (s *smtpConn) setDeadline(d time.Duration) { s.c.SetDeadline(time.Now().Add(d)) }

// message builds a body of about size bytes with CRLF lines, dot-safe.
func message(from, rcpt string, size int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: <%s>\r\nTo: <%s>\r\nSubject: agua bench\r\nMessage-ID: <%d@bench.example>\r\n\r\n", from, rcpt, time.Now().UnixNano())
	line := strings.Repeat("abcdefghij", 7) + "\r\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	return []byte(b.String())
}
