package smtpd

import (
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

// FuzzSession feeds arbitrary client input to a session and checks that it
// never panics, always ends, and answers only with well-formed replies.
func FuzzSession(f *testing.F) {
	for _, seed := range []string{
		"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<u@example.test>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n",
		"HELO x\r\nMAIL FROM:<> SIZE=10 BODY=8BITMIME SMTPUTF8\r\nRCPT TO:<postmaster>\r\nDATA\r\n.\r\n",
		"EHLO x\r\nAUTH PLAIN AHVAZXhhbXBsZS50ZXN0AHA=\r\nAUTH LOGIN\r\n*\r\n",
		"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<u@example.test>\r\nDATA\r\nx\n.\nMAIL FROM:<e@x>\r\n.\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"EHLO x\r\nSTARTTLS\r\nMAIL FROM:<a@b>\r\n",
		"\x00\xff\r\n\r\n.\r\nRSET\r\nNOOP\r\nVRFY a\r\nBDAT 1 LAST\r\n",
		strings.Repeat("A", 5000) + "\r\nQUIT\r\n",
	} {
		f.Add(seed)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	f.Fuzz(func(t *testing.T, input string) {
		srv, err := NewServer(ModeSubmission, Config{
			Hostname:                  "fuzz.test",
			TLS:                       &tls.Config{}, // offered, handshakes fail on the pipe
			CommandTimeout:            time.Second,
			DataTimeout:               time.Second,
			SessionTimeout:            2 * time.Second,
			MaxMessageSize:            4096,
			AllowInsecureAuthLoopback: true,
		}, &memBackend{}, Hooks{}, log)
		if err != nil {
			t.Fatal(err)
		}
		// A loopback TCP pair, so the client can half-close after its input
		// and the session sees EOF at once instead of waiting for a timeout.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		client := c.(*net.TCPConn)
		server, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			srv.serveConn(server)
		}()
		go func() {
			io.WriteString(client, input)
			client.CloseWrite()
		}()
		client.SetReadDeadline(time.Now().Add(5 * time.Second))
		out, _ := io.ReadAll(client)
		client.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("session did not end")
		}
		if srv.Panics() > 0 {
			t.Fatal("session panicked")
		}
		for _, line := range strings.Split(strings.TrimSuffix(string(out), "\r\n"), "\r\n") {
			if line == "" {
				continue
			}
			if len(line) < 4 || line[0] < '2' || line[0] > '5' || (line[3] != ' ' && line[3] != '-') {
				t.Fatalf("malformed reply line %q", line)
			}
		}
	})
}
