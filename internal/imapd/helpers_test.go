package imapd

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
	"io"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/agua-mail/agua/internal/maildir"
	"github.com/agua-mail/agua/internal/mailstore"
	"github.com/agua-mail/agua/internal/mailstore/memstore"
)

const (
	testUser = "alice@example.test"
	testPass = "secret pass"
)

type fakeAuth struct{}

func (fakeAuth) Authenticate(ctx context.Context, user, pass string) (string, int64, error) {
	switch {
	case user == "panic@example.test":
		panic("test panic")
	case strings.EqualFold(user, testUser) && pass == testPass:
		return testUser, 1 << 20, nil
	}
	return "", 0, ErrAuthFailed
}

// testTLS is a self-signed certificate for 127.0.0.1.
func testTLS(t testing.TB) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "imapd test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

type testServer struct {
	srv   *Server
	store *maildir.Store // nil on the in-memory store
	mem   *memstore.Data // the in-memory store's content, or nil
	root  string
	addr  string
	logs  *logBuf
}

// startTest serves on 127.0.0.1:0 over a fresh Maildir store.
func startTest(t testing.TB, mutate func(*Config)) *testServer {
	t.Helper()
	return startTestHooks(t, mutate, Hooks{})
}

func startTestHooks(t testing.TB, mutate func(*Config), hooks Hooks) *testServer {
	t.Helper()
	return startTestOn(t, mutate, hooks, false)
}

// onStores runs test against a server on Maildir and one on the in-memory
// reference store: sessions need nothing of the store but the contract.
func onStores(t *testing.T, test func(*testing.T, *testServer)) {
	t.Run("maildir", func(t *testing.T) { test(t, startTest(t, nil)) })
	t.Run("memstore", func(t *testing.T) { test(t, startTestOn(t, nil, Hooks{}, true)) })
}

func startTestOn(t testing.TB, mutate func(*Config), hooks Hooks, inMemory bool) *testServer {
	t.Helper()
	return startTestAuth(t, mutate, hooks, inMemory, fakeAuth{})
}

// startTestAuth serves with auth checking the logins.
func startTestAuth(t testing.TB, mutate func(*Config), hooks Hooks, inMemory bool, auth Authenticator) *testServer {
	t.Helper()
	cfg := Config{Hostname: "imap.example.test", TLS: testTLS(t), AllowInsecureAuthLoopback: true, IdlePoll: 50 * time.Millisecond}
	if mutate != nil {
		mutate(&cfg)
	}
	logs := &logBuf{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ts := &testServer{root: t.TempDir(), logs: logs}
	var store mailstore.Store
	if inMemory {
		ts.mem = memstore.NewData()
		store = memstore.Open(ts.mem)
	} else {
		st, err := maildir.Open(ts.root, maildir.Options{Hostname: "test"})
		if err != nil {
			t.Fatal(err)
		}
		ts.store, store = st, st.MailStore()
	}
	srv, err := NewServer(cfg, auth, store, hooks, log)
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
		if ts.store != nil {
			ts.store.Close()
		}
		if srv.Panics() != 0 && !strings.Contains(t.Name(), "Panic") {
			t.Errorf("%d sessions panicked", srv.Panics())
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	ts.srv, ts.addr = srv, ln.Addr().String()
	return ts
}

// deliver puts a message into alice's INBOX as SMTP would.
func (ts *testServer) deliver(t testing.TB, msg string) {
	t.Helper()
	if ts.mem != nil {
		ts.mem.Deliver(testUser, []byte(msg))
		return
	}
	err := ts.store.Deliver(context.Background(), maildir.Message{R: strings.NewReader(msg), Size: int64(len(msg))},
		[]maildir.Recipient{{Mailbox: testUser, Quota: 1 << 30}})
	if err != nil {
		t.Fatal(err)
	}
}

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

// client speaks raw IMAP line by line.
type client struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

func dial(t testing.TB, addr string) *client {
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

func (c *client) readLine() string {
	c.t.Helper()
	l, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read: %v (got %q)", err, l)
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

// until reads lines until one starts with prefix and returns the lines
// read before it.
func (c *client) until(prefix string) []string {
	c.t.Helper()
	var before []string
	for {
		l := c.readLine()
		if strings.HasPrefix(l, prefix) {
			return before
		}
		before = append(before, l)
	}
}

func (c *client) expectClosed() {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		b, err := c.r.ReadString('\n')
		if err != nil {
			return
		}
		if !strings.HasPrefix(b, "* BYE") && !strings.Contains(b, " BAD ") && !strings.Contains(b, " NO ") {
			c.t.Fatalf("want connection closed, got %q", b)
		}
	}
}

func (c *client) startTLS() {
	c.t.Helper()
	c.send("S STARTTLS")
	c.expect("S OK")
	tc := tls.Client(c.conn, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		c.t.Fatal(err)
	}
	c.conn = tc
	c.r = bufio.NewReader(tc)
}

// login dials and logs in with go-imap's client.
func (ts *testServer) login(t testing.TB) *imapclient.Client {
	t.Helper()
	c, err := imapclient.DialInsecure(ts.addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login(testUser, testPass).Wait(); err != nil {
		t.Fatal(err)
	}
	return c
}

// waitFor polls cond (state changed by another goroutine) for up to 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
