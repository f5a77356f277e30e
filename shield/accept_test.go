package shield

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// listening returns the backlog (ss's Send-Q) of every listening socket
// on port, as ss (iproute2) reports them from the kernel.
func listening(t *testing.T, port int) []int {
	t.Helper()
	out, err := exec.Command("ss", "-ltnH", fmt.Sprintf("sport = :%d", port)).Output()
	if err != nil {
		t.Skipf("ss (iproute2) not available: %v", err)
	}
	var backlogs []int
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == "LISTEN" {
			n, _ := strconv.Atoi(f[2])
			backlogs = append(backlogs, n)
		}
	}
	return backlogs
}

// TestListenReusePort: Listen binds accept.sockets sockets to one port,
// each with accept.backlog (as the kernel reports them); a shield listener
// on them accepts from every socket, and the PROXY protocol still works.
func TestListenReusePort(t *testing.T) {
	cfg := testConfig()
	cfg.Accept = AcceptConfig{Sockets: 4, Backlog: 77}
	cfg.TrustedProxies = []string{"127.0.0.1"}
	h := newHarness(t, cfg, Options{})
	inner, err := h.s.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := inner.Addr().(*net.TCPAddr).Port
	if got := listening(t, port); len(got) != 4 || got[0] != 77 || got[3] != 77 {
		t.Fatalf("listening sockets on port %d (backlogs): %v, want 4 × 77", port, got)
	}
	ln := h.s.Listener(inner, ListenerConfig{Name: "multi", Reject: replyReject, ProxyProtocol: true})
	defer ln.Close()
	var mu sync.Mutex
	remotes := map[string]bool{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			remotes[c.RemoteAddr().(*net.TCPAddr).IP.String()] = true
			mu.Unlock()
			go serve(c)
		}
	}()
	addr := inner.Addr().String()
	// The kernel hashes each connection's addresses and ports to a socket:
	// 200 connections from 50 sources reach all four (a socket missed has
	// a chance of (3/4)^200).
	for i := range 200 {
		cl := dialFrom(t, addr, fmt.Sprintf("127.0.60.%d", 1+i%50))
		cl.expect("220")
		cl.c.Close()
	}
	for i, k := range inner.(*multiListener).socks {
		if n := k.accepted.Load(); n == 0 {
			t.Errorf("socket %d accepted nothing", i)
		}
	}
	// A trusted proxy names its client in a PROXY v1 header.
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "PROXY TCP4 192.0.2.44 127.0.0.1 40000 %d\r\n", port)
	if l, err := bufio.NewReader(c).ReadString('\n'); err != nil || !strings.HasPrefix(l, "220") {
		t.Fatalf("through the proxy: %q, %v", l, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !remotes["192.0.2.44"] {
		t.Fatalf("the PROXY header's client was not seen; remotes %v", remotes)
	}
}

// TestListenPlainAccept: the listener Listen returns accepts from every
// socket on its own too (for a service that does not wrap it).
func TestListenPlainAccept(t *testing.T) {
	cfg := testConfig()
	cfg.Accept.Sockets = 3
	h := newHarness(t, cfg, Options{})
	inner, err := h.s.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	go func() {
		for {
			c, err := inner.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hi\n"))
			c.Close()
		}
	}()
	for i := range 60 {
		cl := dialFrom(t, inner.Addr().String(), fmt.Sprintf("127.0.61.%d", 1+i%20))
		cl.expect("hi")
	}
	for i, k := range inner.(*multiListener).socks {
		if k.accepted.Load() == 0 {
			t.Errorf("socket %d accepted nothing", i)
		}
	}
}

// TestListenKeepAlive: accepted connections have TCP keep-alive with Go's
// default settings, inherited from the listening sockets (Go sets nothing
// per connection), with one socket and with several.
func TestListenKeepAlive(t *testing.T) {
	for _, sockets := range []int{1, 3} {
		cfg := testConfig()
		cfg.Accept = AcceptConfig{Sockets: sockets}
		h := newHarness(t, cfg, Options{})
		inner, err := h.s.Listen(context.Background(), "tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		cl, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c, err := inner.Accept()
		if err != nil {
			t.Fatal(err)
		}
		rc, err := c.(syscall.Conn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]int{}
		rc.Control(func(fd uintptr) {
			for name, o := range map[string][2]int{
				"SO_KEEPALIVE":  {unix.SOL_SOCKET, unix.SO_KEEPALIVE},
				"TCP_KEEPIDLE":  {unix.IPPROTO_TCP, unix.TCP_KEEPIDLE},
				"TCP_KEEPINTVL": {unix.IPPROTO_TCP, unix.TCP_KEEPINTVL},
				"TCP_KEEPCNT":   {unix.IPPROTO_TCP, unix.TCP_KEEPCNT},
			} {
				v, err := unix.GetsockoptInt(int(fd), o[0], o[1])
				if err != nil {
					t.Errorf("%s: %v", name, err)
				}
				got[name] = v
			}
		})
		want := map[string]int{"SO_KEEPALIVE": 1, "TCP_KEEPIDLE": 15, "TCP_KEEPINTVL": 15, "TCP_KEEPCNT": 9}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%d sockets: accepted connection has %s = %d, want %d", sockets, k, got[k], v)
			}
		}
		c.Close()
		cl.Close()
		inner.Close()
	}
}

// TestAcceptDrainsKernelQueue: the accept loops empty the kernel's accept
// queue while the service's Accept is busy elsewhere (here: never called
// again), so a connect flood is held in the process, bounded by max_conns,
// instead of overflowing the kernel queue. Before, a loop waited for Accept
// with each connection it took, and the rest stayed in the kernel queue.
func TestAcceptDrainsKernelQueue(t *testing.T) {
	cfg := testConfig()
	cfg.Accept = AcceptConfig{Sockets: 1}
	h := newHarness(t, cfg, Options{})
	inner, err := h.s.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := h.s.Listener(inner, ListenerConfig{Name: "drain", MaxConns: 100})
	first := make(chan net.Conn, 1)
	go func() { // one Accept starts the loops; nothing takes the rest
		if c, err := ln.Accept(); err == nil {
			first <- c
		}
	}()
	addr := inner.Addr().String()
	const n = 60
	for i := range n {
		dialFrom(t, addr, fmt.Sprintf("127.0.62.%d", 1+i))
	}
	deadline := time.Now().Add(10 * time.Second)
	for h.s.Stats().Listeners["drain"].Accepted < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := h.s.Stats().Listeners["drain"].Accepted; got != n {
		t.Fatalf("%d of %d connections taken from the kernel queue while Accept was not called", got, n)
	}
	if q := acceptQueued(t, inner.Addr().(*net.TCPAddr).Port); q != 0 {
		t.Errorf("kernel accept queue holds %d connections", q)
	}
	// Closing the listener closes the connections nobody accepted.
	(<-first).Close()
	ln.Close()
	deadline = time.Now().Add(10 * time.Second)
	for h.s.Stats().Listeners["drain"].Active != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if a := h.s.Stats().Listeners["drain"].Active; a != 0 {
		t.Errorf("%d connections still open after Close", a)
	}
}

// acceptQueued returns the connections waiting in the accept queues of
// the listening sockets on port (ss's Recv-Q).
func acceptQueued(t *testing.T, port int) int {
	t.Helper()
	out, err := exec.Command("ss", "-ltnH", fmt.Sprintf("sport = :%d", port)).Output()
	if err != nil {
		t.Skipf("ss (iproute2) not available: %v", err)
	}
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "LISTEN" {
			q, _ := strconv.Atoi(f[1])
			n += q
		}
	}
	return n
}
