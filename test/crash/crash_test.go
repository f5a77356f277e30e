// Package crash tests that agua keeps its promise about acknowledged mail
// when it is killed: a message answered with 250 after DATA (RFC 5321
// 4.1.1.4, 6.1: the server has taken responsibility for it) is in the
// recipient's Maildir exactly once, complete, after any number of SIGKILLs
// and restarts on the same data folder. Messages that were being sent when
// the server died may or may not be there, but never twice and never
// partial. The same holds for a graceful stop (SIGTERM) under load, and a
// kill during the very first start must not leave a data folder agua
// cannot start on.
//
// The tests run the real binary (see test/internal/harness) and take
// 15-20 s plus the build; -short runs fewer kill rounds.
package crash

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"net"
	"net/mail"
	"net/smtp"
	"net/textproto"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agua-mail/agua/test/internal/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

const (
	rcpt   = "crash@crash.test"
	rcpt2  = "second@crash.test" // every multiEvery-th message also goes here
	sender = "sender@remote.test"

	workers = 8
	// msgTimeout bounds one transaction on the client side; it only keeps a
	// hung server from hanging the test.
	msgTimeout = 15 * time.Second
	// progressTimeout bounds the wait for the first acknowledged message
	// after a (re)start: a server that answers banners but never delivers
	// fails the test instead of hanging it.
	progressTimeout = 20 * time.Second
	// bigEvery makes every bigEvery-th message larger than the SMTP
	// server's in-memory spool (256 KiB), so the file-spool path is killed
	// mid-way too.
	bigEvery = 16
	// multiEvery makes every multiEvery-th message go to two mailboxes.
	multiEvery = 4
)

// ledger records what the clients sent and what the server acknowledged.
type ledger struct {
	mu        sync.Mutex
	attempted map[string]sent // by token
	acked     map[string]bool
	nacked    atomic.Int64 // acknowledged count, read without the lock
	refusals  []refusal    // SMTP error replies (a healthy server sends none)
	stopping  bool         // SIGTERM sent: 421 is a fair answer (RFC 5321 3.8)
}

type refusal struct {
	tok string
	err error
}

type sent struct {
	sum   [32]byte // SHA-256 of the body
	rcpts []string
}

func (l *ledger) attempt(tok string, body []byte, rcpts []string) {
	l.mu.Lock()
	l.attempted[tok] = sent{sha256.Sum256(body), rcpts}
	l.mu.Unlock()
}

func (l *ledger) ack(tok string) {
	l.mu.Lock()
	l.acked[tok] = true
	l.mu.Unlock()
	l.nacked.Add(1)
}

func (l *ledger) refused(tok string, err error) {
	var te *textproto.Error
	if !errors.As(err, &te) {
		return // a network error: the server was killed
	}
	l.mu.Lock()
	if !(l.stopping && te.Code == 421) {
		l.refusals = append(l.refusals, refusal{tok, err})
	}
	l.mu.Unlock()
}

// stop records that the server is being stopped gracefully.
func (l *ledger) stop() {
	l.mu.Lock()
	l.stopping = true
	l.mu.Unlock()
}

// TestKill9 delivers concurrently over the MX port while killing the server
// with SIGKILL at random moments and restarting it on the same data folder,
// then checks every acknowledged message is in the Maildir exactly once and
// intact.
func TestKill9(t *testing.T) {
	rounds := 5
	if testing.Short() {
		rounds = 2
	}
	// Save the shield state every second (the shortest allowed), so kills
	// also land around its writes and restarts must load what they left.
	srv := harness.New(t, harness.Options{Extra: "[shield]\nsave_interval = \"1s\"\n"})
	led, stopClients := startClients(t, srv)

	for round := 1; round <= rounds; round++ {
		waitProgress(t, srv, led, fmt.Sprintf("start %d", round))
		delay := 300*time.Millisecond + rand.N(1200*time.Millisecond)
		time.Sleep(delay)
		pid := srv.PID()
		srv.Kill(t)
		t.Logf("round %d: SIGKILL pid %d after %v more; %d acknowledged so far", round, pid, delay.Round(time.Millisecond), led.nacked.Load())
		restart := time.Now()
		srv.Start(t) // a restart failure after kill -9 is a bug; Start fails the test with the log
		t.Logf("round %d: restarted in %v", round, time.Since(restart).Round(time.Millisecond))
	}
	// After the last restart the server must still take mail.
	waitProgress(t, srv, led, "the last restart")
	time.Sleep(300 * time.Millisecond)
	stopClients()
	srv.Stop(t)

	checkMaildir(t, srv, led)
}

// startClients adds the recipients, starts the server and the sending
// goroutines; stop ends them (it also runs at cleanup).
func startClients(t *testing.T, srv *harness.Server) (led *ledger, stop func()) {
	t.Helper()
	srv.AddUser(t, rcpt, "crash-test-password")
	srv.AddUser(t, rcpt2, "crash-test-password")
	srv.Start(t)
	led = &ledger{attempted: map[string]sent{}, acked: map[string]bool{}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	stop = sync.OnceFunc(func() {
		cancel()
		wg.Wait()
	})
	t.Cleanup(stop) // also on t.Fatal
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &client{id: w, addr: srv.SMTP, led: led, rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(w)))}
			c.run(ctx)
		}()
	}
	return led, stop
}

// waitProgress waits until at least one more message is acknowledged, so
// that each kill lands while deliveries are under way.
func waitProgress(t *testing.T, srv *harness.Server, led *ledger, what string) {
	t.Helper()
	start := led.nacked.Load()
	deadline := time.Now().Add(progressTimeout)
	for led.nacked.Load() == start {
		if time.Now().After(deadline) {
			t.Fatalf("no message acknowledged within %v after %s\nlog:\n%s", progressTimeout, what, srv.LogTail(40))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// client is one sending goroutine. Even ids use net/smtp; odd ids speak the
// protocol directly with PIPELINING (RFC 2920), sending MAIL, RCPT and DATA
// in one write.
type client struct {
	id   int
	addr string
	led  *ledger
	rng  *rand.Rand
	seq  int
}

func (c *client) run(ctx context.Context) {
	for ctx.Err() == nil {
		conn, err := net.DialTimeout("tcp", c.addr, time.Second)
		if err != nil {
			// The server is down between a kill and its restart.
			sleepCtx(ctx, 10*time.Millisecond+rand.N(30*time.Millisecond))
			continue
		}
		// Closing the connection unblocks any read when the test ends.
		stop := context.AfterFunc(ctx, func() { conn.Close() })
		n := 1 + c.rng.IntN(5) // messages on this connection
		if c.id%2 == 0 {
			c.sendNetSMTP(conn, n)
		} else {
			c.sendPipelined(conn, n)
		}
		stop()
		conn.Close()
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// message builds a message with a unique token in Subject, Message-ID and
// body. The body has a line starting with "." (dot-stuffing, RFC 5321
// 4.5.2) and ends with "END <token>", so a truncated copy is recognised.
func (c *client) message() (tok string, rcpts []string, header, body []byte) {
	c.seq++
	tok = fmt.Sprintf("w%d-%05d-%08x", c.id, c.seq, c.rng.Uint32())
	rcpts = []string{rcpt}
	if c.seq%multiEvery == 0 {
		rcpts = append(rcpts, rcpt2)
	}
	lines := 1 + c.rng.IntN(60)
	if c.seq%bigEvery == 0 {
		lines = 4000 // about 300 KiB
	}
	var b bytes.Buffer
	for i := range lines {
		fmt.Fprintf(&b, "line %04d of %s: the quick brown fox jumps over the lazy dog 0123456789\r\n", i, tok)
		if i == lines/2 {
			fmt.Fprintf(&b, ".dot line of %s\r\n", tok)
		}
	}
	fmt.Fprintf(&b, "END %s\r\n", tok)
	header = fmt.Appendf(nil, "From: <%s>\r\nTo: <%s>\r\nSubject: crash test %s\r\nMessage-ID: <%s@crash.test>\r\nDate: %s\r\n\r\n",
		sender, strings.Join(rcpts, ">, <"), tok, tok, time.Now().Format(time.RFC1123Z))
	return tok, rcpts, header, b.Bytes()
}

func (c *client) sendNetSMTP(conn net.Conn, n int) {
	conn.SetDeadline(time.Now().Add(msgTimeout))
	sc, err := smtp.NewClient(conn, "localhost")
	if err != nil {
		return
	}
	if err := sc.Hello("client.crash.test"); err != nil {
		return
	}
	for range n {
		conn.SetDeadline(time.Now().Add(msgTimeout))
		tok, rcpts, header, body := c.message()
		c.led.attempt(tok, body, rcpts)
		if err := sc.Mail(sender); err != nil {
			c.fail(tok, err)
			return
		}
		for _, r := range rcpts {
			if err := sc.Rcpt(r); err != nil {
				c.fail(tok, err)
				return
			}
		}
		w, err := sc.Data()
		if err != nil {
			c.fail(tok, err)
			return
		}
		w.Write(header)
		w.Write(body)
		if err := w.Close(); err != nil { // reads the reply to the final "."
			c.fail(tok, err)
			return
		}
		c.led.ack(tok)
	}
	sc.Quit()
}

// fail records an SMTP error reply; network errors (the server was killed)
// are expected and only mean "not acknowledged".
func (c *client) fail(tok string, err error) {
	c.led.refused(tok, err)
}

func (c *client) sendPipelined(conn net.Conn, n int) {
	conn.SetDeadline(time.Now().Add(msgTimeout))
	r := bufio.NewReader(conn)
	if code, _, err := readReply(r); err != nil || code != 220 {
		return
	}
	fmt.Fprintf(conn, "EHLO client.crash.test\r\n")
	if code, text, err := readReply(r); err != nil || code != 250 || !strings.Contains(text, "PIPELINING") {
		if err == nil {
			c.fail("EHLO", &textproto.Error{Code: code, Msg: text + " (PIPELINING expected)"})
		}
		return
	}
	for range n {
		conn.SetDeadline(time.Now().Add(msgTimeout))
		tok, rcpts, header, body := c.message()
		c.led.attempt(tok, body, rcpts)
		var cmds bytes.Buffer
		fmt.Fprintf(&cmds, "MAIL FROM:<%s>\r\n", sender)
		want := []int{250}
		for _, r := range rcpts {
			fmt.Fprintf(&cmds, "RCPT TO:<%s>\r\n", r)
			want = append(want, 250)
		}
		cmds.WriteString("DATA\r\n")
		want = append(want, 354)
		if _, err := conn.Write(cmds.Bytes()); err != nil {
			return
		}
		for _, want := range want {
			code, text, err := readReply(r)
			if err != nil {
				return
			}
			if code != want {
				c.fail(tok, &textproto.Error{Code: code, Msg: text})
				return
			}
		}
		var data bytes.Buffer
		data.Write(header)
		for line := range bytes.Lines(body) {
			if line[0] == '.' {
				data.WriteByte('.')
			}
			data.Write(line)
		}
		data.WriteString(".\r\n")
		if _, err := conn.Write(data.Bytes()); err != nil {
			return
		}
		code, text, err := readReply(r)
		if err != nil {
			return
		}
		if code != 250 {
			c.fail(tok, &textproto.Error{Code: code, Msg: text})
			return
		}
		c.led.ack(tok)
	}
	fmt.Fprintf(conn, "QUIT\r\n")
	readReply(r)
}

// readReply reads a possibly multi-line reply (RFC 5321 4.2.1).
func readReply(r *bufio.Reader) (code int, text string, err error) {
	var lines []string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return 0, "", err
		}
		line = strings.TrimRight(line, "\r\n")
		if len(line) < 4 {
			return 0, "", fmt.Errorf("short reply line %q", line)
		}
		code, err = strconv.Atoi(line[:3])
		if err != nil {
			return 0, "", fmt.Errorf("bad reply line %q", line)
		}
		lines = append(lines, line[4:])
		if line[3] == ' ' {
			return code, strings.Join(lines, "\n"), nil
		}
	}
}

// checkMaildir scans new/ and cur/ of both mailboxes: every acknowledged
// token exactly once in each of its recipients' Maildirs, nothing unknown,
// nothing twice, every file complete.
func checkMaildir(t *testing.T, srv *harness.Server, led *ledger) {
	t.Helper()
	led.mu.Lock()
	defer led.mu.Unlock()
	// Report the first problems in full, then only count them.
	const maxReports = 25
	problems := 0
	errorf := func(format string, a ...any) {
		t.Helper()
		if problems++; problems <= maxReports {
			t.Errorf(format, a...)
		}
	}
	defer func() {
		if problems > maxReports {
			t.Errorf("... and %d more problems", problems-maxReports)
		}
	}()

	for _, r := range led.refusals {
		errorf("SMTP error reply from a healthy server: %s: %v", r.tok, r.err)
	}

	found := map[string]map[string]int{} // mailbox → token → copies
	for _, mbox := range []string{rcpt, rcpt2} {
		found[mbox] = map[string]int{}
		for _, f := range srv.Messages(t, mbox) {
			if tok, ok := checkFile(errorf, f, led); ok {
				found[mbox][tok]++
			}
		}
	}

	var missing, dup, unackedPresent, partial, tmpLeft int
	for mbox, toks := range found {
		for tok, n := range toks {
			if n > 1 {
				dup++
				errorf("token %s delivered %d times to %s (acknowledged: %v)", tok, n, mbox, led.acked[tok])
			}
			if !slices.Contains(led.attempted[tok].rcpts, mbox) {
				errorf("token %s is in the Maildir of %s, which it was not sent to", tok, mbox)
			}
		}
		tmp, _ := os.ReadDir(filepath.Join(srv.Maildir(mbox), "tmp"))
		tmpLeft += len(tmp)
	}
	distinct := 0
	for tok, s := range led.attempted {
		copies := 0
		for _, mbox := range s.rcpts {
			if found[mbox][tok] > 0 {
				copies++
			}
		}
		if copies > 0 {
			distinct++
		}
		switch {
		case led.acked[tok] && copies < len(s.rcpts):
			missing++
			errorf("acknowledged token %s is in %d of the Maildirs of %v", tok, copies, s.rcpts)
		case !led.acked[tok] && copies > 0:
			unackedPresent++
			if copies < len(s.rcpts) {
				// Killed between the renames of one delivery: allowed, as
				// the sender had no acknowledgement and retries.
				partial++
			}
		}
	}
	t.Logf("sent %d, acknowledged %d, found %d distinct; acknowledged but missing %d, duplicated %d, "+
		"unacknowledged but present %d (%d in only some of their mailboxes), left in tmp/ %d",
		len(led.attempted), len(led.acked), distinct, missing, dup, unackedPresent, partial, tmpLeft)
	if len(led.acked) == 0 {
		t.Error("nothing was acknowledged: the test proved nothing")
	}
}

// checkFile checks that one Maildir file is a complete copy of a message
// the clients sent, and returns its token.
func checkFile(errorf func(string, ...any), f harness.MailFile, led *ledger) (string, bool) {
	name := filepath.Base(f.Path)
	// Maildir names carry ",S=<size>" and, from syncfs-mode deliveries,
	// ",C=<CRC-32C>" of the content (see internal/maildir): a file that
	// does not match them is a torn write.
	base, _, _ := strings.Cut(name, ":")
	for _, field := range strings.Split(base, ",")[1:] {
		switch k, v, _ := strings.Cut(field, "="); k {
		case "S":
			if want, err := strconv.Atoi(v); err != nil || want != len(f.Data) {
				errorf("%s: name says %s bytes, file has %d", f.Path, v, len(f.Data))
			}
		case "C":
			if sum := fmt.Sprintf("%08x", crc32.Checksum(f.Data, crc32.MakeTable(crc32.Castagnoli))); sum != v {
				errorf("%s: name says CRC-32C %s, file has %s", f.Path, v, sum)
			}
		}
	}
	msg, err := mail.ReadMessage(bytes.NewReader(f.Data))
	if err != nil {
		errorf("%s: not a message (%v); %d bytes", f.Path, err, len(f.Data))
		return "", false
	}
	tok, ok := strings.CutPrefix(msg.Header.Get("Subject"), "crash test ")
	if !ok {
		errorf("%s: unexpected Subject %q", f.Path, msg.Header.Get("Subject"))
		return "", false
	}
	if id := msg.Header.Get("Message-Id"); id != "<"+tok+"@crash.test>" {
		errorf("%s: Message-ID %q does not match Subject token %s", f.Path, id, tok)
	}
	body, _ := readAll(msg)
	if !bytes.HasSuffix(body, []byte("\r\nEND "+tok+"\r\n")) {
		errorf("%s: token %s: body does not end with its END line (truncated?); %d bytes, ends %q",
			f.Path, tok, len(body), tail(body, 60))
	}
	s, sent := led.attempted[tok]
	switch {
	case !sent:
		errorf("%s: token %s was never sent", f.Path, tok)
		return "", false
	case s.sum != sha256.Sum256(body):
		errorf("%s: token %s: body differs from what was sent (%d bytes)", f.Path, tok, len(body))
	}
	return tok, true
}

func readAll(msg *mail.Message) ([]byte, error) {
	var b bytes.Buffer
	_, err := b.ReadFrom(msg.Body)
	return b.Bytes(), err
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
