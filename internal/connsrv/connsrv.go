// Package connsrv runs the connection lifecycle that agua's protocol
// servers (SMTP, POP3, IMAP) share: the accept loop with back-off, one
// goroutine per session, tracking of open and idle sessions, the graceful
// shutdown that wakes idle sessions at once (so they can answer "shutting
// down") while sessions in the middle of a transaction finish it, and each
// session's frame (frame.go: id, logger, panic guard, shield watch, TLS,
// failed-login delay).
package connsrv

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Tracker is embedded by a protocol server.
type Tracker struct {
	name string
	log  *slog.Logger

	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	idle     map[net.Conn]struct{} // sessions waiting for a command
	wake     map[net.Conn]func()   // how Shutdown wakes a session, in place of a read deadline
	closing  atomic.Bool
	stop     chan struct{} // closed when Shutdown begins
	wg       sync.WaitGroup
	sessions atomic.Int64
	panics   atomic.Uint64
	// abandoned counts credential checks cut short by the client's
	// leaving (Frame.WhileVerifying).
	abandoned atomic.Uint64
}

// New returns a tracker; name appears in its log lines ("smtp", "pop3").
func New(name string, log *slog.Logger) *Tracker {
	if log == nil {
		log = slog.Default()
	}
	return &Tracker{name: name, log: log, conns: map[net.Conn]struct{}{}, idle: map[net.Conn]struct{}{},
		wake: map[net.Conn]func(){}, stop: make(chan struct{})}
}

// Serve accepts connections until the listener is closed and runs handle
// for each in its own goroutine. Temporary errors (EMFILE, timeouts) back
// off up to a second rather than spin.
func (t *Tracker) Serve(ln net.Listener, handle func(net.Conn)) error {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if t.closing.Load() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			t.log.Warn(t.name+" accept failed", "err", err)
			time.Sleep(delay)
			continue
		}
		delay = 0
		if !t.track(c, true) {
			c.Close()
			continue
		}
		go func() {
			defer t.wg.Done()
			defer t.track(c, false)
			handle(c)
		}()
	}
}

// track registers or forgets a session. The WaitGroup is added to under
// the mutex, and Shutdown sets closing under it too, so no Add can race
// with Shutdown's Wait.
func (t *Tracker) track(c net.Conn, add bool) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if add {
		if t.closing.Load() {
			return false
		}
		t.wg.Add(1)
		t.conns[c] = struct{}{}
		t.sessions.Add(1)
	} else {
		delete(t.conns, c)
		delete(t.idle, c)
		delete(t.wake, c)
		t.sessions.Add(-1)
	}
	return true
}

// SetIdle records whether the session on c waits for a command; Shutdown
// wakes idle sessions by expiring c's read deadline.
func (t *Tracker) SetIdle(c net.Conn, idle bool) {
	t.mu.Lock()
	if idle {
		t.idle[c] = struct{}{}
	} else {
		delete(t.idle, c)
	}
	t.mu.Unlock()
}

// OnShutdown sets how Shutdown wakes the session on c, in place of
// expiring its read deadline while it is idle: for a protocol whose
// sessions are told to go whatever they are doing (IMAP's "* BYE" at the
// next reply boundary). Shutdown calls wake repeatedly, so it must be
// idempotent.
func (t *Tracker) OnShutdown(c net.Conn, wake func()) {
	t.mu.Lock()
	t.wake[c] = wake
	t.mu.Unlock()
}

// Closing reports whether Shutdown has begun: sessions check it before
// reading the next command.
func (t *Tracker) Closing() bool { return t.closing.Load() }

// Shutdown stops new sessions and waits for running ones, waking the idle
// ones; when ctx ends first, whatever is left is closed. Listeners are
// closed by their owner.
func (t *Tracker) Shutdown(ctx context.Context) error {
	t.mu.Lock()
	if !t.closing.Swap(true) {
		close(t.stop) // cuts failed-login delays short (Frame.Wait)
	}
	t.mu.Unlock()
	done := make(chan struct{})
	go func() { t.wg.Wait(); close(done) }()
	// Repeated, because a session may set a fresh deadline just after one
	// wake-up.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		t.mu.Lock()
		for c := range t.idle {
			if t.wake[c] == nil {
				c.SetReadDeadline(time.Now())
			}
		}
		wake := make([]func(), 0, len(t.wake))
		for _, w := range t.wake {
			wake = append(wake, w)
		}
		t.mu.Unlock()
		for _, w := range wake { // outside t.mu: a wake may write to the client
			w()
		}
		select {
		case <-done:
			return nil
		case <-tick.C:
			continue
		case <-ctx.Done():
		}
		break
	}
	t.mu.Lock()
	for c := range t.conns {
		c.Close()
	}
	t.mu.Unlock()
	<-done
	return ctx.Err()
}

// Sessions returns the number of sessions running now.
func (t *Tracker) Sessions() int64 { return t.sessions.Load() }

// Panicked counts a session that ended in a recovered panic.
func (t *Tracker) Panicked() { t.panics.Add(1) }

// Panics returns how many sessions ended in a recovered panic.
func (t *Tracker) Panics() uint64 { return t.panics.Load() }

// Abandoned returns how many credential checks were cut short because
// the client left while they waited (Frame.WhileVerifying).
func (t *Tracker) Abandoned() uint64 { return t.abandoned.Load() }

// IsTimeout reports a deadline error (including Shutdown's wake-up).
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// ErrLineTooLong is returned by ReadLine for a line over its limit.
var ErrLineTooLong = errors.New("line too long")

// ReadLine reads one CRLF (or LF) terminated line of at most max bytes and
// returns it without the terminator. An overlong line is consumed to its
// end and reported as ErrLineTooLong, so the session stays in step; memory
// never grows past max whatever the client sends.
func ReadLine(r *bufio.Reader, max int) (string, error) {
	frag, err := r.ReadSlice('\n')
	if err == nil && len(frag) <= max {
		// The usual case, the whole line in the buffer: one allocation,
		// none for the commands without arguments that most sessions send.
		line := trimEOL(frag)
		if c, ok := bareCommand(line); ok {
			return c, nil
		}
		return string(line), nil
	}
	var buf []byte
	tooLong := false
	for {
		if !tooLong {
			if len(buf)+len(frag) > max {
				tooLong = true
				buf = nil
			} else {
				buf = append(buf, frag...)
			}
		}
		if err == bufio.ErrBufferFull {
			frag, err = r.ReadSlice('\n')
			continue
		}
		if err != nil {
			return "", err
		}
		break
	}
	if tooLong {
		return "", ErrLineTooLong
	}
	return string(trimEOL(buf)), nil
}

// bareCommand returns line as a constant string when it is one of the
// argument-less commands of SMTP (DATA, QUIT, RSET, NOOP, STARTTLS) or
// POP3 (STAT, LIST, UIDL, CAPA, QUIT) as clients usually send them (upper
// case): a one-message SMTP session sends two of them (issue 15).
func bareCommand(line []byte) (string, bool) {
	switch string(line) { // compiled without a conversion
	case "DATA":
		return "DATA", true
	case "QUIT":
		return "QUIT", true
	case "RSET":
		return "RSET", true
	case "NOOP":
		return "NOOP", true
	case "STARTTLS":
		return "STARTTLS", true
	case "STAT":
		return "STAT", true
	case "LIST":
		return "LIST", true
	case "UIDL":
		return "UIDL", true
	case "CAPA":
		return "CAPA", true
	}
	return "", false
}

// trimEOL drops the LF, and the CR before it, from a line.
func trimEOL(b []byte) []byte {
	b = b[:len(b)-1]
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	return b
}

// HasLine reports whether r holds a complete line (an LF) that can be read
// without waiting for the client. Protocol loops flush their replies when
// it does not: RFC 2920 3.1 (and RFC 2449 6.6 for POP3) lets a server hold
// replies back while more commands are waiting, but a command the client
// has only half sent is not waiting, and holding the replies to the
// complete ones until it is finished would stall a client that reads them
// before it sends the rest (Postfix and Dovecot answer at once).
func HasLine(r *bufio.Reader) bool {
	n := r.Buffered()
	if n == 0 {
		return false
	}
	b, _ := r.Peek(n) // never reads: n bytes are already buffered
	return bytes.IndexByte(b, '\n') >= 0
}

// SASL response errors from DecodeSASL; protocols map them to their replies.
var (
	ErrSASLCancelled = errors.New("sasl: cancelled by the client")
	ErrSASLBase64    = errors.New("sasl: response is not base64")
)

// DecodeSASL decodes one client response of a SASL exchange as SMTP
// (RFC 4954 4) and POP3 (RFC 5034 4) send it: base64, "=" for an empty
// response, "*" to cancel.
func DecodeSASL(s string) ([]byte, error) {
	switch s = strings.TrimSpace(s); s {
	case "*":
		return nil, ErrSASLCancelled
	case "=":
		return []byte{}, nil
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, ErrSASLBase64
	}
	return b, nil
}
