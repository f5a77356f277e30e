package connsrv

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/tlsutil"
)

// tcpPair is a connected pair of TCP sockets on loopback: the client's end
// dialled from a non-allowlisted address (127.0.0.1 is the default
// allowlist), and the server's.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 7, 8, 9)}, Timeout: 5 * time.Second}
	client, err = d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// waitDone waits (bounded) for ctx to end.
func waitDone(t *testing.T, ctx context.Context, what string) {
	t.Helper()
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: the check's context was not cancelled", what)
	}
}

// A client that closes its connection while its credentials are checked
// ends the check's context (cause ErrClientGone): the check, cancelled,
// is reported abandoned and counted. Nothing of the session's own
// context is touched.
func TestWhileVerifyingClientGone(t *testing.T) {
	tr := New("test", slog.New(slog.DiscardHandler))
	for _, how := range []string{"close", "reset"} {
		t.Run(how, func(t *testing.T) {
			client, server := tcpPair(t)
			fr := tr.Open(server, "pop3", time.Hour)
			defer fr.End()
			before := tr.Abandoned()
			ctx, end := fr.WhileVerifying(server, bufio.NewReader(server))
			if how == "reset" {
				client.(*net.TCPConn).SetLinger(0) // close with RST
			}
			client.Close()
			waitDone(t, ctx, how)
			if !errors.Is(context.Cause(ctx), ErrClientGone) {
				t.Errorf("cause %v, want ErrClientGone", context.Cause(ctx))
			}
			if !end(ctx.Err()) {
				t.Error("end did not report the cancelled check abandoned")
			}
			if n := tr.Abandoned() - before; n != 1 {
				t.Errorf("abandoned checks counted: %d, want 1", n)
			}
			if fr.Ctx.Err() != nil {
				t.Error("the session's context ended")
			}
		})
	}
}

// A check cancelled because the session ended meanwhile (a shield kick
// cancels the session's context) reports the session over, so that the
// caller ends it without a reply and without taking the cancelled check
// for a failure of the server; it is not counted as abandoned: the client
// did not leave. The old end reported false, and the sessions answered a
// temporary failure and logged the cancelled query's error at warn.
func TestWhileVerifyingSessionEnded(t *testing.T) {
	tr := New("test", slog.New(slog.DiscardHandler))
	_, server := tcpPair(t)
	fr := tr.Open(server, "pop3", time.Hour)
	ctx, end := fr.WhileVerifying(server, bufio.NewReader(server))
	fr.End() // what a shield kick does to the session's context
	waitDone(t, ctx, "session end")
	if !end(fmt.Errorf("reading user: %w", ctx.Err())) {
		t.Error("end did not report the session over")
	}
	if tr.Abandoned() != 0 {
		t.Errorf("abandoned checks counted: %d, want 0", tr.Abandoned())
	}
}

// A check that completed is never abandoned, even when the client has
// left since: a wrong password stays a failed login.
func TestWhileVerifyingCompletedCheck(t *testing.T) {
	tr := New("test", slog.New(slog.DiscardHandler))
	client, server := tcpPair(t)
	fr := tr.Open(server, "imap", time.Hour)
	defer fr.End()
	ctx, end := fr.WhileVerifying(server, nil)
	client.Close()
	waitDone(t, ctx, "close")
	if end(errors.New("wrong password")) || end(nil) {
		t.Error("a completed check was reported abandoned")
	}
	if tr.Abandoned() != 0 {
		t.Errorf("abandoned checks counted: %d", tr.Abandoned())
	}
}

// The watch consumes nothing: bytes the client sends while its login is
// checked (a pipelined command) are read by the session afterwards, and
// the check goes on. After end the connection reads normally, with no
// read deadline left in the past, and the bytes sent later arrive too.
func TestWhileVerifyingKeepsBytes(t *testing.T) {
	tr := New("test", slog.New(slog.DiscardHandler))
	client, server := tcpPair(t)
	fr := tr.Open(server, "pop3", time.Hour)
	defer fr.End()
	r := bufio.NewReader(server)
	server.SetReadDeadline(time.Now().Add(-time.Second)) // what a session may leave behind
	ctx, end := fr.WhileVerifying(server, r)
	if _, err := io.WriteString(client, "STAT\r\n"); err != nil {
		t.Fatal(err)
	}
	if end(nil) {
		t.Error("a check whose client is alive was reported abandoned")
	}
	if ctx.Err() == nil || errors.Is(context.Cause(ctx), ErrClientGone) {
		t.Errorf("after end: context %v, cause %v; want cancelled, not by ErrClientGone", ctx.Err(), context.Cause(ctx))
	}
	got, err := ReadLine(r, 100) // no deadline set: the one end left
	if err != nil || got != "STAT" {
		t.Fatalf("after the watch: %q, %v; want STAT", got, err)
	}
	// A watch stopped while the client is silent leaves the next read
	// waiting for it, not failing at once.
	_, end = fr.WhileVerifying(server, r)
	if end(nil) {
		t.Error("a silent client's check was reported abandoned")
	}
	go io.WriteString(client, "LIST\r\n")
	if got, err := ReadLine(r, 100); err != nil || got != "LIST" {
		t.Fatalf("after a second watch: %q, %v; want LIST", got, err)
	}
}

// Bytes already in the session's buffer mean the client sent more than
// its credentials: it is not watched, even when it has left since (the
// session reads what it sent); a connection that is no socket neither.
func TestWhileVerifyingNotWatched(t *testing.T) {
	tr := New("test", slog.New(slog.DiscardHandler))
	client, server := tcpPair(t)
	fr := tr.Open(server, "smtp", time.Hour)
	defer fr.End()
	io.WriteString(client, "PASS x\r\nSTAT\r\n")
	r := bufio.NewReader(server)
	if l, err := ReadLine(r, 100); err != nil || l != "PASS x" {
		t.Fatalf("read %q, %v", l, err)
	}
	ctx, end := fr.WhileVerifying(server, r)
	client.Close()
	if l, err := ReadLine(r, 100); err != nil || l != "STAT" {
		t.Fatalf("read %q, %v", l, err)
	}
	if _, err := r.ReadByte(); err != io.EOF {
		t.Fatalf("after the client's close: %v, want EOF", err)
	}
	if ctx.Err() != nil || end(context.Canceled) {
		t.Error("a client with buffered bytes was watched")
	}

	ps, pc := net.Pipe()
	defer ps.Close()
	fp := tr.Open(ps, "smtp", time.Hour)
	defer fp.End()
	ctx, end = fp.WhileVerifying(ps, nil)
	pc.Close()
	if ctx.Err() != nil || end(nil) {
		t.Error("a pipe was watched")
	}
}

// A TLS session is watched on the TCP connection beneath it: the client's
// leaving ends the check, whether it drops the connection or closes it
// properly (close_notify, then FIN: RFC 8446 6.1); a TLS record from a
// client that stays (data) does not, and stays for the session to read.
func TestWhileVerifyingTLS(t *testing.T) {
	tr := New("test", slog.New(slog.DiscardHandler))
	cfg := testTLSConfig(t)
	for _, how := range []string{"drop", "close_notify", "stay"} {
		t.Run(how, func(t *testing.T) {
			client, server := tcpPair(t)
			tc := tls.Client(client, &tls.Config{InsecureSkipVerify: true})
			ts := tls.Server(server, cfg)
			errc := make(chan error, 1)
			go func() { errc <- tc.Handshake() }()
			if err := ts.Handshake(); err != nil {
				t.Fatal(err)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			fr := tr.Open(server, "imap", time.Hour)
			defer fr.End()
			r := bufio.NewReader(ts)
			ctx, end := fr.WhileVerifying(ts, r)
			switch how {
			case "drop":
				client.Close() // no close_notify: the TCP connection goes
			case "close_notify":
				tc.Close() // close_notify, then FIN
			case "stay":
				io.WriteString(tc, "a NOOP\r\n")
				if end(nil) {
					t.Error("a live client's check was abandoned")
				}
				if l, err := ReadLine(r, 100); err != nil || l != "a NOOP" {
					t.Errorf("after the watch %q, %v", l, err)
				}
				return
			}
			waitDone(t, ctx, how)
			if !end(ctx.Err()) {
				t.Error("the departed client's check was not abandoned")
			}
		})
	}
}

// testTLSConfig is a server configuration with a fresh self-signed
// certificate.
func testTLSConfig(t *testing.T) *tls.Config {
	t.Helper()
	dir := t.TempDir()
	cfg, _, err := tlsutil.LoadOrCreate(dir+"/cert.pem", dir+"/key.pem", []string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}
