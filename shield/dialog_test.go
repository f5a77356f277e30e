package shield

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDialogs runs the abuse dialogs in testdata/dialogs against a fresh
// shield and the test server. Format, one step per line:
//
//	rule LINE      an inline rule (before the first connect)
//	connect SRC    a new connection from loopback address SRC
//	> TEXT         send TEXT and CRLF
//	< PREFIX       expect a line starting with PREFIX
//	closed         expect the server to close without sending anything
//	silent         expect nothing and no close for a moment (tarpit)
//
// Dialog config: thresholds auth_failure, protocol_error and
// unknown_recipient are 3.
func TestDialogs(t *testing.T) {
	files, err := filepath.Glob("testdata/dialogs/*.dlg")
	if err != nil || len(files) == 0 {
		t.Fatal("no dialogs", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".dlg"), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(string(data), "\n")
			cfg := testConfig()
			cfg.Thresholds.SetCount("auth_failure", 3)
			cfg.Thresholds.SetCount("protocol_error", 3)
			cfg.Thresholds.SetCount("unknown_recipient", 3)
			for _, l := range lines {
				if r, ok := strings.CutPrefix(l, "rule "); ok {
					cfg.Rules = append(cfg.Rules, r)
				}
			}
			h := newHarness(t, cfg, Options{})
			srv := startServer(t, h.s, ListenerConfig{Name: "smtp"})
			var c net.Conn
			var br *bufio.Reader
			reset := false // the connection was reset while connecting
			for n, l := range lines {
				where := fmt.Sprintf("%s:%d", file, n+1)
				l = strings.TrimRight(l, "\r")
				switch {
				case l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, "rule "):
				case strings.HasPrefix(l, "connect "):
					if c != nil {
						c.Close()
					}
					d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(strings.TrimPrefix(l, "connect "))}, Timeout: 5 * time.Second}
					c, err = d.Dial("tcp", srv.addr)
					reset = errors.Is(err, syscall.ECONNRESET)
					if err != nil && !reset {
						t.Fatalf("%s: %v", where, err)
					}
					if c != nil {
						br = bufio.NewReader(c)
						t.Cleanup(func() { c.Close() })
					}
				case strings.HasPrefix(l, "> "):
					fmt.Fprintf(c, "%s\r\n", l[2:])
				case strings.HasPrefix(l, "< "):
					c.SetReadDeadline(time.Now().Add(5 * time.Second))
					got, err := br.ReadString('\n')
					if err != nil || !strings.HasPrefix(got, l[2:]) {
						t.Fatalf("%s: want %q, got %q, %v", where, l[2:], got, err)
					}
				case l == "closed":
					if reset {
						continue
					}
					c.SetReadDeadline(time.Now().Add(5 * time.Second))
					got, err := br.ReadString('\n')
					if got != "" || err == nil || isTimeout(err) {
						t.Fatalf("%s: want close, got %q, %v", where, got, err)
					}
				case l == "silent":
					c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
					got, err := br.ReadString('\n')
					if !isTimeout(err) {
						t.Fatalf("%s: want silence, got %q, %v", where, got, err)
					}
				default:
					t.Fatalf("%s: unknown step %q", where, l)
				}
			}
		})
	}
}
