package shield

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// pipeListener hands out the server ends of net.Pipe pairs as if they came
// from the trusted proxy 127.70.0.1.
type pipeListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}
func (l *pipeListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *pipeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 25} }

// fromProxy is a pipe end that reports the proxy's address and tells when
// the shield closes it (a drop or a refusal).
type fromProxy struct {
	net.Conn
	closed chan struct{}
	once   sync.Once
}

func (c *fromProxy) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 70, 0, 1), Port: 40000}
}
func (c *fromProxy) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// FuzzProxyHeader sends arbitrary bytes from a trusted proxy to a listener
// that accepts PROXY v1/v2 headers. The shield must never panic or hang:
// each connection is either closed (a bad header, a refusal) or handed to
// the application, which then reads exactly the bytes after the header.
func FuzzProxyHeader(f *testing.F) {
	v1 := "PROXY TCP4 198.51.100.1 127.0.0.1 40000 25\r\nEHLO x\r\n"
	var v2 bytes.Buffer
	(&proxyproto.Header{Version: 2, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv6,
		SourceAddr:      &net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 1},
		DestinationAddr: &net.TCPAddr{IP: net.ParseIP("2001:db8::2"), Port: 25}}).WriteTo(&v2)
	for _, seed := range []string{
		v1, v2.String() + "NOOP\r\n", "PROXY UNKNOWN\r\nx", "PROXY TCP4 1.2.3.4\r\n", "EHLO health-check\r\n",
		"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c", "\r\n\r\n\x00\r\nQUIT\n\x21\x11\xff\xff", "PROXY TCP6 ::1 ::1 1 2\r\n",
	} {
		f.Add([]byte(seed))
	}
	cfg := testConfig()
	cfg.TrustedProxies = []string{"127.70.0.1"}
	cfg.Limits.ProxyTimeout = 2 * time.Second
	s, err := New(cfg, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	inner := &pipeListener{ch: make(chan net.Conn), done: make(chan struct{})}
	ln := s.Listener(inner, ListenerConfig{Name: "fuzz", ProxyProtocol: true, Reject: replyReject})
	defer ln.Close()
	accepted := make(chan net.Conn)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	f.Fuzz(func(t *testing.T, in []byte) {
		server, client := net.Pipe()
		sc := &fromProxy{Conn: server, closed: make(chan struct{})}
		inner.ch <- sc
		go func() {
			client.SetWriteDeadline(time.Now().Add(5 * time.Second))
			client.Write(in)
			client.Close()
		}()
		select {
		case c := <-accepted:
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			got, err := io.ReadAll(c)
			c.Close()
			if err != nil {
				t.Fatalf("reading after the header: %v", err)
			}
			if !bytes.HasSuffix(in, got) {
				t.Fatalf("application read %q, not a suffix of %q", got, in)
			}
		case <-sc.closed:
		case <-time.After(10 * time.Second):
			t.Fatal("connection neither accepted nor closed")
		}
	})
}
