package imapd

import (
	"bytes"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/agua-mail/agua/shield"
)

var idEncoding = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

func newID() string {
	var b [10]byte
	rand.Read(b[:])
	return idEncoding.EncodeToString(b[:])
}

// watchConn is the connection the engine reads and writes. It
//
//   - replaces the engine's read deadlines by agua's: PreAuthTimeout per
//     command before login, IdleTimeout after, never past the session
//     deadline;
//   - reads the replies (through replyTap, also after STARTTLS), skipping
//     literals, and reports each BAD reply (RFC 3501 7.1.3: a protocol-level
//     error in the client's command) to the shield, ending the session after
//     Config.MaxErrors;
//   - can say "* BYE" at a reply boundary before closing (shutdown, shield).
type watchConn struct {
	net.Conn          // what the engine speaks through: raw or TLS
	raw      net.Conn // the accepted connection, for the shield
	srv      *Server
	log      *slog.Logger
	deadline time.Time // whole session

	authed  atomic.Bool
	errors  atomic.Int32
	lastErr atomic.Pointer[error] // last read error, nil if none

	engine atomic.Pointer[imapserver.Conn] // for its TLS connection after STARTTLS
	ended  atomic.Bool                     // "* BYE" written or closed

	smu       sync.Mutex // guards the reply scanner below
	encrypted bool       // STARTTLS done: w.Conn carries TLS records
	head      []byte     // the start of the current reply line
	tail      []byte     // its last bytes, for a literal's {n}
	literal   int64      // bytes of a literal still to skip
	unknown   bool       // replyTap could not tell a direction (logged once)

	closeOnce sync.Once
	closed    chan struct{}
}

const (
	headMax = 64
	tailMax = 24
	// byeWait bounds the wait for a BYE written through TLS.
	byeWait = 200 * time.Millisecond
)

func newWatchConn(c, raw net.Conn, srv *Server, log *slog.Logger, deadline time.Time) *watchConn {
	return &watchConn{Conn: c, raw: raw, srv: srv, log: log, deadline: deadline, closed: make(chan struct{})}
}

func (w *watchConn) timeout() time.Duration {
	if w.authed.Load() {
		return w.srv.cfg.IdleTimeout
	}
	return w.srv.cfg.PreAuthTimeout
}

// SetReadDeadline ignores the engine's own timeouts and applies agua's.
func (w *watchConn) SetReadDeadline(time.Time) error {
	d := time.Now().Add(w.timeout())
	if d.After(w.deadline) {
		d = w.deadline
	}
	return w.Conn.SetReadDeadline(d)
}

func (w *watchConn) SetDeadline(t time.Time) error {
	if err := w.SetReadDeadline(t); err != nil {
		return err
	}
	return w.Conn.SetWriteDeadline(t)
}

func (w *watchConn) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	if err != nil {
		w.lastErr.Store(&err)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			if time.Now().After(w.deadline) {
				w.bye("Session time limit reached")
			} else {
				w.bye("Autologout; idle for too long")
			}
			w.log.Info("imap timeout", "authenticated", w.authed.Load())
		}
	}
	return n, err
}

// isEncrypted reports whether STARTTLS happened.
func (w *watchConn) isEncrypted() bool {
	w.smu.Lock()
	defer w.smu.Unlock()
	return w.encrypted
}

// readFailed reports whether the connection's last read failed, so that a
// close by the engine after a good read means a command it could not parse.
func (w *watchConn) readFailed() bool { return w.lastErr.Load() != nil }

func (w *watchConn) Write(p []byte) (int, error) {
	if w.ended.Load() {
		return 0, net.ErrClosed
	}
	return w.Conn.Write(p)
}

// replyTap is the engine's DebugWriter: the engine copies every byte it
// reads (io.TeeReader) and every byte it writes (io.MultiWriter, after
// the connection took them) to it, in plaintext, also after STARTTLS. The
// direction is told by the caller, so a client's bytes are never taken
// for a reply; they are dropped here (they hold passwords).
type replyTap struct{ w *watchConn }

const (
	dirUnknown = iota
	dirIn
	dirOut
)

func (t replyTap) Write(p []byte) (int, error) {
	switch tapDirection() {
	case dirOut:
		t.w.smu.Lock()
		t.w.scan(p)
		t.w.smu.Unlock()
	case dirUnknown:
		t.w.smu.Lock()
		if !t.w.unknown {
			t.w.unknown = true
			t.w.log.Warn("imap cannot tell replies from requests: protocol errors are not counted")
		}
		t.w.smu.Unlock()
	}
	return len(p), nil
}

// tapDirection finds which of the engine's wrappers called the tap.
func tapDirection() int {
	var pcs [8]uintptr
	n := runtime.Callers(3, pcs[:]) // above runtime.Callers, tapDirection, replyTap.Write
	frames := runtime.CallersFrames(pcs[:n])
	for {
		f, more := frames.Next()
		switch f.Function {
		case "io.(*multiWriter).Write":
			return dirOut
		case "io.(*teeReader).Read":
			return dirIn
		}
		if !more {
			return dirUnknown
		}
	}
}

// scan follows the reply stream line by line. w.smu is held.
func (w *watchConn) scan(p []byte) {
	for len(p) > 0 {
		if w.literal > 0 {
			k := min(w.literal, int64(len(p)))
			w.literal -= k
			p = p[k:]
			continue
		}
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i+1]
		}
		p = p[len(chunk):]
		if room := headMax - len(w.head); room > 0 {
			w.head = append(w.head, chunk[:min(room, len(chunk))]...)
		}
		w.tail = append(w.tail, chunk...)
		if len(w.tail) > tailMax {
			w.tail = append(w.tail[:0], w.tail[len(w.tail)-tailMax:]...)
		}
		if i >= 0 {
			w.endLine()
		}
	}
}

// endLine looks at one complete reply line. w.smu is held.
func (w *watchConn) endLine() {
	head, tail := string(w.head), string(w.tail)
	w.head, w.tail = w.head[:0], w.tail[:0]
	// A line ending in {n} announces n bytes of literal (RFC 3501 4.3).
	if t := strings.TrimSuffix(tail, "\r\n"); strings.HasSuffix(t, "}") {
		if j := strings.LastIndexByte(t, '{'); j >= 0 {
			if n, err := strconv.ParseInt(t[j+1:len(t)-1], 10, 64); err == nil && n >= 0 {
				w.literal = n
			}
		}
	}
	tag, rest, ok := strings.Cut(head, " ")
	if !ok || tag == "+" {
		return
	}
	if tag != "*" && strings.HasPrefix(rest, "OK Begin TLS negotiation now") {
		w.encrypted = true // STARTTLS: w.Conn now carries TLS records
		return
	}
	if !strings.HasPrefix(rest, "BAD ") {
		return
	}
	w.protocolError(strings.TrimSpace(strings.TrimPrefix(rest, "BAD ")))
}

// protocolError counts a BAD reply; w.smu is held.
func (w *watchConn) protocolError(text string) {
	n := w.errors.Add(1)
	w.log.Debug("imap protocol error", "reply", sanitize(text))
	if d := shield.Report(w.raw, shield.ProtocolError); d.Action != shield.Allow {
		w.log.Info("imap session ended by shield", "action", d.Action.String(), "source", d.Source)
		w.byeLocked(d, "")
		return
	}
	if int(n) >= w.srv.cfg.MaxErrors {
		w.log.Info("imap too many errors", "errors", n)
		w.byeLocked(shield.Decision{Action: shield.Reject}, "Too many errors")
	}
}

// countError counts a failed login towards MaxErrors and says whether the
// session must end.
func (w *watchConn) countError() bool {
	return int(w.errors.Add(1)) >= w.srv.cfg.MaxErrors
}

// bye writes "* BYE text" if the reply stream is at a line boundary and
// plaintext, then closes the connection.
func (w *watchConn) bye(text string) {
	w.smu.Lock()
	defer w.smu.Unlock()
	w.byeLocked(shield.Decision{Action: shield.Reject}, text)
}

// byeLocked ends the session for decision d: "* BYE" for a reject (with
// d.Reason, or text), nothing for drop and tarpit. w.smu is held.
func (w *watchConn) byeLocked(d shield.Decision, text string) {
	if w.ended.Load() {
		return
	}
	if text == "" {
		text = d.Reason
	}
	if d.Action == shield.Reject && w.literal == 0 && len(w.head) == 0 {
		// Plaintext goes straight to w.Conn (raw, or ours on the
		// implicit-TLS port); after STARTTLS through the engine's TLS
		// connection, which writes through w.
		line := "* BYE " + sanitize(text) + "\r\n"
		w.Conn.SetWriteDeadline(time.Now().Add(time.Second))
		if !w.encrypted {
			io.WriteString(w.Conn, line)
		} else if ec := w.engine.Load(); ec != nil {
			// A TLS write waits for a handshake in progress, which may be
			// waiting for this very goroutine's read to fail: write from
			// another goroutine and close after a short wait whatever
			// happened (the close ends the handshake and the write).
			tc := ec.NetConn()
			done := make(chan struct{})
			go func() {
				defer close(done)
				io.WriteString(tc, line)
			}()
			t := time.NewTimer(byeWait)
			select {
			case <-done:
			case <-t.C:
			}
			t.Stop()
		}
	}
	w.ended.Store(true)
	w.Close()
}

func (w *watchConn) Close() error {
	var err error
	w.closeOnce.Do(func() {
		err = w.Conn.Close()
		close(w.closed)
	})
	return err
}

// engineLogger receives the engine's log lines for one connection.
type engineLogger struct {
	w   *watchConn
	log *slog.Logger
	srv *Server
}

func (l *engineLogger) Printf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	switch {
	case strings.HasPrefix(msg, "panic"):
		l.srv.panics.Add(1)
		l.log.Error("imap session panic", "panic", msg)
	case strings.HasPrefix(msg, "failed to read command"):
		if l.w.readFailed() {
			if err := l.w.lastErr.Load(); err != nil && !isQuiet(*err) {
				l.log.Debug("imap read failed", "err", *err)
			}
			return
		}
		// The engine could not parse a command line and closes the
		// connection: a protocol error.
		l.log.Info("imap unparsable command", "err", sanitize(msg))
		shield.Report(l.w.raw, shield.ProtocolError)
	default:
		l.log.Warn("imap engine", "msg", sanitize(msg))
	}
}

func isQuiet(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded) ||
		errors.As(err, &ne) && ne.Timeout()
}

// sanitize makes client text safe for a log line or a reply.
func sanitize(s string) string {
	if len(s) > 128 {
		s = s[:128]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return '?'
		}
		return r
	}, s)
}
