// Package pgtest starts a real PostgreSQL server for tests: initdb in a
// temporary folder, postgres listening on a free loopback port (and a Unix
// socket in that folder), trust authentication, never the machine's own
// PostgreSQL service. Without PostgreSQL's binaries the test is skipped,
// unless CI is set (CI=true), where that is a failure (.ci/run installs
// the Debian postgresql package).
//
// PostgreSQL refuses to run as root, so under root the server runs as the
// "postgres" user (made by the Debian package), or "nobody", owning its
// folder.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// startDeadline bounds the wait for postgres to accept connections.
const startDeadline = 60 * time.Second

// Server is a PostgreSQL server owned by one test.
type Server struct {
	Addr string // 127.0.0.1:port
	t    testing.TB
	dir  string // owns data/ and the socket
	bin  string // PostgreSQL's bin folder
	cred *syscall.Credential
	cmd  *exec.Cmd
	done chan struct{}
}

// Options tune the server.
type Options struct {
	// NoFsync turns fsync off (data lost on a machine crash, not on a
	// process kill): for tests that only need SQL, never for durability
	// tests or benchmarks.
	NoFsync bool
}

// Start starts a PostgreSQL server with fsync on and stops it when the
// test ends.
func Start(t testing.TB) *Server { return StartWith(t, Options{}) }

// StartWith starts a PostgreSQL server with options o.
func StartWith(t testing.TB, o Options) *Server {
	t.Helper()
	skipWithout(t)
	s, err := launch(o)
	if err != nil {
		t.Fatal(err)
	}
	s.t = t
	t.Cleanup(s.remove)
	return s
}

func skipWithout(t testing.TB) {
	t.Helper()
	if findBin() == "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("PostgreSQL not installed (CI=%s): .ci/run installs the postgresql package", os.Getenv("CI"))
		}
		t.Skip("PostgreSQL (initdb, postgres) not installed")
	}
}

var shared struct {
	mu  sync.Mutex
	s   *Server
	err error
}

// Shared returns one server (fsync on) shared by all the tests of a
// package, started on first use; each test takes its own database with
// NewDatabase. The package's TestMain must be
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// so that the server is stopped when the tests end. Tests that stop, kill
// or restart a server start their own with Start.
func Shared(t testing.TB) *Server {
	t.Helper()
	skipWithout(t)
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.s == nil && shared.err == nil {
		shared.s, shared.err = launch(Options{})
	}
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.s
}

// Main runs the tests and then stops the Shared server, if one started.
func Main(m *testing.M) {
	code := m.Run()
	shared.mu.Lock()
	if shared.s != nil {
		shared.s.remove()
	}
	shared.mu.Unlock()
	os.Exit(code)
}

// launch initialises and starts a server in a new temporary folder.
func launch(o Options) (*Server, error) {
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir, bin: findBin()}
	if err := s.init(o); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		if s.Addr, err = freeAddr(); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		err = s.start()
		if err == nil {
			return s, nil
		}
		if attempt == 2 {
			os.RemoveAll(dir)
			return nil, err
		}
	}
}

func (s *Server) init(o Options) error {
	if os.Geteuid() == 0 {
		var err error
		if s.cred, err = unprivileged(); err != nil {
			return err
		}
		if err := os.Chown(s.dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			return err
		}
	}
	out, err := s.command("initdb", "-D", s.data(), "-A", "trust", "-U", "agua", "-E", "UTF8", "--no-sync", "--no-instructions").CombinedOutput()
	if err != nil {
		return fmt.Errorf("initdb: %v\n%s", err, out)
	}
	conf := "listen_addresses = '127.0.0.1'\nunix_socket_directories = '" + s.dir + "'\nmax_connections = 300\nshared_buffers = 32MB\nlog_min_messages = warning\nlogging_collector = off\n"
	if o.NoFsync {
		conf += "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
	}
	f, err := os.OpenFile(filepath.Join(s.data(), "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(conf)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// remove stops the server and deletes its folder.
func (s *Server) remove() {
	s.Stop()
	os.RemoveAll(s.dir)
}

// URL is the connection URL of database db (created by NewDatabase, or
// "postgres", which always exists).
func (s *Server) URL(db string) string {
	return fmt.Sprintf("postgres://agua@%s/%s?sslmode=disable", s.Addr, db)
}

var dbSeq atomic.Int64

// NewDatabase creates an empty database and returns its URL, so that tests
// sharing a server do not see each other's tables.
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d_%d", os.Getpid(), dbSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	return s.URL(name)
}

func (s *Server) data() string { return filepath.Join(s.dir, "data") }

func (s *Server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	return cmd
}

func (s *Server) start() error {
	_, port, _ := net.SplitHostPort(s.Addr)
	s.cmd = s.command("postgres", "-D", s.data(), "-p", port)
	logf, err := os.Create(filepath.Join(s.dir, "postgres.log"))
	if err != nil {
		return err
	}
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	logf.Close()
	exited := make(chan error, 1)
	s.done = make(chan struct{})
	go func() { exited <- s.cmd.Wait() }()
	deadline := time.Now().Add(startDeadline)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			log, _ := os.ReadFile(filepath.Join(s.dir, "postgres.log"))
			return fmt.Errorf("postgres on %s exited: %v\n%s", s.Addr, err, log)
		default:
		}
		if s.ping() {
			done := s.done
			go func() { <-exited; close(done) }()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.cmd.Process.Kill()
	<-exited
	return fmt.Errorf("postgres on %s did not accept connections within %s", s.Addr, startDeadline)
}

func (s *Server) ping() bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		return false
	}
	defer c.Close(ctx)
	return c.Ping(ctx) == nil
}

// Stop shuts the server down fast (SIGINT: running transactions are rolled
// back, committed ones are on disk) and waits for it to exit.
func (s *Server) Stop() { s.signal(syscall.SIGINT) }

// Kill kills the server and all its processes with SIGKILL, as a crash:
// on the next start it recovers from its write-ahead log.
func (s *Server) Kill() { s.signal(syscall.SIGKILL) }

func (s *Server) signal(sig syscall.Signal) {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	if sig == syscall.SIGKILL {
		// Backends keep answering their connections for a moment after
		// the postmaster alone dies, and each runs in a session of its own
		// (setsid): kill them by parent.
		for _, pid := range children(s.cmd.Process.Pid) {
			syscall.Kill(pid, sig)
		}
		s.cmd.Process.Signal(sig)
	} else {
		s.cmd.Process.Signal(sig)
	}
	select {
	case <-s.done:
	case <-time.After(startDeadline):
		s.cmd.Process.Kill()
		<-s.done
	}
	if sig == syscall.SIGKILL {
		// The postmaster's children may outlive it for a moment; wait until
		// the port is free so that Restart can take it.
		deadline := time.Now().Add(startDeadline)
		for s.ping() && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	s.cmd = nil
}

// children lists the processes whose parent is pid (from /proc).
func children(pid int) []int {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var out []int
	for _, st := range stats {
		b, err := os.ReadFile(st)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			if c, err := strconv.Atoi(filepath.Base(filepath.Dir(st))); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

// Restart starts the server again on the same port with the same data
// (after Stop or Kill).
func (s *Server) Restart() {
	if s.cmd != nil {
		s.Stop()
	}
	var err error
	for attempt := 0; attempt < 50; attempt++ {
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond) // the old postmaster's socket
	}
	if s.t == nil {
		panic(err)
	}
	s.t.Fatal(err)
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// findBin returns the folder holding initdb and postgres: PATH first, then
// Debian's /usr/lib/postgresql/<version>/bin, newest version first.
func findBin() string {
	if p, err := exec.LookPath("initdb"); err == nil {
		d := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d
		}
	}
	vs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(vs, func(i, j int) bool { return version(vs[i]) > version(vs[j]) })
	for _, d := range vs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d
		}
	}
	return ""
}

func version(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// unprivileged is the user postgres runs as when the test runs as root.
func unprivileged() (*syscall.Credential, error) {
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
	}
	return nil, errors.New("running as root and no postgres or nobody user to run PostgreSQL as")
}
