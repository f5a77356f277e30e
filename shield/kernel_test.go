package shield

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// netns is a network namespace made for one test.
type netns struct {
	t    *testing.T
	name string
	path string
}

// newNetns creates a network namespace with its loopback up, or skips the
// test when this process may not (not root, no CAP_NET_ADMIN, no ip).
func newNetns(t *testing.T) *netns {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("kernel offload test skipped: ip (iproute2) is not installed")
	}
	name := fmt.Sprintf("aguatest%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		if os.Geteuid() != 0 || strings.Contains(string(out), "ermission") {
			t.Skipf("kernel offload test skipped: needs root or CAP_NET_ADMIN to create a network namespace (%s)", strings.TrimSpace(string(out)))
		}
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	ns := &netns{t: t, name: name, path: "/run/netns/" + name}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("ip link set lo up: %v: %s", err, out)
	}
	return ns
}

// do runs fn on an OS thread inside the namespace: sockets made there
// belong to it for good.
func (ns *netns) do(fn func()) {
	ns.t.Helper()
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		ns.t.Fatal(err)
	}
	defer orig.Close()
	target, err := os.Open(ns.path)
	if err != nil {
		runtime.UnlockOSThread()
		ns.t.Fatal(err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		ns.t.Fatal(err)
	}
	defer func() {
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			return // leave the thread locked: it dies with its goroutine
		}
		runtime.UnlockOSThread()
	}()
	fn()
}

// dial connects from src inside the namespace.
func (ns *netns) dial(addr, src string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	var err error
	ns.do(func() {
		d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err = d.Dial("tcp", addr)
	})
	return c, err
}

// nftTables lists the namespace's nftables tables (with nft, the test's
// own check; the shield itself talks netlink).
func (ns *netns) nftTables() string {
	out, err := exec.Command("ip", "netns", "exec", ns.name, "nft", "list", "tables").CombinedOutput()
	if err != nil {
		ns.t.Logf("nft list tables: %v: %s", err, out)
	}
	return string(out)
}

// TestKernelOffload: in a network namespace, a prefix denied with drop
// and an operator's drop block are mirrored into nftables: their SYNs are
// dropped by the kernel (the connect times out, the shield never sees the
// connection) and the drop counter rises; an address outside is served.
// Close removes the table.
func TestKernelOffload(t *testing.T) {
	ns := newNetns(t)
	cfg := testConfig()
	cfg.Kernel.Enabled = true
	cfg.Kernel.Table = "aguatest"
	cfg.Rules = []string{"deny 127.0.70.0/24 drop", "allow 127.0.73.5", "deny 127.0.73.0/24 drop"}
	s, err := New(cfg, Options{KernelNetNS: ns.path})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			s.Close()
		}
	}()
	var inner net.Listener
	ns.do(func() { inner, err = net.Listen("tcp", "127.0.0.1:0") })
	if err != nil {
		t.Fatal(err)
	}
	ln := s.Listener(inner, ListenerConfig{Name: "k", Reject: replyReject})
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c)
		}
	}()
	addr := inner.Addr().String()
	s.kernelSync() // the listener's port (housekeeping would within a second)
	if !strings.Contains(ns.nftTables(), "table inet aguatest") {
		t.Fatalf("no table inet aguatest in the namespace")
	}
	if st := s.Stats().Kernel; !st.Enabled || st.Elements != 1 {
		// 127.0.73.0/24 overlaps an allowed address: the shield keeps it.
		t.Fatalf("kernel stats %+v: want the one drop rule mirrored", st)
	}

	served := func(src string) {
		t.Helper()
		c, err := ns.dial(addr, src, 5*time.Second)
		if err != nil {
			t.Fatalf("dial from %s: %v", src, err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 16)
		if n, err := c.Read(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "220") {
			t.Fatalf("from %s: %q, %v", src, buf[:n], err)
		}
	}
	droppedByKernel := func(src string) {
		t.Helper()
		before := s.Stats().Kernel.Packets
		c, err := ns.dial(addr, src, time.Second)
		if err == nil {
			c.Close()
			t.Fatalf("connection from %s went through", src)
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("dial from %s: %v, want a timeout (SYN dropped)", src, err)
		}
		if after := s.Stats().Kernel.Packets; after <= before {
			t.Fatalf("kernel drop counter %d -> %d after a dropped SYN from %s", before, after, src)
		}
	}
	start := time.Now().Add(-time.Minute)
	droppedByKernel("127.0.70.5")
	// The kernel's drops reach the history (reports, dashboard) as the
	// prefix's refusals, source "kernel".
	var kernelRefused uint64
	for _, a := range s.History(start) {
		for _, r := range a.Refused {
			if a.Addr == mustPrefix("127.0.70.0/24") && r.Source == "kernel" && r.Action == Drop {
				kernelRefused += r.Count
			}
		}
	}
	if kernelRefused == 0 {
		t.Fatalf("the history does not count the kernel's drops for 127.0.70.0/24: %+v", s.History(start))
	}
	served("127.0.71.5")
	served("127.0.73.5") // allowed inside a drop rule that stays in the shield
	if st := s.Stats().Listeners["k"]; st.Dropped != 0 || st.Accepted != 2 {
		t.Fatalf("listener stats %+v: the shield saw a connection the kernel should have dropped", st)
	}

	// An operator's drop block is mirrored too, and lifted with it.
	if err := s.Ban(mustPrefix("127.0.72.0/24"), time.Hour, "test", Drop); err != nil {
		t.Fatal(err)
	}
	s.kernelSync()
	if out, err := exec.Command("ip", "netns", "exec", ns.name, "nft", "list", "table", "inet", "aguatest").CombinedOutput(); err != nil || !regexp.MustCompile(`127\.0\.72\.0/24 [^,}]*timeout`).Match(out) {
		t.Fatalf("the block is not in the set with its timeout: %v\n%s", err, out)
	} else {
		t.Logf("nft list table inet aguatest:\n%s", out)
	}
	droppedByKernel("127.0.72.9")
	s.Unban(mustPrefix("127.0.72.0/24"))
	s.kernelSync()
	served("127.0.72.9")
	if st := s.Stats().Kernel; st.Packets == 0 || st.Bytes == 0 {
		t.Fatalf("kernel stats %+v", st)
	}

	// A behaviour ban is mirrored from kernel.ban_level (2) on: the
	// first ban of an address is not, its repeat is.
	cfg2 := cfg
	cfg2.Thresholds = maps.Clone(cfg.Thresholds)
	cfg2.Thresholds.SetCount("protocol_error", 1)
	if err := s.Reconfigure(cfg2); err != nil {
		t.Fatal(err)
	}
	bad := mustAddr("127.0.74.4")
	if d := s.report(nil, bad, ProtocolError, s.now()); d.Action == Allow {
		t.Fatal("protocol error with threshold 1 not banned")
	}
	s.kernelSync()
	if n := s.Stats().Kernel.Elements; n != 1 {
		t.Fatalf("a first ban was mirrored: %d elements", n)
	}
	s.Unban(hostPrefix(bad))
	s.report(nil, bad, ProtocolError, s.now())
	s.kernelSync()
	if n := s.Stats().Kernel.Elements; n != 2 {
		t.Fatalf("a repeat ban (level 2) was not mirrored: %d elements", n)
	}
	droppedByKernel("127.0.74.4")

	closed = true
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if out := ns.nftTables(); strings.Contains(out, "aguatest") {
		t.Fatalf("table left after Close:\n%s", out)
	}
}

// TestKernelOffloadNeedsCapability: without CAP_NET_ADMIN, New refuses
// [shield.kernel] with one clear error. The test runs itself again with
// the capability dropped (setpriv).
func TestKernelOffloadNeedsCapability(t *testing.T) {
	if os.Getenv("AGUA_TEST_NOCAP") == "1" {
		cfg := testConfig()
		cfg.Kernel.Enabled = true
		_, err := New(cfg, Options{})
		fmt.Printf("RESULT %v\n", err)
		if !errors.Is(err, ErrKernelPermission) {
			os.Exit(3)
		}
		return
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil || os.Geteuid() != 0 {
		t.Skip("skipped: needs root and setpriv (util-linux) to run without CAP_NET_ADMIN")
	}
	cmd := exec.Command(setpriv, "--bounding-set", "-net_admin", os.Args[0], "-test.run", "^TestKernelOffloadNeedsCapability$", "-test.count=1")
	cmd.Env = append(os.Environ(), "AGUA_TEST_NOCAP=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("without CAP_NET_ADMIN: %v\n%s", err, out)
	}
	line := ""
	for _, l := range strings.Split(string(out), "\n") {
		if r, ok := strings.CutPrefix(l, "RESULT "); ok {
			line = r
		}
	}
	if !strings.Contains(line, "needs CAP_NET_ADMIN") || strings.Contains(line, "\n") {
		t.Fatalf("error without CAP_NET_ADMIN: %q", line)
	}
	t.Logf("without CAP_NET_ADMIN: %s", line)
}
