package outbound

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/queue"
	"github.com/agua-mail/agua/internal/resolver"
	"github.com/agua-mail/agua/internal/resolver/dnstest"
	"github.com/agua-mail/agua/internal/tlsutil"
)

// listenSamePort listens on the same TCP port of each loopback address,
// since the engine uses one port for every mail exchanger.
func listenSamePort(t *testing.T, ips ...string) (int, []net.Listener) {
	t.Helper()
	for try := 0; try < 50; try++ {
		first, err := net.Listen("tcp", net.JoinHostPort(ips[0], "0"))
		if err != nil {
			t.Fatal(err)
		}
		port := first.Addr().(*net.TCPAddr).Port
		lns := []net.Listener{first}
		for _, ip := range ips[1:] {
			ln, err := net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(port)))
			if err != nil {
				break
			}
			lns = append(lns, ln)
		}
		if len(lns) == len(ips) {
			return port, lns
		}
		for _, ln := range lns {
			ln.Close()
		}
	}
	t.Fatal("no port free on every address")
	return 0, nil
}

// received is one transaction a peer accepted.
type received struct {
	from   string
	params string // MAIL FROM parameters
	rcpts  []string
	data   string
	tls    bool
	auth   string
	remote string
}

// peer is a scripted SMTP server for tests.
type peer struct {
	t        *testing.T
	ln       net.Listener
	greeting string   // default "220 peer.test ESMTP"
	ext      []string // EHLO keywords; default PIPELINING, 8BITMIME, SMTPUTF8, SIZE 10000000
	tls      *tls.Config
	// mailReply, rcptReply, endReply choose replies; nil: 250.
	mailReply func(from string) string
	rcptReply func(rcpt string) string
	endReply  func(r received) string
	// fault runs at a stage ("greeting", "ehlo", "data") and returns true
	// when it took over the connection (and closed or hung it).
	fault func(stage string, c net.Conn) bool
	// onEnd runs when a session ends.
	onEnd func()

	mu        sync.Mutex
	msgs      []received
	conns     int
	pipelined bool // RCPT arrived before MAIL was answered
	cmds      []string
}

// newPeer makes a scripted peer on ln: set its fields, then start it
// (startPeers), so that its sessions never race with the configuration.
func newPeer(t *testing.T, ln net.Listener) *peer {
	p := &peer{t: t, ln: ln, greeting: "220 peer.test ESMTP",
		ext: []string{"PIPELINING", "8BITMIME", "SMTPUTF8", "SIZE 10000000", "ENHANCEDSTATUSCODES"}}
	t.Cleanup(func() { ln.Close() })
	return p
}

// start serves connections; configure the peer's fields before it.
func (p *peer) start() {
	t, ln := p.t, p.ln
	done := make(chan struct{})
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				p.serve(c, done)
			}()
		}
	}()
	t.Cleanup(func() {
		close(done)
		ln.Close()
		wg.Wait()
	})
}

// startPeers starts the peers once the test has configured them.
func startPeers(ps ...*peer) {
	for _, p := range ps {
		p.start()
	}
}

func (p *peer) received() []received {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]received(nil), p.msgs...)
}

// sawMail reports whether any session sent MAIL.
func (p *peer) sawMail() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.cmds {
		if strings.HasPrefix(c, "MAIL") {
			return true
		}
	}
	return false
}

func (p *peer) connections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conns
}

func (p *peer) serve(c net.Conn, done chan struct{}) {
	defer c.Close()
	if p.onEnd != nil {
		defer p.onEnd()
	}
	go func() { <-done; c.Close() }()
	p.mu.Lock()
	p.conns++
	p.mu.Unlock()
	if p.fault != nil && p.fault("greeting", c) {
		return
	}
	br := bufio.NewReader(c)
	w := bufio.NewWriter(c)
	reply := func(s string) {
		w.WriteString(s + "\r\n")
		w.Flush()
	}
	reply(p.greeting)
	if !strings.HasPrefix(p.greeting, "220") {
		return
	}
	var cur received
	cur.remote = c.RemoteAddr().String()
	isTLS := false
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		verb, arg, _ := strings.Cut(line, " ")
		verb = strings.ToUpper(verb)
		p.mu.Lock()
		p.cmds = append(p.cmds, line)
		p.mu.Unlock()
		switch verb {
		case "EHLO":
			if p.fault != nil && p.fault("ehlo", c) {
				return
			}
			lines := []string{"peer.test"}
			lines = append(lines, p.ext...)
			if p.tls != nil && !isTLS {
				lines = append(lines, "STARTTLS")
			}
			for i, l := range lines {
				sep := "-"
				if i == len(lines)-1 {
					sep = " "
				}
				w.WriteString("250" + sep + l + "\r\n")
			}
			w.Flush()
		case "HELO":
			reply("250 peer.test")
		case "STARTTLS":
			if p.tls == nil {
				reply("502 5.5.1 no")
				continue
			}
			reply("220 2.0.0 go ahead")
			if p.fault != nil && p.fault("starttls", c) {
				return
			}
			tc := tls.Server(c, p.tls)
			if err := tc.Handshake(); err != nil {
				return
			}
			c, isTLS = tc, true
			br, w = bufio.NewReader(tc), bufio.NewWriter(tc)
			cur = received{remote: cur.remote}
		case "AUTH":
			cur.auth = arg
			reply("235 2.7.0 ok")
		case "MAIL":
			from, params, _ := strings.Cut(strings.TrimPrefix(arg, "FROM:<"), ">")
			cur.from, cur.params, cur.rcpts, cur.tls = from, strings.TrimSpace(params), nil, isTLS
			if br.Buffered() > 0 {
				p.mu.Lock()
				p.pipelined = true
				p.mu.Unlock()
			}
			r := "250 2.1.0 ok"
			if p.mailReply != nil {
				r = p.mailReply(from)
			}
			reply(r)
		case "RCPT":
			rcpt := strings.TrimSuffix(strings.TrimPrefix(arg, "TO:<"), ">")
			r := "250 2.1.5 ok"
			if p.rcptReply != nil {
				r = p.rcptReply(rcpt)
			}
			if strings.HasPrefix(r, "2") {
				cur.rcpts = append(cur.rcpts, rcpt)
			}
			reply(r)
		case "DATA":
			if len(cur.rcpts) == 0 {
				reply("554 5.5.1 no valid recipients")
				continue
			}
			if p.fault != nil && p.fault("data354", c) {
				return
			}
			reply("354 go ahead")
			if p.fault != nil && p.fault("data", c) {
				return
			}
			var data strings.Builder
			for {
				l, err := br.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				data.WriteString(strings.TrimPrefix(l, "."))
			}
			cur.data = data.String()
			r := "250 2.0.0 queued"
			if p.endReply != nil {
				r = p.endReply(cur)
			}
			if strings.HasPrefix(r, "2") {
				p.mu.Lock()
				p.msgs = append(p.msgs, cur)
				p.mu.Unlock()
			}
			reply(r)
		case "RSET":
			cur = received{remote: cur.remote}
			reply("250 2.0.0 ok")
		case "QUIT":
			reply("221 2.0.0 bye")
			return
		default:
			reply("500 5.5.2 what")
		}
	}
}

// env is a test setup: DNS, a queue, an engine and the DSNs it produced.
type env struct {
	t     *testing.T
	dns   *dnstest.Server
	q     *queue.File
	e     *Engine
	clk   *testClock
	logs  *logBuf
	mu    sync.Mutex
	dsns  []dsnMsg
	dsnCh chan struct{}
	stop  func() // stops the engine and waits for it
	start func() // starts the engine (once)
}

type dsnMsg struct {
	to   string
	body string
}

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type logBuf struct {
	mu sync.Mutex
	b  strings.Builder
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

// newEnv starts an engine on a new queue; mutate adjusts the options.
func newEnv(t *testing.T, port int, mutate func(*Options)) *env {
	t.Helper()
	ev := newEnvStopped(t, port, mutate)
	ev.start()
	return ev
}

// newEnvStopped is newEnv with the engine not yet running: the test fills
// the queue first and then calls start, so what the engine finds at its
// first look does not depend on how fast the machine is.
func newEnvStopped(t *testing.T, port int, mutate func(*Options)) *env {
	t.Helper()
	ev := &env{t: t, dns: dnstest.Start(t, "127.0.0.53"), clk: &testClock{t: time.Now()}, logs: &logBuf{}, dsnCh: make(chan struct{}, 100)}
	res, err := resolver.New(resolver.Config{Servers: []string{ev.dns.Addr}, Timeout: 2 * time.Second, CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	ev.q, err = queue.Open(filepath.Join(t.TempDir(), "queue"), queue.Options{Now: ev.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{
		Queue: ev.q, Resolver: res, Hostname: "agua.test", Port: port,
		Logger: slog.New(slog.NewTextHandler(ev.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Bounce: func(ctx context.Context, rcpt string, dsn []byte) error {
			ev.mu.Lock()
			ev.dsns = append(ev.dsns, dsnMsg{rcpt, string(dsn)})
			ev.mu.Unlock()
			ev.dsnCh <- struct{}{}
			return nil
		},
		Now:      ev.clk.Now,
		Timeouts: Timeouts{Connect: 5 * time.Second, Greeting: 5 * time.Second, Command: 5 * time.Second, Mail: 5 * time.Second, Rcpt: 5 * time.Second, DataInit: 5 * time.Second, DataBlock: 5 * time.Second, DataEnd: 5 * time.Second},
		Poll:     time.Hour, // tests wake the engine through the queue
	}
	if mutate != nil {
		mutate(&opts)
	}
	ev.e, err = New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var started sync.Once
	ev.start = func() {
		started.Do(func() {
			go func() {
				ev.e.Run(ctx)
				close(done)
			}()
		})
	}
	var once sync.Once
	ev.stop = func() {
		once.Do(func() {
			ev.start() // so that done is closed
			cancel()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				t.Error("engine did not stop")
			}
		})
	}
	t.Cleanup(func() {
		ev.stop()
		ev.q.Close()
		if t.Failed() {
			t.Logf("engine log:\n%s", ev.logs.String())
		}
	})
	return ev
}

func (ev *env) enqueue(from string, to []string, body string) string {
	ev.t.Helper()
	id, err := ev.q.Enqueue(context.Background(), queue.Envelope{From: from, To: to}, strings.NewReader(body))
	if err != nil {
		ev.t.Fatal(err)
	}
	return id
}

// waitFor polls cond until it holds, failing the test after a bound.
func (ev *env) waitFor(what string, cond func() bool) {
	ev.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			ev.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitGone waits until the message has left the queue.
func (ev *env) waitGone(id string) {
	ev.t.Helper()
	ev.waitFor("message "+id+" to leave the queue", func() bool {
		_, err := ev.q.Get(id)
		return err != nil
	})
}

// waitState waits until every recipient of id has left Pending and none
// is claimed, and returns the message.
func (ev *env) waitState(id string, st queue.Status) queue.Message {
	ev.t.Helper()
	var m queue.Message
	ev.waitFor("message "+id+" to be "+st.String(), func() bool {
		var err error
		m, err = ev.q.Get(id)
		if err != nil {
			return false
		}
		for _, r := range m.Rcpts {
			if r.Status != st && !r.Status.Final() {
				return false
			}
		}
		return true
	})
	return m
}

func (ev *env) dsnList() []dsnMsg {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	return append([]dsnMsg(nil), ev.dsns...)
}

func (ev *env) waitDSN(n int) []dsnMsg {
	ev.t.Helper()
	ev.waitFor(fmt.Sprintf("%d DSNs", n), func() bool { return len(ev.dsnList()) >= n })
	return ev.dsnList()
}

// testTLS returns a server certificate for name and a pool trusting it.
func testTLS(t *testing.T, name string) (*tls.Config, *x509.CertPool) {
	t.Helper()
	dir := t.TempDir()
	cfg, _, err := tlsutil.LoadOrCreate(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), []string{name})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	leaf, err := x509.ParseCertificate(cfg.Certificates[0].Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	pool.AddCert(leaf)
	return cfg, pool
}
