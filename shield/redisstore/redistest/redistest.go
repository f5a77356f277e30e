// Package redistest starts a real redis-server for tests: on a free
// loopback port, with a temporary folder, no persistence, and never the
// machine's own Redis service. Without redis-server on PATH the test is
// skipped, unless CI is set (CI=true), where that is a failure.
package redistest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"
)

// startDeadline bounds the wait for redis-server to answer.
const startDeadline = 15 * time.Second

// Server is a redis-server owned by one test.
type Server struct {
	Addr string // 127.0.0.1:port
	t    testing.TB
	dir  string
	cmd  *exec.Cmd
}

// Start starts redis-server and stops it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("redis-server not installed (CI=%s): .ci/run installs it", os.Getenv("CI"))
		}
		t.Skip("redis-server not installed")
	}
	s := &Server{t: t, dir: t.TempDir()}
	for attempt := 0; ; attempt++ {
		s.Addr = freeAddr(t)
		err := s.start()
		if err == nil {
			break
		}
		if attempt == 2 {
			t.Fatal(err)
		}
	}
	t.Cleanup(s.Stop)
	return s
}

// URL is the redis:// URL of database db.
func (s *Server) URL(db int) string { return fmt.Sprintf("redis://%s/%d", s.Addr, db) }

func freeAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func (s *Server) start() error {
	_, port, _ := net.SplitHostPort(s.Addr)
	s.cmd = exec.Command("redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", s.dir, "--daemonize", "no", "--protected-mode", "yes", "--loglevel", "warning")
	s.cmd.Dir = s.dir
	if err := s.cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- s.cmd.Wait() }()
	deadline := time.Now().Add(startDeadline)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("redis-server on %s exited: %v", s.Addr, err)
		default:
		}
		if ping(s.Addr) {
			go func() { <-exited }()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.cmd.Process.Kill()
	return fmt.Errorf("redis-server on %s did not answer within %s", s.Addr, startDeadline)
}

// ping sends an inline PING and waits for +PONG.
func ping(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	buf := make([]byte, 7)
	n, _ := c.Read(buf)
	return string(buf[:n]) == "+PONG\r\n"
}

// Stop kills redis-server at once (like a crash); nothing is saved.
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Kill()
	// Wait until the port no longer answers, so a restart can take it.
	deadline := time.Now().Add(startDeadline)
	for ping(s.Addr) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	s.cmd = nil
}

// Restart starts a new, empty redis-server on the same port.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	var err error
	for range 50 { // the port may linger for a moment after the kill
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatal(err)
}
