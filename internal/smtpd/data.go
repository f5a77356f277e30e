package smtpd

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/agua-mail/agua/internal/connsrv"
	"github.com/agua-mail/agua/internal/mailevents"
	"github.com/agua-mail/agua/shield"
)

// MaxReceived is the number of Received fields at which a message is
// refused as looping (RFC 5321 6.3: loop detection by counting Received
// fields). The RFC suggests a large threshold (at least 100) for servers
// that are never to break legitimate long paths; Postfix uses 50; agua
// takes 30 (issue 12), far above any real path (a handful of hops) and
// low enough that a forwarding loop between two servers ends quickly.
const MaxReceived = 30

// memSpoolLimit is how much of a message is kept in memory before the rest
// goes to a temporary file, so a thousand concurrent large DATA transfers
// cannot exhaust memory.
const memSpoolLimit = 256 << 10

func (ss *session) cmdDATA(arg string) error {
	if arg != "" {
		return ss.refuseDATA(errSyntax)
	}
	ss.replyLine(354, "", "Start mail input; end with <CRLF>.<CRLF>")
	if err := ss.Flush(); err != nil {
		return errQuit
	}
	sp := newSpool(ss.srv.cfg.SpoolDir)
	defer sp.Close()
	msgID := connsrv.NewID()
	sp.Write(ss.appendReceived(sp.mem.AvailableBuffer(), msgID))
	bad, err := ss.readData(sp)
	if err != nil {
		ss.frame.ReadEnded(err, ss, &frameReplies)
		return errQuit
	}
	if sp.err != nil {
		ss.resetTransaction()
		return ErrTempLocal.WithCause(sp.err)
	}
	if bad != nil {
		ss.resetTransaction()
		ss.refused(bad.Code)
		ss.reply(bad)
		if bad != errTooBig && bad != ErrTooManyHops && !ss.report(shield.ProtocolError) {
			return errQuit
		}
		return nil
	}
	env := ss.env
	start := time.Now()
	err = ss.commit(sp)
	events := observed(ss.tx)
	if err != nil {
		ss.resetTransaction()
		ss.refused(AsError(err).Code)
		if !ss.reportSending(err) {
			return errQuit
		}
		if len(events) == 0 {
			return err
		}
		if ss.Fail(err) {
			return errQuit
		}
		return ss.reportAll(events)
	}
	ss.tx = nil // committed: nothing left to abort
	took := time.Since(start)
	ss.log.LogAttrs(ss.ctx, slog.LevelInfo, "smtp message accepted", slog.String("id", msgID), slog.String("from", env.From),
		slog.Int("rcpts", len(env.Recipients)), slog.Int64("size", sp.Size()), slog.Duration("took", took.Round(time.Microsecond)))
	ss.replyLine(250, "2.0.0", "OK queued as ", msgID)
	ss.resetTransaction()
	if h := ss.srv.hooks.Delivered; h != nil {
		h(&ss.info, &env, sp.Size(), took)
	}
	if !ss.report(mailevents.MessageAccepted) {
		return errQuit
	}
	return ss.reportAll(events)
}

// observed returns the events a transaction saw (Observer), if any.
func observed(tx Transaction) []shield.Event {
	if o, ok := tx.(Observer); ok {
		return o.Observed()
	}
	return nil
}

// reportAll reports events to the shield; errQuit when the session must
// end (its reply was sent).
func (ss *session) reportAll(events []shield.Event) error {
	for _, ev := range events {
		if !ss.report(ev) {
			return errQuit
		}
	}
	return nil
}

// commit hands the message to the backend: Body (content checks, which
// may wait on DNS) at once, then Commit (making it durable) in the
// session's turn of the fair delivery queue.
func (ss *session) commit(sp *spool) error {
	if err := ss.tx.Body(ss.ctx, sp, sp.Size()); err != nil {
		return err
	}
	if h := ss.srv.hooks.CommitSlot; h != nil {
		release, err := h(ss.ctx, ss.conn)
		if err != nil {
			return ErrTempLocal.WithCause(err)
		}
		defer release()
	}
	return ss.tx.Commit(ss.ctx)
}

func (ss *session) refused(code int) {
	if h := ss.srv.hooks.Refused; h != nil {
		h(&ss.info, code)
	}
}

// readData reads the message up to the lone "." line. RFC 5321 4.1.1.4:
// only CRLF.CRLF ends the data; a bare LF or CR anywhere is refused
// (SMTP smuggling), never treated as a line end. Dot-stuffing is undone
// (4.5.2). Oversize messages and overlong lines are read to the end and
// then refused, so the session stays in sync.
func (ss *session) readData(w io.Writer) (bad *Error, err error) {
	cfg := ss.srv.cfg
	var size int64
	var line []byte
	tooLong := false
	// A "." line ends the data only if the line before it ended in CRLF:
	// "<LF>.<CRLF>" is the classic smuggling sequence (CVE-2023-51766 class).
	prevCRLF := true
	inHeader, received := true, 0
	for {
		// The timeout is for each read from the network: a line already
		// in the buffer needs no new deadline (nor a clock reading).
		if !connsrv.HasLine(ss.r) {
			ss.conn.SetReadDeadline(ss.frame.ReadDeadline(cfg.DataTimeout))
		}
		frag, rerr := ss.r.ReadSlice('\n')
		if rerr != nil && rerr != bufio.ErrBufferFull {
			return nil, rerr
		}
		borrowed := false
		switch {
		case tooLong:
		case len(line)+len(frag) > cfg.MaxLineLength:
			tooLong = true
			line = line[:0]
		case rerr == nil && len(line) == 0:
			// The whole line in the reader's buffer (the usual case): used
			// where it is, valid until the next read; no copy, and no
			// allocation for one (issue 15).
			line, borrowed = frag, true
		default:
			line = append(line, frag...)
		}
		if rerr == bufio.ErrBufferFull {
			continue
		}
		if tooLong {
			tooLong = false
			prevCRLF = true
			if bad == nil {
				bad = errDataLine(cfg.MaxLineLength)
			}
			continue
		}
		n := len(line)
		crlf := n >= 2 && line[n-2] == '\r'
		if crlf && n == 3 && line[0] == '.' && prevCRLF {
			return bad, nil
		}
		prevCRLF = crlf
		if !crlf || bytes.IndexByte(line[:n-2], '\r') >= 0 {
			if bad == nil {
				bad = errBareLF
			}
		}
		// RFC 6152 / RFC 2045 2.8: 8BITMIME data carries no NUL (only
		// BINARYMIME would, and it is not offered); a stored NUL could not
		// be served over IMAP (RFC 3501 4.3) either.
		if bad == nil && bytes.IndexByte(line, 0) >= 0 {
			bad = errNUL
		}
		body := line
		if body[0] == '.' {
			body = body[1:]
		}
		if inHeader {
			// RFC 5321 6.3: count the Received fields (ours is not among
			// them: it goes before the data, outside this count).
			switch {
			case len(body) <= 2: // the empty line ends the header section
				inHeader = false
			case len(body) >= 9 && strings.EqualFold(string(body[:9]), "received:"):
				if received++; received >= MaxReceived && bad == nil {
					bad = ErrTooManyHops
				}
			}
		}
		size += int64(len(body))
		if size > cfg.MaxMessageSize && bad == nil {
			bad = errTooBig
		}
		if bad == nil {
			w.Write(body)
		}
		if borrowed {
			line = nil // the reader's buffer: not ours to append to
		} else {
			line = line[:0]
		}
	}
}

// appendReceived appends the trace field of RFC 5321 4.4, with the
// protocol keyword of RFC 3848 / RFC 6531 7, to b.
func (ss *session) appendReceived(b []byte, id string) []byte {
	proto := "ESMTP"
	if ss.env.SMTPUTF8 {
		proto = "UTF8SMTP"
	}
	b = append(b, "Received: from "...)
	b = append(b, connsrv.Sanitize(ss.info.Helo, 32)...)
	b = append(b, " ("...)
	b = appendHostLiteral(b, ss.conn.RemoteAddr())
	b = append(b, ")\r\n\tby "...)
	b = append(b, ss.srv.cfg.Hostname...)
	b = append(b, " (agua) with "...)
	b = append(b, proto...)
	if ss.info.TLS {
		b = append(b, 'S')
	}
	if ss.info.User != "" {
		b = append(b, 'A')
	}
	b = append(b, " id "...)
	b = append(b, id...)
	b = append(b, ";\r\n\t"...)
	b = time.Now().AppendFormat(b, time.RFC1123Z)
	return append(b, "\r\n"...)
}

// appendHostLiteral appends the client's address as an address literal
// without the port: [192.0.2.1], [::1].
func appendHostLiteral(b []byte, a net.Addr) []byte {
	if ta, ok := a.(*net.TCPAddr); ok {
		b = append(b, '[')
		b = ta.AddrPort().Addr().Unmap().AppendTo(b)
		return append(b, ']')
	}
	host := a.String()
	if h, _, ok := strings.Cut(host, "]:"); ok { // [::1]:port
		host = h + "]"
	} else if i := strings.LastIndexByte(host, ':'); i >= 0 {
		host = "[" + host[:i] + "]"
	}
	return append(b, host...)
}

// spool buffers one message in memory, spilling to a temporary file past
// memSpoolLimit. It implements io.ReaderAt for the backend. Spools are
// reused (newSpool, Close) with their memory, so that a message of the
// usual size allocates no buffer.
type spool struct {
	dir  string
	mem  bytes.Buffer
	file *os.File
	size int64
	err  error
}

var spools = sync.Pool{New: func() any { return new(spool) }}

func newSpool(dir string) *spool {
	s := spools.Get().(*spool)
	s.dir = dir
	return s
}

func (s *spool) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.file == nil && s.mem.Len()+len(p) > memSpoolLimit {
		f, err := os.CreateTemp(s.dir, "agua-spool-*")
		if err != nil {
			s.err = err
			return 0, err
		}
		os.Remove(f.Name()) // anonymous: gone when closed, even after a crash
		if _, err := f.Write(s.mem.Bytes()); err != nil {
			f.Close()
			s.err = err
			return 0, err
		}
		s.mem = bytes.Buffer{}
		s.file = f
	}
	var n int
	var err error
	if s.file != nil {
		n, err = s.file.Write(p)
	} else {
		n, err = s.mem.Write(p)
	}
	s.size += int64(n)
	if err != nil {
		s.err = err
	}
	return n, err
}

func (s *spool) ReadAt(p []byte, off int64) (int, error) {
	if s.file != nil {
		return s.file.ReadAt(p, off)
	}
	b := s.mem.Bytes()
	if off < 0 {
		return 0, errors.New("smtpd: spool: negative offset")
	}
	if off >= int64(len(b)) {
		return 0, io.EOF
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (s *spool) Size() int64 { return s.size }

// Close releases the spool; nothing may read it afterwards (the backend
// is done with the message when Commit or Abort returns).
func (s *spool) Close() error {
	var err error
	if s.file != nil {
		err = s.file.Close()
	}
	mem := s.mem
	*s = spool{}
	if mem.Cap() <= memSpoolLimit {
		mem.Reset()
		s.mem = mem // a buffer that grew past the limit is left to the collector
	}
	spools.Put(s)
	return err
}
