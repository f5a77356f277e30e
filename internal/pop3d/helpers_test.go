package pop3d

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	testUser = "alice@example.test"
	testPass = "secret pass with spaces"
)

// testMessages are alice's maildrop: a dot line, LF-only line ends and a
// missing final line break, and a longer body for TOP.
var testMessages = []string{
	"Subject: one\r\nFrom: a@example.net\r\n\r\nfirst line\r\n.starts with a dot\r\n..two dots\r\nlast\r\n",
	"Subject: two\n\nlf only\n.dot\nno final newline",
	"Subject: three\r\n\r\nb1\r\nb2\r\nb3\r\nb4\r\n",
}

// fakeBackend keeps maildrops in memory and records what sessions do.
type fakeBackend struct {
	mu      sync.Mutex
	boxes   map[string]*fakeBox
	updates int
}

type fakeBox struct {
	msgs    []string
	uidls   []string
	locked  bool
	failUpd bool
}

func newFakeBackend() *fakeBackend {
	b := &fakeBackend{boxes: map[string]*fakeBox{}}
	box := &fakeBox{}
	for i, m := range testMessages {
		box.msgs = append(box.msgs, m)
		box.uidls = append(box.uidls, fmt.Sprintf("%08X%08X", i+1, 42))
	}
	b.boxes[testUser] = box
	return b
}

func (b *fakeBackend) Authenticate(ctx context.Context, s *Session, user, pass string) (string, error) {
	switch {
	case user == "tempfail@example.test":
		return "", Errorf("SYS/TEMP", "Temporary authentication failure")
	case user == "panic@example.test":
		panic("test panic")
	case strings.EqualFold(user, testUser) && pass == testPass:
		return testUser, nil
	}
	return "", errors.New("bad credentials")
}

func (b *fakeBackend) OpenMaildrop(ctx context.Context, s *Session, user string) (Maildrop, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	box := b.boxes[user]
	if box.locked {
		return nil, ErrInUse
	}
	box.locked = true
	var msgs []Message
	for i, m := range box.msgs {
		msgs = append(msgs, Message{UIDL: box.uidls[i], Size: int64(len(m))})
	}
	return &fakeDrop{b: b, box: box, msgs: msgs, contents: append([]string(nil), box.msgs...), uidls: append([]string(nil), box.uidls...)}, nil
}

func (b *fakeBackend) locked(user string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.boxes[user].locked
}

func (b *fakeBackend) count(user string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.boxes[user].msgs)
}

type fakeDrop struct {
	b        *fakeBackend
	box      *fakeBox
	msgs     []Message
	contents []string
	uidls    []string
	closed   bool
}

func (d *fakeDrop) Messages() []Message { return d.msgs }

func (d *fakeDrop) Open(i int) (io.ReadCloser, error) {
	return io.NopCloser(strings.NewReader(d.contents[i])), nil
}

func (d *fakeDrop) Update(deleted, retrieved []int) error {
	d.b.mu.Lock()
	defer d.b.mu.Unlock()
	d.b.updates++
	if d.box.failUpd {
		return errors.New("disk on fire")
	}
	gone := map[string]bool{}
	for _, i := range deleted {
		gone[d.uidls[i]] = true
	}
	var msgs, uidls []string
	for i, u := range d.box.uidls {
		if !gone[u] {
			msgs, uidls = append(msgs, d.box.msgs[i]), append(uidls, u)
		}
	}
	d.box.msgs, d.box.uidls = msgs, uidls
	return nil
}

func (d *fakeDrop) Close() error {
	d.b.mu.Lock()
	defer d.b.mu.Unlock()
	if d.closed {
		panic("maildrop closed twice")
	}
	d.closed = true
	d.box.locked = false
	return nil
}

// testTLS is a self-signed certificate for 127.0.0.1.
func testTLS(t testing.TB) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pop3d test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

type testServer struct {
	srv     *Server
	backend *fakeBackend
	addr    string
	logs    *logBuf
}

// startTest serves on 127.0.0.1:0 with test-friendly limits.
func startTest(t *testing.T, mutate func(*Config)) *testServer {
	t.Helper()
	return startTestHooks(t, mutate, Hooks{})
}

func startTestHooks(t *testing.T, mutate func(*Config), hooks Hooks) *testServer {
	t.Helper()
	return startTestBackend(t, mutate, hooks, nil)
}

// startTestBackend serves the fake backend through wrap (nil: as it is).
func startTestBackend(t *testing.T, mutate func(*Config), hooks Hooks, wrap func(*fakeBackend) Backend) *testServer {
	t.Helper()
	cfg := Config{Hostname: "pop.example.test", TLS: testTLS(t), AllowInsecureAuthLoopback: true, MaxErrors: 10}
	if mutate != nil {
		mutate(&cfg)
	}
	logs := &logBuf{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	b := newFakeBackend()
	var backend Backend = b
	if wrap != nil {
		backend = wrap(b)
	}
	srv, err := NewServer(cfg, backend, hooks, log)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if srv.Panics() != 0 && !strings.Contains(t.Name(), "Panic") {
			t.Errorf("%d sessions panicked", srv.Panics())
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	return &testServer{srv: srv, backend: b, addr: ln.Addr().String(), logs: logs}
}

// logBuf collects the server's log; sessions write while tests read.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// client speaks POP3 line by line.
type client struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return &client{t: t, conn: c, r: bufio.NewReader(c)}
}

func (c *client) send(line string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, line+"\r\n"); err != nil {
		c.t.Fatalf("send %q: %v", line, err)
	}
}

func (c *client) raw(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("send raw: %v", err)
	}
}

func (c *client) readLine() string {
	c.t.Helper()
	l, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read: %v (got %q)", err, l)
	}
	if !strings.HasSuffix(l, "\r\n") {
		c.t.Fatalf("line %q does not end in CRLF", l)
	}
	return strings.TrimSuffix(l, "\r\n")
}

// expect reads one line that starts with prefix.
func (c *client) expect(prefix string) string {
	c.t.Helper()
	l := c.readLine()
	if !strings.HasPrefix(l, prefix) {
		c.t.Fatalf("want %q, got %q", prefix, l)
	}
	return l
}

// multi reads the body of a multi-line response (after its +OK line) up
// to the "." line, undoing the byte-stuffing.
func (c *client) multi() []string {
	c.t.Helper()
	var out []string
	for {
		l := c.readLine()
		if l == "." {
			return out
		}
		if strings.HasPrefix(l, ".") {
			l = l[1:]
		}
		out = append(out, l)
	}
}

func (c *client) cmd(line, prefix string) string {
	c.t.Helper()
	c.send(line)
	return c.expect(prefix)
}

func (c *client) expectClosed() {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := c.r.ReadString('\n')
	if err == nil {
		c.t.Fatalf("want connection closed, got %q", b)
	}
}

func (c *client) login() {
	c.t.Helper()
	c.cmd("USER "+testUser, "+OK")
	c.cmd("PASS "+testPass, "+OK")
}

func (c *client) startTLS() {
	c.t.Helper()
	c.cmd("STLS", "+OK")
	tc := tls.Client(c.conn, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		c.t.Fatal(err)
	}
	c.conn = tc
	c.r = bufio.NewReader(tc)
}

func plain(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
}

// waitFor polls cond (state changed by another goroutine) for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
