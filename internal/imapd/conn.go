package imapd

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/agua-mail/agua/internal/connsrv"
	"github.com/agua-mail/agua/shield"
)

// watchConn is one client connection. It
//
//   - replaces the engine's read deadlines by agua's: PreAuthTimeout per
//     command before login, IdleTimeout after, never past the session
//     deadline;
//   - frames the client's bytes for the engine (frame.go: literals,
//     command size, STARTTLS);
//   - reads the replies (writeReply), skipping literals, and reports each
//     BAD reply (RFC 3501 7.1.3: a protocol-level error in the client's
//     command) to the shield, ending the session after Config.MaxErrors;
//   - can say "* BYE" at a reply boundary before closing (shutdown, shield).
//
// Its own Read and Write are the transport's: the client's bytes reach an
// engine through an engineConn.
type watchConn struct {
	net.Conn          // the transport: raw, or TLS (implicit, or after STARTTLS)
	raw      net.Conn // the accepted connection, for the shield
	srv      *Server
	frame    *connsrv.Frame // the session's: id, logger, context, deadline
	log      *slog.Logger
	deadline time.Time // whole session

	authed  atomic.Bool
	secure  atomic.Bool // TLS, implicit or by STARTTLS
	errors  atomic.Int32
	lastErr atomic.Pointer[error] // last read error, nil if none

	in *bufio.Reader // the client's bytes, read through w
	fr framer        // where they stand (the engine's reading goroutine only)

	replies   atomic.Uint64 // tagged replies written
	conts     atomic.Uint64 // continuation requests ("+") written
	clientBug atomic.Bool   // the engine is about to answer a client's error as its own
	ended     atomic.Bool   // "* BYE" written or closed

	// mu serializes writes to the client and guards the reply scanner
	// below; a channel, so that a BYE from another goroutine can give up
	// waiting for a write stuck on a client that does not read.
	mu          chan struct{}
	handshaking bool   // STARTTLS handshake running: no plaintext BYE
	head        []byte // the start of the current reply line
	tail        []byte // its last bytes, for a literal's {n}
	literal     int64  // bytes of a literal still to skip
	midReply    bool   // the current line continues a reply after a literal

	closeOnce sync.Once
	closed    chan struct{}
}

const (
	headMax = 64
	tailMax = 24
	// byeWait bounds the wait of a BYE for a write in progress.
	byeWait = 200 * time.Millisecond
)

func newWatchConn(c, raw net.Conn, srv *Server, fr *connsrv.Frame, secure bool) *watchConn {
	w := &watchConn{Conn: c, raw: raw, srv: srv, frame: fr, log: fr.Log, deadline: fr.Deadline,
		mu: make(chan struct{}, 1), closed: make(chan struct{})}
	w.secure.Store(secure)
	w.in = bufio.NewReaderSize(w, inBufSize)
	return w
}

func (w *watchConn) lock()   { w.mu <- struct{}{} }
func (w *watchConn) unlock() { <-w.mu }

// lockWithin takes the lock unless that takes longer than d.
func (w *watchConn) lockWithin(d time.Duration) bool {
	select {
	case w.mu <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case w.mu <- struct{}{}:
		return true
	case <-t.C:
		return false
	}
}

func (w *watchConn) timeout() time.Duration {
	if w.authed.Load() {
		return w.srv.cfg.IdleTimeout
	}
	return w.srv.cfg.PreAuthTimeout
}

// readDeadline is when the next command must have come.
func (w *watchConn) readDeadline() time.Time { return w.frame.ReadDeadline(w.timeout()) }

// SetReadDeadline ignores the engine's own timeouts and applies agua's.
func (w *watchConn) SetReadDeadline(time.Time) error {
	return w.Conn.SetReadDeadline(w.readDeadline())
}

func (w *watchConn) SetDeadline(t time.Time) error {
	if err := w.SetReadDeadline(t); err != nil {
		return err
	}
	return w.Conn.SetWriteDeadline(t)
}

// Read reads the transport, for w.in.
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

// readFailed reports whether the connection's last read failed, so that a
// close by the engine after a good read means a command it could not parse.
func (w *watchConn) readFailed() bool { return w.lastErr.Load() != nil }

// The engine's answer to an error that is not an *imap.Error, and what
// agua writes instead when that error came from the client's command
// (engineLogger tells): RFC 9051 7.1 keeps BAD for the client's errors.
const (
	engineServerBug = " NO [SERVERBUG] Internal server error\r\n"
	clientBugReply  = " BAD [CLIENTBUG] Invalid command arguments\r\n"
)

// writeReply writes the engine's (or agua's) reply bytes and scans them.
func (w *watchConn) writeReply(p []byte) (int, error) {
	w.lock()
	defer w.unlock()
	if w.ended.Load() {
		return 0, net.ErrClosed
	}
	out := p
	if w.clientBug.Load() {
		if i := bytes.Index(p, []byte(engineServerBug)); i >= 0 && isTagAt(p, i) {
			out = slices.Concat(p[:i], []byte(clientBugReply), p[i+len(engineServerBug):])
			w.clientBug.Store(false)
		}
	}
	n, err := w.Conn.Write(out)
	w.scan(out[:n])
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// isTagAt reports whether p[:i] ends in a tag at the start of a line.
func isTagAt(p []byte, i int) bool {
	start := bytes.LastIndexByte(p[:i], '\n') + 1
	return isAtom(string(p[start:i]))
}

// scan follows the reply stream line by line. w.mu is held.
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

// endLine looks at one complete reply line. w.mu is held.
func (w *watchConn) endLine() {
	head, tail := string(w.head), string(w.tail)
	w.head, w.tail = w.head[:0], w.tail[:0]
	cont := w.midReply
	// A line ending in {n} announces n bytes of literal (RFC 3501 4.3);
	// the reply goes on after it.
	w.midReply = false
	if t := strings.TrimSuffix(tail, "\r\n"); strings.HasSuffix(t, "}") {
		if j := strings.LastIndexByte(t, '{'); j >= 0 {
			if n, err := strconv.ParseInt(t[j+1:len(t)-1], 10, 64); err == nil && n >= 0 {
				w.literal = n
				w.midReply = true
			}
		}
	}
	if cont {
		return
	}
	tag, rest, ok := strings.Cut(head, " ")
	switch {
	case tag == "+":
		w.conts.Add(1)
		return
	case !ok || tag == "*":
		return
	}
	w.replies.Add(1)
	if !strings.HasPrefix(rest, "BAD ") {
		return
	}
	w.protocolError(strings.TrimSpace(strings.TrimPrefix(rest, "BAD ")))
}

// protocolError counts a client's error; w.mu is held.
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

// countFailedLogin counts a failed login towards MaxErrors and says
// whether the session must end.
func (w *watchConn) countFailedLogin() bool {
	return int(w.errors.Add(1)) >= w.srv.cfg.MaxErrors
}

// bye writes "* BYE text" if the reply stream is at a line boundary, then
// closes the connection.
func (w *watchConn) bye(text string) {
	w.byeDecision(shield.Decision{Action: shield.Reject}, text)
}

// byeDecision ends the session for decision d (see byeLocked). A write in
// progress is waited for byeWait at most; then the session ends without
// a word.
func (w *watchConn) byeDecision(d shield.Decision, text string) {
	if !w.lockWithin(byeWait) {
		w.ended.Store(true)
		w.Close()
		return
	}
	defer w.unlock()
	w.byeLocked(d, text)
}

// byeLocked ends the session for decision d: "* BYE" for a reject (with
// d.Reason, or text), nothing for drop and tarpit. w.mu is held.
func (w *watchConn) byeLocked(d shield.Decision, text string) {
	if w.ended.Load() {
		return
	}
	if text == "" {
		text = d.Reason
	}
	if d.Action == shield.Reject {
		w.sayBye(text)
	}
	w.ended.Store(true)
	w.Close()
}

// sayBye writes "* BYE text" if the reply stream is at a line boundary.
// w.mu is held.
func (w *watchConn) sayBye(text string) {
	if w.ended.Load() || w.literal != 0 || len(w.head) != 0 || w.handshaking {
		return
	}
	w.Conn.SetWriteDeadline(time.Now().Add(time.Second))
	io.WriteString(w.Conn, "* BYE "+sanitize(text)+"\r\n")
}

// Lingering close (see endLingering).
const (
	lingerWait = time.Second
	lingerMax  = 64 << 10
)

// endLingering ends the session from the goroutine that reads the client,
// after a refusal while the client may still be sending: "* BYE text",
// then a half-close and a bounded drain of the client's bytes, so that
// the client reads the BYE rather than a reset (closing a TCP connection
// with unread data resets it, and some stacks then discard what was
// received).
func (w *watchConn) endLingering(text string) {
	w.lock()
	w.sayBye(text)
	ended := w.ended.Swap(true)
	w.unlock()
	if !ended {
		if cw, ok := netConn(w.raw).(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			w.raw.SetReadDeadline(time.Now().Add(lingerWait))
			io.CopyN(io.Discard, w.raw, lingerMax)
		}
	}
	w.Close()
}

// netConn is the connection under c's wrappers (the shield's).
func netConn(c net.Conn) net.Conn {
	for range 8 {
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = u.NetConn()
	}
	return c
}

// Close closes the accepted connection (and so a TLS one on it).
func (w *watchConn) Close() error {
	var err error
	w.closeOnce.Do(func() {
		err = w.raw.Close()
		close(w.closed)
	})
	return err
}

// engineConn is the connection one engine instance sees: the client's
// bytes framed (frame.go), the replies scanned. A session has one engine
// until STARTTLS, and another after (see serveConn).
type engineConn struct {
	*watchConn
	// greeted: this engine takes over after STARTTLS, where the client
	// gets no greeting (RFC 3501 6.2.1); its own is dropped.
	greeted  bool
	handover bool // STARTTLS done: this engine must end, the session goes on
	once     sync.Once
	done     chan struct{}
}

func (e *engineConn) Read(p []byte) (int, error) { return e.feed(e, p) }

func (e *engineConn) Write(p []byte) (int, error) {
	if e.greeted {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			return len(p), nil
		}
		e.greeted = false
		if _, err := e.writeReply(p[i+1:]); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return e.writeReply(p)
}

// Close ends this engine's connection; the session's too, unless the
// session goes on with the next engine.
func (e *engineConn) Close() error {
	e.once.Do(func() { close(e.done) })
	if e.handover {
		return nil
	}
	return e.watchConn.Close()
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
		l.srv.Panicked()
		l.log.Error("session panic", "panic", msg) // the engine recovered it (and logged the stack)
	case strings.HasPrefix(msg, "failed to read command"):
		if l.w.readFailed() {
			if err := l.w.lastErr.Load(); err != nil && !isQuiet(*err) {
				l.log.Debug("imap read failed", "err", *err)
			}
			return
		}
		// The engine could not parse a command line (no tag, no command
		// name) and closes the connection: a protocol error. The client
		// is told why first (RFC 9051 7.1.5: BYE when the server closes).
		l.log.Info("imap unparsable command", "err", sanitize(msg))
		shield.Report(l.w.raw, shield.ProtocolError)
		l.w.bye("Syntax error: a command line is a tag, a space and a command name")
	case format == "handling %v command: %v" && len(args) == 2:
		// The engine answers "NO [SERVERBUG]" for any error that is not an
		// *imap.Error. agua's session returns *imap.Error (or fails
		// writing); what else gets here comes from decoding the client's
		// command: a sequence number of 0 or over 2^32-1, nesting over the
		// engine's depth, bad modified UTF-7, bad base64. Those are the
		// client's errors: the reply becomes a BAD (writeReply), counted.
		if err, ok := args[1].(error); ok && clientCaused(err) {
			l.w.clientBug.Store(true)
			l.log.Debug("imap client error", "command", args[0], "err", sanitize(err.Error()))
			return
		}
		l.log.Warn("imap engine", "msg", sanitize(msg))
	default:
		l.log.Warn("imap engine", "msg", sanitize(msg))
	}
}

// clientCaused tells an engine error that comes from the client's command
// from an I/O failure (reading a message, writing the reply).
func clientCaused(err error) bool {
	var (
		ne net.Error
		pe *fs.PathError
		en syscall.Errno
	)
	return !isQuiet(err) && !errors.As(err, &ne) && !errors.As(err, &pe) && !errors.As(err, &en) &&
		!errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.ErrShortWrite)
}

func isQuiet(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded) ||
		errors.As(err, &ne) && ne.Timeout()
}

// sanitize makes client text safe for a log line or a reply.
func sanitize(s string) string { return connsrv.Sanitize(s, 128) }
