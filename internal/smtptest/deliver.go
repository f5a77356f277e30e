package smtptest

import (
	"bufio"
	"io"
	"net"
	"strings"
	"time"
)

// Deliver runs one transaction (EHLO, MAIL, RCPT, DATA) from src ("" =
// the default source address) without failing the test, for load and
// fault tests whose clients meet refusals and dead servers: it returns
// the reply to the data, or the first reply that was not the expected one
// (a 4xx at RCPT), or the connection's error. data is the message without
// the final dot line.
func Deliver(addr, src, from, rcpt, data string) (string, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	r := bufio.NewReader(conn)
	reply := func() (string, error) {
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return "", err
			}
			if len(l) < 4 || l[3] != '-' {
				return strings.TrimRight(l, "\r\n"), nil
			}
		}
	}
	for _, s := range [][2]string{{"", "220"}, {"EHLO sender.example\r\n", "250"}, {"MAIL FROM:<" + from + ">\r\n", "250"},
		{"RCPT TO:<" + rcpt + ">\r\n", "250"}, {"DATA\r\n", "354"}} {
		if s[0] != "" {
			if _, err := io.WriteString(conn, s[0]); err != nil {
				return "", err
			}
		}
		l, err := reply()
		if err != nil || !strings.HasPrefix(l, s[1]) {
			return l, err
		}
	}
	if _, err := io.WriteString(conn, data+".\r\n"); err != nil {
		return "", err
	}
	return reply()
}
