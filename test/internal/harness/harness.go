// Package harness runs the real agua binary for the end-to-end tests below
// test/: it builds cmd/agua once per test binary, writes a config with free
// loopback ports, runs CLI verbs (`agua domain add`, `agua user add`) and
// starts, kills (SIGKILL) and stops (SIGTERM) `agua serve` as a subprocess.
//
// Every wait is bounded by a deadline, so a broken server fails a test
// instead of hanging the suite, and every subprocess is killed at cleanup.
package harness

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Deadlines for the subprocesses. They bound waits so a broken server cannot
// hang the suite; no test asserts how long anything takes.
const (
	buildTimeout = 5 * time.Minute
	cliTimeout   = 30 * time.Second
	readyTimeout = 30 * time.Second
	stopTimeout  = 20 * time.Second
	killTimeout  = 10 * time.Second
	dialTimeout  = time.Second
)

var (
	workDir   string // set by Main; holds the built binary
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Main runs the tests of a package that uses the harness; call it from
// TestMain: os.Exit(harness.Main(m)). The binary is built on first use, so
// a run that selects no end-to-end test builds nothing.
func Main(m *testing.M) int {
	dir, err := os.MkdirTemp("", "agua-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "harness:", err)
		return 1
	}
	workDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	return code
}

// BinaryEnv names an environment variable that may hold the path of an
// agua binary to test instead of building cmd/agua from this tree (CI can
// build once and test that exact binary).
const BinaryEnv = "AGUA_TEST_BINARY"

// Binary returns the path of the agua binary, building it on first call
// unless BinaryEnv names one.
func Binary(t testing.TB) string {
	t.Helper()
	if workDir == "" {
		t.Fatal("harness: TestMain must call harness.Main")
	}
	buildOnce.Do(func() {
		if p := os.Getenv(BinaryEnv); p != "" {
			binPath, buildErr = filepath.Abs(p)
			return
		}
		binPath, buildErr = build(workDir)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func build(dir string) (string, error) {
	// go test runs packages in parallel: serialise their builds so the
	// second one is a build-cache hit instead of compiling everything
	// again on the same cores.
	if lock, err := os.OpenFile(filepath.Join(os.TempDir(), "agua-e2e-build.lock"), os.O_CREATE|os.O_RDWR, 0o600); err == nil {
		defer lock.Close()
		if syscall.Flock(int(lock.Fd()), syscall.LOCK_EX) == nil {
			defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
		}
	}
	out := filepath.Join(dir, "agua")
	args := []string{"build", "-buildvcs=false", "-o", out}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "github.com/agua-mail/agua/cmd/agua")
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	// go test puts $GOROOT/bin first in PATH, so this is the same toolchain.
	cmd := exec.CommandContext(ctx, "go", args...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("harness: go %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return out, nil
}

// Options shape the generated config.
type Options struct {
	// SMTP holds extra lines for the [smtp] table, e.g.
	// "allow_insecure_auth_loopback = false".
	SMTP string
	// Extra is appended after every generated table (whole tables only).
	Extra string
	// Demo keeps the demo account of a first start ([accounts] demo).
	Demo bool
}

// Server is one agua data folder and config, and the `agua serve` process
// running on it, if any.
type Server struct {
	Bin        string
	Dir        string // working folder: config, log, data
	DataDir    string
	ConfigPath string
	LogPath    string // stdout and stderr of every start, appended

	// Listener addresses (127.0.0.1:port), from Addrs.
	SMTP, Submission, Submissions string
	POP3, POP3S                   string // "" if the binary has no POP3
	IMAP, IMAPS                   string // "" if the binary has no IMAP
	Admin                         string // HTTP admin listener, "" if none

	// Addrs holds the free port given to every listener key of the
	// binary's config, by dotted key ("smtp.listen", "pop3.tls_listen").
	Addrs map[string]string

	proc   *process
	starts int
}

type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // from Wait, valid after done
}

// listenerKey is a config key whose default is a host:port, or a list of
// them: a listener that must get a free port so tests can run in parallel.
type listenerKey struct {
	table, key string
	list       bool
}

var (
	keysOnce    sync.Once
	keys        []listenerKey
	keysErr     error
	tableRe     = regexp.MustCompile(`^\[([A-Za-z0-9_.]+)\]$`)
	listenValRe = regexp.MustCompile(`^([A-Za-z0-9_]+) = (\[)?"(?:\[[0-9A-Fa-f:.]+\]|[0-9.]+|localhost):[0-9]+"`)
)

// listenerKeys reads `agua config example` (generated from the config
// schema) and returns every key whose default is an address with a port,
// so a listener added to agua later gets a free port here without a
// change to the harness.
func listenerKeys(t testing.TB, bin string) []listenerKey {
	t.Helper()
	keysOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
		defer cancel()
		out, err := exec.CommandContext(ctx, bin, "config", "example").Output()
		if err != nil {
			keysErr = fmt.Errorf("harness: agua config example: %v", err)
			return
		}
		table := ""
		for line := range strings.Lines(string(out)) {
			line = strings.TrimSpace(line)
			if m := tableRe.FindStringSubmatch(line); m != nil {
				table = m[1]
				continue
			}
			if m := listenValRe.FindStringSubmatch(line); m != nil {
				keys = append(keys, listenerKey{table: table, key: m[1], list: m[2] == "["})
			}
		}
	})
	if keysErr != nil {
		t.Fatal(keysErr)
	}
	return keys
}

// New writes a config with free loopback ports into a fresh temporary
// folder. Nothing runs until Start. The server is killed at cleanup, and
// its log is shown if the test failed.
func New(t testing.TB, opts Options) *Server {
	t.Helper()
	s := &Server{Bin: Binary(t), Dir: t.TempDir(), Addrs: map[string]string{}}
	s.DataDir = filepath.Join(s.Dir, "data")
	s.ConfigPath = filepath.Join(s.Dir, "agua.toml")
	s.LogPath = filepath.Join(s.Dir, "agua.log")

	// Tables in the order of the example, with the harness's own keys.
	tables := map[string][]string{
		"":         {fmt.Sprintf("data_dir = %q", s.DataDir), `hostname = "localhost"`},
		"log":      {`level = "info"`},
		"accounts": {fmt.Sprintf("demo = %t", opts.Demo)},
	}
	order := []string{"", "log", "accounts"}
	lks := listenerKeys(t, s.Bin)
	ports := FreePorts(t, len(lks))
	for i, k := range lks {
		if _, ok := tables[k.table]; !ok {
			order = append(order, k.table)
		}
		val := strconv.Quote(ports[i])
		if k.list {
			val = "[" + val + "]"
		}
		tables[k.table] = append(tables[k.table], k.key+" = "+val)
		s.Addrs[strings.TrimPrefix(k.table+"."+k.key, ".")] = ports[i]
	}
	if _, ok := tables["smtp"]; !ok {
		order = append(order, "smtp")
	}
	tables["smtp"] = append(tables["smtp"], opts.SMTP)
	// Mail queued for other domains must never reach the system's DNS:
	// the resolver is a loopback port where nothing answers (delivery
	// defers), unless the test brings its own [dns].
	if !strings.Contains(opts.Extra, "[dns]") {
		order = append(order, "dns")
		tables["dns"] = []string{fmt.Sprintf("resolver = [%q]", FreePorts(t, 1)[0])}
	}
	var b strings.Builder
	b.WriteString("# written by test/internal/harness\n")
	for _, table := range order {
		if table != "" {
			fmt.Fprintf(&b, "\n[%s]\n", table)
		}
		for _, line := range tables[table] {
			b.WriteString(line + "\n")
		}
	}
	b.WriteString(opts.Extra + "\n")
	cfg := b.String()

	s.SMTP, s.Submission, s.Submissions = s.Addrs["smtp.listen"], s.Addrs["smtp.submission_listen"], s.Addrs["smtp.submissions_listen"]
	s.POP3, s.POP3S, s.Admin = s.Addrs["pop3.listen"], s.Addrs["pop3.tls_listen"], s.Addrs["admin.listen"]
	s.IMAP, s.IMAPS = s.Addrs["imap.listen"], s.Addrs["imap.tls_listen"]
	if s.SMTP == "" || s.Submission == "" || s.Submissions == "" {
		t.Fatalf("harness: agua config example lacks an SMTP listener key; found %v", lks)
	}
	if err := os.WriteFile(s.ConfigPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	// Registered after t.TempDir, so it runs before the folder is removed.
	t.Cleanup(func() {
		if s.running() {
			s.proc.cmd.Process.Kill()
			s.waitExit(killTimeout)
		}
		// A race report (binary built with -race) or a recovered session
		// panic is a bug even when every client got what it expected.
		log := s.Log()
		for _, bad := range []string{"WARNING: DATA RACE", "session panic"} {
			if i := strings.Index(log, bad); i >= 0 {
				t.Errorf("agua log contains %q:\n%s", bad, log[i:min(len(log), i+4000)])
			}
		}
		if t.Failed() {
			t.Logf("agua log (%s), last lines:\n%s", s.LogPath, s.LogTail(80))
		}
	})
	return s
}

// FreePorts returns n distinct free loopback addresses. The ports are taken
// below the kernel's ephemeral range when it leaves room, because a test
// that kills agua restarts it on the same ports: an ephemeral port can
// meanwhile become the source port of any outgoing connection on the
// machine, and the restart would fail with "address already in use".
// Another program may still take a port before agua binds it.
func FreePorts(t testing.TB, n int) []string {
	t.Helper()
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	addrs := make([]string, 0, n)
	if lo, ok := ephemeralLow(); ok && lo > lowPortMin+1000 {
		for tries := 0; len(addrs) < n && tries < 50*n; tries++ {
			port := lowPortMin + mrand.IntN(lo-lowPortMin)
			ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
			if err != nil {
				continue // in use
			}
			lns = append(lns, ln) // held until all are chosen, so they differ
			addrs = append(addrs, ln.Addr().String())
		}
	}
	for len(addrs) < n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs
}

// lowPortMin is the lowest port FreePorts picks itself, above the
// well-known and most registered service ports.
const lowPortMin = 20000

// ephemeralLow returns the first port of Linux's ephemeral range.
func ephemeralLow() (int, bool) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, false
	}
	lo, err := strconv.Atoi(f[0])
	return lo, err == nil
}

// Agua runs a CLI verb with -config, stdin as its standard input, and
// returns its standard output; a non-zero exit fails the test.
func (s *Server) Agua(t testing.TB, stdin, verb string, args ...string) string {
	t.Helper()
	out, err := s.TryAgua(stdin, verb, args...)
	if err != nil {
		t.Fatalf("agua %s %s: %v\n%s", verb, strings.Join(args, " "), err, out)
	}
	return out
}

// TryAgua is Agua returning the error (and stdout plus stderr) instead of
// failing.
func (s *Server) TryAgua(stdin, verb string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.Bin, append([]string{verb, "-config", s.ConfigPath}, args...)...)
	cmd.Dir = s.Dir
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

// AddUser creates the user's domain if needed and the user with password.
func (s *Server) AddUser(t testing.TB, addr, password string) {
	t.Helper()
	_, domain, ok := strings.Cut(addr, "@")
	if !ok {
		t.Fatalf("harness: bad address %q", addr)
	}
	if !strings.Contains(s.Agua(t, "", "domain", "list"), domain+"\n") {
		s.Agua(t, "", "domain", "add", domain)
	}
	s.Agua(t, password+"\n", "user", "add", addr)
}

// Start runs `agua serve -config FILE` and returns once the MX and
// submission listeners answer with a 220 banner and the implicit-TLS
// listener accepts connections. A server that exits or does not answer
// within the deadline fails the test with its log.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	s.Launch(t)
	s.WaitReady(t)
}

// Launch starts `agua serve` and returns at once, for tests that act
// during start-up; WaitReady waits for it to serve.
func (s *Server) Launch(t testing.TB) {
	t.Helper()
	if s.running() {
		t.Fatal("harness: Start while agua is running")
	}
	s.starts++
	logf, err := os.OpenFile(s.LogPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(logf, "===== harness: start %d at %s\n", s.starts, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(s.Bin, "serve", "-config", s.ConfigPath)
	cmd.Dir = s.Dir
	cmd.Stdout, cmd.Stderr = logf, logf // *os.File: no copying goroutines
	err = cmd.Start()
	logf.Close() // the child has its own descriptor
	if err != nil {
		t.Fatalf("harness: starting agua: %v", err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	s.proc = p
}

// WaitReady waits until a launched server serves, as Start describes.
func (s *Server) WaitReady(t testing.TB) {
	t.Helper()
	p := s.proc
	if p == nil {
		t.Fatal("harness: WaitReady before Launch")
	}
	deadline := time.Now().Add(readyTimeout)
	for _, check := range []struct {
		addr   string
		banner bool
	}{{s.SMTP, true}, {s.Submission, true}, {s.Submissions, false}} {
		for {
			err := probe(check.addr, check.banner)
			if err == nil {
				break
			}
			select {
			case <-p.done:
				t.Fatalf("harness: agua serve (start %d) exited before it was ready: %v\nlog:\n%s", s.starts, p.err, s.LogTail(40))
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("harness: agua serve (start %d) not ready after %v: %s: %v\nlog:\n%s", s.starts, readyTimeout, check.addr, err, s.LogTail(40))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// probe connects to addr and, if banner, reads a 220 greeting.
func probe(addr string, banner bool) error {
	c, err := net.DialTimeout("tcp", addr, dialTimeout)
	if err != nil {
		return err
	}
	defer c.Close()
	if !banner {
		return nil
	}
	c.SetDeadline(time.Now().Add(dialTimeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "220 ") {
		return fmt.Errorf("banner %q", strings.TrimSpace(line))
	}
	fmt.Fprintf(c, "QUIT\r\n")
	return nil
}

// PID returns the process id of the running server, or 0.
func (s *Server) PID() int {
	if !s.running() {
		return 0
	}
	return s.proc.cmd.Process.Pid
}

func (s *Server) running() bool {
	if s.proc == nil {
		return false
	}
	select {
	case <-s.proc.done:
		return false
	default:
		return true
	}
}

// Exited reports whether a started server has exited on its own, and how.
func (s *Server) Exited() (bool, error) {
	if s.proc == nil {
		return false, nil
	}
	select {
	case <-s.proc.done:
		return true, s.proc.err
	default:
		return false, nil
	}
}

func (s *Server) waitExit(d time.Duration) bool {
	select {
	case <-s.proc.done:
		return true
	case <-time.After(d):
		return false
	}
}

// Kill sends SIGKILL, as a crash or the OOM killer would, and waits for
// the process to be gone. A server that had already exited fails the test.
func (s *Server) Kill(t testing.TB) {
	t.Helper()
	if !s.running() {
		t.Fatalf("harness: Kill: agua is not running (exit: %v)", s.procErr())
	}
	if err := s.proc.cmd.Process.Kill(); err != nil {
		t.Fatalf("harness: kill: %v", err)
	}
	if !s.waitExit(killTimeout) {
		t.Fatalf("harness: agua still running %v after SIGKILL", killTimeout)
	}
}

// Stop sends SIGTERM and waits for a clean exit (status 0); a server that
// does not stop in time is killed and fails the test.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	s.Terminate(t)
	if err := s.Wait(t); err != nil {
		t.Errorf("harness: agua exited after SIGTERM with %v\nlog:\n%s", err, s.LogTail(40))
	}
}

// Terminate sends SIGTERM and returns at once.
func (s *Server) Terminate(t testing.TB) {
	t.Helper()
	if !s.running() {
		t.Fatalf("harness: Terminate: agua is not running (exit: %v)", s.procErr())
	}
	if err := s.proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("harness: SIGTERM: %v", err)
	}
}

// Wait waits for the server to exit and returns how it exited; one still
// running after the stop deadline is killed and fails the test.
func (s *Server) Wait(t testing.TB) error {
	t.Helper()
	if s.proc == nil {
		t.Fatal("harness: Wait before Launch")
	}
	if !s.waitExit(stopTimeout) {
		s.proc.cmd.Process.Kill()
		s.waitExit(killTimeout)
		t.Fatalf("harness: agua did not exit within %v; killed\nlog:\n%s", stopTimeout, s.LogTail(40))
	}
	return s.proc.err
}

func (s *Server) procErr() error {
	if s.proc == nil {
		return errors.New("never started")
	}
	if ok, err := s.Exited(); ok {
		return err
	}
	return nil
}

// LogTail returns the last n lines of the server log.
func (s *Server) LogTail(n int) string {
	b, err := os.ReadFile(s.LogPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.SplitAfter(string(b), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "")
}

// Log returns the whole server log.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.LogPath)
	return string(b)
}

// CertPath is the self-signed certificate agua generates on first start.
func (s *Server) CertPath() string { return filepath.Join(s.DataDir, "tls", "cert.pem") }

// Maildir returns the Maildir folder of a plain ASCII address
// (data/mail/<domain>/<local>), as documented in docs/ARCHITECTURE.md.
func (s *Server) Maildir(addr string) string {
	local, domain, _ := strings.Cut(strings.ToLower(addr), "@")
	return filepath.Join(s.DataDir, "mail", domain, local)
}

// MailFile is one message file of a Maildir.
type MailFile struct {
	Path string
	Data []byte
}

// Messages returns every file in the new/ and cur/ folders of addr's
// Maildir (a missing folder counts as empty).
func (s *Server) Messages(t testing.TB, addr string) []MailFile {
	t.Helper()
	var out []MailFile
	for _, sub := range []string{"new", "cur"} {
		dir := filepath.Join(s.Maildir(addr), sub)
		ents, err := os.ReadDir(dir)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			p := filepath.Join(dir, e.Name())
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, MailFile{Path: p, Data: b})
		}
	}
	return out
}
