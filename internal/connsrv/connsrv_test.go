package connsrv

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

func TestReadLine(t *testing.T) {
	r := bufio.NewReaderSize(strings.NewReader("short\r\n"+strings.Repeat("x", 100)+"\r\nlf only\nnext\r\ntail"), 16)
	for _, want := range []struct {
		line string
		err  error
	}{{"short", nil}, {"", ErrLineTooLong}, {"lf only", nil}, {"next", nil}, {"", io.EOF}} {
		got, err := ReadLine(r, 32)
		if got != want.line || !errors.Is(err, want.err) {
			t.Fatalf("got %q %v, want %q %v", got, err, want.line, want.err)
		}
	}
}

// Shutdown wakes a session idle in a read at once, waits for a busy one,
// and refuses new connections.
func TestShutdownWakesIdleSessions(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tr := New("test", slog.New(slog.DiscardHandler))
	woken := make(chan error, 1)
	go tr.Serve(ln, func(c net.Conn) {
		r := bufio.NewReader(c)
		tr.SetIdle(c, true)
		c.SetReadDeadline(time.Now().Add(time.Minute))
		_, err := ReadLine(r, 100)
		tr.SetIdle(c, false)
		if IsTimeout(err) && tr.Closing() {
			io.WriteString(c, "bye\r\n")
		}
		woken <- err
	})
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for tr.Sessions() != 1 {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if err := <-woken; !IsTimeout(err) {
		t.Fatalf("session woke with %v", err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	if line != "bye\r\n" {
		t.Fatalf("client read %q", line)
	}
	if tr.Sessions() != 0 {
		t.Fatalf("sessions left: %d", tr.Sessions())
	}
}

// ReadLine returns an argument-less command as a constant, without an
// allocation, and any other line as it came (one allocation).
func TestReadLineBareCommands(t *testing.T) {
	for _, tc := range []struct {
		line   string
		allocs float64
	}{{"DATA", 0}, {"QUIT", 0}, {"STARTTLS", 0}, {"STAT", 0}, {"", 0},
		{"data", 1}, {"DATA ", 1}, {"MAIL FROM:<a@b>", 1}} {
		r := bufio.NewReader(strings.NewReader(strings.Repeat(tc.line+"\r\n", 200)))
		if got, err := ReadLine(r, 100); err != nil || got != tc.line {
			t.Fatalf("ReadLine of %q: %q, %v", tc.line, got, err)
		}
		if n := testing.AllocsPerRun(100, func() { ReadLine(r, 100) }); n != tc.allocs {
			t.Errorf("ReadLine of %q: %v allocations, want %v", tc.line, n, tc.allocs)
		}
	}
}
