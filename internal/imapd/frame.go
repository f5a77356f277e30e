package imapd

// The client's byte stream: command lines and the literals they announce
// (RFC 3501 4.3, RFC 9051 4.3, RFC 7888 LITERAL+), framed here before the
// engine sees a byte of them.
//
// Why a layer of agua's and not the engine's own framing: imapserver
// (go-imap v2.0.0-beta.8) reads literals itself and loses the framing when
// it refuses one. A non-synchronizing literal over the APPEND limit gets
// "NO [TOOBIG]" and its octets are then parsed as commands (a message
// line "X CREATE evil" creates the folder); a buffered literal over 4096
// octets gets neither "+" nor a reply and the engine waits for octets the
// client never sends; a command the engine fails before reading its
// literal leaves the literal to be read as the next command. A patched,
// vendored engine would have to be kept in step with upstream; this layer
// needs only the engine's public behaviour:
//
//   - it reads whole lines (bounded by maxCommandBytes per command),
//     checks a literal a line announces against agua's limits before the
//     engine sees the line, and answers a refused one itself: a
//     synchronizing literal with "NO [TOOBIG]" (the client sends nothing
//     before "+"), a non-synchronizing one by reading and dropping it with
//     the rest of its command (at most maxDiscard octets) before "NO
//     [TOOBIG]", or, beyond, "BAD" and "* BYE";
//   - it hands the engine one line, or one chunk of a literal, per Read,
//     so the engine never holds bytes of a command it has not started;
//   - it watches the engine's replies (writeReply): once the engine has
//     answered a command, whatever remains of that command is dropped
//     (bounded) or ends the connection, never handed over as commands;
//   - owning the stream in plaintext means owning STARTTLS (the engine
//     would put TLS above this layer): startTLS does the handshake and
//     hands the session to a fresh engine that allows logins.

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/agua-mail/agua/shield"
)

const (
	// maxPreAuthLiteral bounds every literal before login: a user name, a
	// password, a SASL response.
	maxPreAuthLiteral = 4 << 10
	// maxArgLiteral bounds the literals of commands other than APPEND
	// after login; the engine holds them in memory and refuses more than
	// 4096 octets itself (without a reply, see above).
	maxArgLiteral = 4 << 10
	// maxCommandBytes bounds a command's octets outside its literals.
	// RFC 2683 3.2.1.5 asks servers to take lines of at least 8000
	// octets; the engine fails commands over 50 KiB with [SERVERBUG].
	maxCommandBytes = 32 << 10
	// maxDiscard bounds the octets of a refused command (its
	// non-synchronizing literals and the lines after them) read and
	// dropped; a bigger one ends the connection.
	maxDiscard = 64 << 10
	// inBufSize is the size of the buffer of client bytes.
	inBufSize = 4 << 10
)

var (
	errCommandTooLong = errors.New("imapd: command too long")
	errLiteralRefused = errors.New("imapd: literal refused and connection ended")
	errPipelinedTLS   = errors.New("imapd: commands pipelined after STARTTLS")
	errUnterminated   = errors.New("imapd: unterminated quoted string")
	errBareCR         = errors.New("imapd: bare CR in command line")
)

// framer is where the client's stream stands. Only the goroutine reading
// for the engine uses it.
type framer struct {
	out       []byte // the current line, not yet all handed over
	literal   int64  // literal octets still to hand over
	sync      bool   // the pending literal is synchronizing (RFC 3501 7.5)
	inCommand bool   // the current command goes on after its literal
	cmdBytes  int    // octets of the current command outside literals
	tag, name string // of the current command
	replies   uint64 // the connection's tagged replies when the command's last bytes were handed over
	conts     uint64 // and its continuation requests ("+")
	err       error  // the framer stopped: every Read fails
}

// mark notes the reply counters as the engine is handed new bytes.
func (f *framer) mark(w *watchConn) {
	f.replies, f.conts = w.replies.Load(), w.conts.Load()
}

// feed fills p for the engine e.
func (w *watchConn) feed(e *engineConn, p []byte) (int, error) {
	f := &w.fr
	for {
		if f.err != nil {
			// Sticky: the engine reads again after an error, and w.in may
			// still hold octets of what was refused.
			return 0, f.err
		}
		if w.ended.Load() {
			return 0, net.ErrClosed
		}
		if len(f.out) > 0 {
			n := copy(p, f.out)
			f.out = f.out[n:]
			return n, nil
		}
		if e.handover {
			return 0, io.EOF // STARTTLS done: this engine ends, the next takes over
		}
		if f.inCommand && w.replies.Load() != f.replies {
			// The engine answered the command before reading all of it (a
			// syntax error before a literal; a line that ended IDLE).
			if err := w.abandon(); err != nil {
				return 0, w.fail(err)
			}
			continue
		}
		if f.literal > 0 {
			n, err := w.in.Read(p[:min(int64(len(p)), f.literal)])
			f.literal -= int64(n)
			return n, err
		}
		if !f.inCommand && w.conts.Load() == f.conts {
			// A command starts with its tag. Bytes that cannot (binary
			// junk, a TLS ClientHello, an empty line) go to the engine at
			// once, which closes the connection on them, rather than
			// waiting for a line end that may never come.
			b, err := w.in.Peek(1)
			if err != nil {
				return 0, err
			}
			if !isTagChar(b[0]) {
				f.out, _ = w.in.Peek(w.in.Buffered())
				f.out = bytes.Clone(f.out)
				w.in.Discard(len(f.out))
				f.mark(w)
				continue
			}
		}
		line, err := w.readLine(maxCommandBytes - f.cmdBytes)
		if errors.Is(err, errCommandTooLong) {
			w.reply("* BAD [TOOBIG] Command line too long")
			w.endLingering("Command line too long")
			return 0, w.fail(err)
		}
		if err != nil {
			return 0, err
		}
		if !f.inCommand && w.conts.Load() != f.conts {
			// The engine asked for a line that is no command: an
			// AUTHENTICATE response (RFC 3501 6.2.2) or IDLE's DONE
			// (RFC 2177). One that announces a literal is a client's
			// error the engine answers BAD; the literal's octets are
			// then dropped, as after any command the engine answered.
			n, nonSync, ok := announced(line)
			f.literal, f.sync, f.inCommand = 0, !nonSync, ok
			if ok {
				f.literal = n
			}
			f.mark(w)
			f.out = line
			continue
		}
		start := !f.inCommand
		if start {
			f.cmdBytes = 0
			f.tag, f.name = commandName(line)
		}
		f.cmdBytes += len(line)
		if bytes.IndexByte(lineBody(line), '\r') >= 0 {
			// RFC 3501 9: CR only in CRLF outside literals. The engine
			// ends a failed command's line at a bare CR and would parse
			// what follows it as the next command.
			f.inCommand = false
			if !start {
				w.endLingering("Bare CR in command")
				return 0, w.fail(errBareCR)
			}
			w.reply(f.tag + " BAD [CLIENTBUG] Bare CR in command line")
			f.mark(w)
			continue
		}
		if openQuote(line) {
			// RFC 3501 9: a quoted string holds no CR or LF. The engine
			// would read on across lines for the closing quote while the
			// client waits for a reply (or a "+" for a literal it
			// announced inside the quotes).
			f.inCommand = false
			if n, nonSync, ok := announced(line); ok && (nonSync || w.in.Buffered() > 0) {
				// The client may think it announced a literal: its
				// octets are dropped, not run as commands.
				if err := w.discard(n); err != nil {
					w.endLingering("Unterminated quoted string")
					return 0, w.fail(err)
				}
			}
			if !start {
				w.endLingering("Unterminated quoted string")
				return 0, w.fail(errUnterminated)
			}
			w.reply(f.tag + " BAD [CLIENTBUG] Unterminated quoted string")
			f.mark(w)
			continue
		}
		n, nonSync, ok := announced(line)
		if start && !ok && f.name == "STARTTLS" && bareCommand(line) && w.canStartTLS() {
			if err := w.startTLS(e, f.tag); err != nil {
				return 0, w.fail(err)
			}
			return 0, io.EOF
		}
		f.inCommand = ok
		if ok {
			if limit := w.literalLimit(f.name, start && isAppendMailbox(line)); n > limit {
				f.inCommand = false
				if err := w.refuseLiteral(start, n, nonSync, limit); err != nil {
					return 0, w.fail(err)
				}
				f.mark(w)
				continue
			}
			f.literal, f.sync = n, !nonSync
		}
		f.mark(w)
		f.out = line
	}
}

// fail records why the framer stopped, so that the engine's complaint
// about the failed read is not taken for a command it could not parse.
func (w *watchConn) fail(err error) error {
	w.lastErr.Store(&err)
	w.fr.err = err
	return err
}

// readLine reads one line, LF included, of at most limit octets. The
// engine, like many servers, takes a lone LF for CRLF.
func (w *watchConn) readLine(limit int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := w.in.ReadSlice('\n')
		if len(line)+len(chunk) > limit {
			return nil, errCommandTooLong
		}
		line = append(line, chunk...)
		if err == nil {
			return line, nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
	}
}

// lineBody is a line without its ending: the engine takes CRLF, a lone LF
// and a space before either (imapwire.Decoder.CRLF).
func lineBody(line []byte) []byte {
	line = bytes.TrimSuffix(line, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	return bytes.TrimSuffix(line, []byte(" "))
}

// openQuote reports whether a line ends inside a quoted string (RFC 3501
// 4.3: "\" escapes the next character there).
func openQuote(line []byte) bool {
	in := false
	for i := 0; i < len(line); i++ {
		switch c := line[i]; {
		case c == '"':
			in = !in
		case c == '\\' && in:
			i++
		}
	}
	return in
}

// announced reports the literal a line announces at its end: "{n}" or,
// non-synchronizing, "{n+}" (RFC 7888). A size that overflows is no
// literal to the engine either (a syntax error).
func announced(line []byte) (n int64, nonSync, ok bool) {
	s := lineBody(line)
	if !bytes.HasSuffix(s, []byte("}")) {
		return 0, false, false
	}
	i := bytes.LastIndexByte(s, '{')
	if i < 0 {
		return 0, false, false
	}
	digits := s[i+1 : len(s)-1]
	if d, found := bytes.CutSuffix(digits, []byte("+")); found {
		digits, nonSync = d, true
	}
	if len(digits) == 0 {
		return 0, false, false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false, false
		}
	}
	n, err := strconv.ParseInt(string(digits), 10, 64)
	if err != nil {
		return 0, false, false
	}
	return n, nonSync, true
}

// commandName returns a command line's tag (if it can be written back to
// the client, else "*") and its upper-cased name ("UID FETCH" for UID
// commands).
func commandName(line []byte) (tag, name string) {
	fields := strings.SplitN(string(lineBody(line)), " ", 4)
	tag = fields[0]
	if !isAtom(tag) {
		tag = "*"
	}
	if len(fields) > 1 {
		name = strings.ToUpper(fields[1])
	}
	if name == "UID" && len(fields) > 2 {
		name += " " + strings.ToUpper(fields[2])
	}
	return tag, name
}

// bareCommand reports whether a line is a tag and a command name only.
func bareCommand(line []byte) bool {
	return bytes.Count(lineBody(line), []byte(" ")) == 1
}

// isAtom reports whether s is a non-empty atom (RFC 3501 9, without the
// characters a tag may not hold).
func isAtom(s string) bool {
	if s == "" || s == "*" || s == "+" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= 0x20 || c >= 0x7f || strings.IndexByte(`(){%*"\]+`, c) >= 0 {
			return false
		}
	}
	return true
}

// isAppendMailbox reports whether a command line is "tag APPEND {n}": the
// literal is the mailbox name (RFC 3501 6.3.11), not the message.
func isAppendMailbox(line []byte) bool {
	f := bytes.Fields(lineBody(line))
	return len(f) == 3 && bytes.EqualFold(f[1], []byte("APPEND")) && f[2][0] == '{'
}

// isTagChar reports whether the engine takes c in a tag (an atom: not a
// control character, not one of the specials; imapwire.IsAtomChar).
func isTagChar(c byte) bool {
	if c <= 0x20 || c == 0x7f || c >= 0x80 && c < 0xa0 {
		return false
	}
	return strings.IndexByte(`(){%*"\]`, c) < 0
}

// literalLimit is the largest literal the command may announce now;
// mailbox tells an APPEND's mailbox name from its message.
//
// Each limit must be at most the engine's own for that literal: a literal
// the engine refuses itself it does not read as one (its octets become
// command syntax), which only this layer's refusal prevents.
func (w *watchConn) literalLimit(name string, mailbox bool) int64 {
	switch {
	case !w.authed.Load():
		return maxPreAuthLiteral
	case name == "APPEND" && !mailbox:
		return w.srv.cfg.MaxMessageSize // announced as APPENDLIMIT (RFC 7889)
	}
	return maxArgLiteral
}

// refuseLiteral answers a command whose literal of n octets is over limit.
// A nil error means the session goes on with the next command.
func (w *watchConn) refuseLiteral(start bool, n int64, nonSync bool, limit int64) error {
	tag := w.fr.tag
	text := fmt.Sprintf("Literal too large (at most %d octets here)", limit)
	// RFC 3501 7.5: a client sends a synchronizing literal only after "+".
	// One whose octets are already here did not wait: they are the
	// literal's, not commands, as for a non-synchronizing literal.
	onTheWay := nonSync || w.in.Buffered() > 0
	switch {
	case !start:
		// The engine holds the start of the command: it cannot be
		// answered from here, only ended.
		w.endLingering("Literal too large")
		return errLiteralRefused
	case !onTheWay && n <= w.absurdLiteral():
		// RFC 3501 7.5, RFC 9051 7.1 (TOOBIG): the client sends a
		// synchronizing literal only after "+"; without it the command is
		// over.
		w.reply(tag + " NO [TOOBIG] " + text)
		w.countError(text)
		return nil
	case onTheWay && n <= maxDiscard:
		// RFC 7888 4: the octets of a non-synchronizing literal are on
		// their way: read and drop them, with the rest of the command.
		if err := w.discard(n); err != nil {
			w.endLingering("Literal too large")
			return err
		}
		w.reply(tag + " NO [TOOBIG] " + text)
		w.countError(text)
		return nil
	}
	// Larger than anything this server takes, or octets on their way that
	// are too many to drop: end the session (RFC 7888 4).
	w.reply(tag + " BAD [TOOBIG] " + text)
	w.endLingering("Literal too large")
	return errLiteralRefused
}

// absurdLiteral is the size over which an announced literal ends the
// session even though no octet of it was sent: before login, more than any
// message; after, more than APPENDLIMIT can say (RFC 7889: a 32-bit
// number).
func (w *watchConn) absurdLiteral() int64 {
	if w.authed.Load() {
		return 1<<32 - 1
	}
	return w.srv.cfg.MaxMessageSize
}

// abandon drops what remains of a command the engine has answered.
func (w *watchConn) abandon() error {
	f := &w.fr
	pending := f.literal
	accepted := w.conts.Load() != f.conts
	f.literal, f.inCommand = 0, false
	defer f.mark(w)
	if f.sync && !accepted {
		// No "+" was sent: the client sends nothing more of it.
		return nil
	}
	if err := w.discard(pending); err != nil {
		w.endLingering("Refused command too large")
		return err
	}
	return nil
}

// discard reads and drops n literal octets and the rest of their command
// (more lines, more non-synchronizing literals), at most maxDiscard octets
// in all.
func (w *watchConn) discard(n int64) error {
	w.SetReadDeadline(time.Time{}) // agua's command timeout, from now
	var total int64
	for {
		if total += n; total > maxDiscard {
			return errLiteralRefused
		}
		if _, err := io.CopyN(io.Discard, w.in, n); err != nil {
			return err
		}
		line, err := w.readLine(maxDiscard)
		if err != nil {
			return err
		}
		total += int64(len(line))
		m, nonSync, ok := announced(line)
		if !ok || !nonSync {
			// The command's end, or a synchronizing literal the client
			// waits in vain to be asked for.
			return nil
		}
		n = m
	}
}

// reply writes one line of agua's own to the client, through the reply
// scanner (a BAD counts as a protocol error there).
func (w *watchConn) reply(line string) {
	w.writeReply([]byte(line + "\r\n"))
}

// countError counts a refusal that is not a BAD as a protocol error.
func (w *watchConn) countError(text string) {
	w.lock()
	defer w.unlock()
	w.protocolError(text)
}

// canStartTLS reports whether a STARTTLS now is agua's to do: the
// listener offers it, the session is in plaintext and not logged in
// (RFC 3501 6.2.1).
func (w *watchConn) canStartTLS() bool {
	return w.srv.cfg.TLS != nil && !w.srv.cfg.ImplicitTLS && !w.secure.Load() && !w.authed.Load()
}

// startTLS answers STARTTLS and runs the handshake; on success the engine
// e ends and the next one (see serveConn) serves the session in TLS.
func (w *watchConn) startTLS(e *engineConn, tag string) error {
	if w.in.Buffered() > 0 {
		// RFC 3501 6.2.1, RFC 2595 3.1: the client waits for the tagged
		// reply; bytes sent before the handshake would be taken as
		// commands in plaintext (a man in the middle's injection).
		w.reply(tag + " BAD [CLIENTBUG] Commands pipelined after STARTTLS are not allowed")
		w.endLingering("STARTTLS refused")
		return errPipelinedTLS
	}
	w.reply(tag + " OK Begin TLS negotiation now")
	w.lock()
	if w.ended.Load() {
		w.unlock()
		return io.EOF
	}
	w.handshaking = true
	tc := tls.Server(w.Conn, w.srv.cfg.TLS)
	w.unlock()
	tc.SetDeadline(w.readDeadline())
	err := tc.Handshake()
	w.lock()
	w.handshaking = false
	if err == nil && w.ended.Load() {
		err = io.EOF
	}
	if err == nil {
		tc.SetDeadline(time.Time{})
		w.Conn = tc
		w.secure.Store(true)
	}
	w.unlock()
	if err != nil {
		w.log.Debug("starttls handshake failed", "err", err)
		shield.Report(w.raw, shield.ProtocolError)
		w.Close()
		return err
	}
	w.in.Reset(w)
	w.fr = framer{}
	w.fr.mark(w)
	e.handover = true
	return nil
}
