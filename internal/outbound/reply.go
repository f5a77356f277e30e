package outbound

import (
	"bufio"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Reply is a server's SMTP reply (RFC 5321 4.2).
type Reply struct {
	Code     int
	Enhanced string   // "5.1.1" when the server uses RFC 3463 codes
	Lines    []string // text of each line, without code and separator
}

// String is the reply as one line, for logs and DSNs.
func (r Reply) String() string {
	s := strconv.Itoa(r.Code)
	if r.Enhanced != "" {
		s += " " + r.Enhanced
	}
	if t := strings.Join(r.Lines, " "); t != "" {
		s += " " + t
	}
	return s
}

// Temporary and Permanent classify the reply (RFC 5321 4.2.1).
func (r Reply) Temporary() bool { return r.Code >= 400 && r.Code < 500 }
func (r Reply) Permanent() bool { return r.Code >= 500 }

// Limits on what a peer may send back. RFC 5321 4.5.3.1.5 allows reply
// lines of 512 octets; a reply of thousands of lines is an attack or a
// broken server, and ends the session.
const (
	maxReplyLine  = 2048
	maxReplyLines = 200
)

// Errors of a session that decide what happens to the messages.
var (
	// ErrProtocol: the peer broke the protocol (garbage, a reply that
	// never ends, a code that does not fit). Temporary for the message.
	ErrProtocol = errors.New("outbound: protocol error from peer")
	// ErrTLSRequired: the relay host did not offer STARTTLS or the
	// handshake failed while TLS is required.
	ErrTLSRequired = errors.New("outbound: TLS required but not available")
)

// ReplyError is a reply that refused a step of the session.
type ReplyError struct {
	Stage string // "greeting", "EHLO", "MAIL", "RCPT", "DATA", "end of data", ...
	Reply Reply
}

func (e *ReplyError) Error() string { return e.Stage + ": " + e.Reply.String() }

// readReply reads one possibly multi-line reply.
func readReply(r *bufio.Reader) (Reply, error) {
	var rep Reply
	for n := 0; ; n++ {
		if n >= maxReplyLines {
			return rep, fmt.Errorf("%w: reply longer than %d lines", ErrProtocol, maxReplyLines)
		}
		line, err := readLine(r)
		if err != nil {
			return rep, err
		}
		if len(line) < 3 {
			return rep, fmt.Errorf("%w: short reply line %q", ErrProtocol, trunc(line))
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil || code < 200 || code > 599 {
			return rep, fmt.Errorf("%w: bad reply %q", ErrProtocol, trunc(line))
		}
		if n > 0 && code != rep.Code {
			return rep, fmt.Errorf("%w: reply code changed within a reply", ErrProtocol)
		}
		rep.Code = code
		sep, text := byte(' '), ""
		if len(line) > 3 {
			sep, text = line[3], line[4:]
		}
		if sep != ' ' && sep != '-' {
			return rep, fmt.Errorf("%w: bad reply %q", ErrProtocol, trunc(line))
		}
		if n == 0 {
			// RFC 2034 2: the enhanced code follows the reply code on
			// every line; keep it once.
			if cls, rest, ok := strings.Cut(text, " "); ok || cls != "" {
				if isEnhanced(cls, code) {
					rep.Enhanced, text = cls, rest
				}
			}
		} else if rep.Enhanced != "" {
			text = strings.TrimPrefix(strings.TrimPrefix(text, rep.Enhanced), " ")
		}
		rep.Lines = append(rep.Lines, text)
		if sep == ' ' {
			return rep, nil
		}
	}
}

func readLine(r *bufio.Reader) (string, error) {
	line, err := r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) || len(line) > maxReplyLine {
		return "", fmt.Errorf("%w: reply line longer than %d bytes", ErrProtocol, maxReplyLine)
	}
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(line), "\r\n"), nil
}

// isEnhanced reports whether s is an RFC 3463 status code of the reply's
// class.
func isEnhanced(s string, code int) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || len(parts[0]) != 1 || parts[0][0] != byte('0'+code/100) {
		return false
	}
	for _, p := range parts[1:] {
		if n, err := strconv.Atoi(p); err != nil || n < 0 || n > 999 || len(p) > 3 {
			return false
		}
	}
	return true
}

func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
