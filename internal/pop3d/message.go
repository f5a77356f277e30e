package pop3d

import (
	"bufio"
	"errors"
	"io"
	"sync"
)

// msgReaders are the 32 KiB buffers writeMessage reads a stored message
// through, reused: one allocated for every RETR and TOP was most of what a
// POP3 session allocated (three 1 KiB messages: 96 KiB of garbage a login).
var msgReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 32<<10) }}

// writeMessage copies a stored message to w as the body of a multi-line
// response (RFC 1939 3): every line ends in CRLF (a bare LF from a file
// written by another program becomes CRLF), a line starting with "."
// gets another "." in front, and the last line is terminated even when
// the file does not end in a line break. With bodyLines >= 0 only the
// header, the blank line and that many body lines are sent (TOP).
func writeMessage(w *bufio.Writer, r io.Reader, bodyLines int) error {
	br := msgReaders.Get().(*bufio.Reader)
	br.Reset(r)
	defer func() {
		br.Reset(nil) // keeps no file
		msgReaders.Put(br)
	}()
	inBody := false
	sent := 0         // body lines sent
	lineStart := true // at the start of a line
	lineEmpty := true // the current line has no content yet
	for {
		if inBody && bodyLines >= 0 && sent >= bodyLines && lineStart {
			return nil
		}
		frag, err := br.ReadSlice('\n')
		if len(frag) > 0 {
			if lineStart && frag[0] == '.' {
				w.WriteByte('.')
			}
			complete := frag[len(frag)-1] == '\n'
			content := frag
			if complete {
				content = frag[:len(frag)-1]
				if n := len(content); n > 0 && content[n-1] == '\r' {
					content = content[:n-1]
				}
			}
			w.Write(content)
			if len(content) > 0 {
				lineEmpty = false
			}
			if complete {
				w.WriteString("\r\n")
				if inBody {
					sent++
				} else if lineEmpty {
					inBody = true // the blank line ends the header
				}
				lineStart, lineEmpty = true, true
			} else {
				lineStart = false
			}
		}
		switch {
		case err == nil || errors.Is(err, bufio.ErrBufferFull):
		case errors.Is(err, io.EOF):
			if !lineStart {
				w.WriteString("\r\n")
			}
			return nil
		default:
			return err
		}
	}
}
