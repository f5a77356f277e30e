package shield

import (
	"bufio"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

var (
	millionOnce sync.Once
	millionFile string
	millionErr  error
)

// millionRules writes (once per test binary) a rules file of 1,000,000
// lines: IPv4 /32 and /24 denies with mixed actions, IPv6 /48 and /64
// denies, some allows and comments.
func millionRules(b *testing.B) string {
	millionOnce.Do(func() {
		dir, err := os.MkdirTemp("", "shield-bench")
		if err != nil {
			millionErr = err
			return
		}
		millionFile = filepath.Join(dir, "million.rules")
		f, err := os.Create(millionFile)
		if err != nil {
			millionErr = err
			return
		}
		w := bufio.NewWriterSize(f, 1<<20)
		r := rand.New(rand.NewPCG(1, 2))
		actions := []string{"", " drop", " tarpit", " reject"}
		for i := range 1_000_000 {
			switch i % 10 {
			case 0:
				fmt.Fprintf(w, "# block %d\n", i)
			case 1, 2:
				fmt.Fprintf(w, "deny %d.%d.%d.0/24%s\n", 1+r.IntN(222), r.IntN(256), r.IntN(256), actions[i%4])
			case 3:
				fmt.Fprintf(w, "deny 2001:db8:%x:%x::/64%s\n", r.IntN(65536), r.IntN(65536), actions[i%4])
			case 4:
				fmt.Fprintf(w, "allow %d.%d.%d.%d\n", 1+r.IntN(222), r.IntN(256), r.IntN(256), r.IntN(256))
			default:
				fmt.Fprintf(w, "%d.%d.%d.%d%s # scanner\n", 1+r.IntN(222), r.IntN(256), r.IntN(256), r.IntN(256), actions[i%4])
			}
		}
		if err := w.Flush(); err != nil {
			millionErr = err
		}
		f.Close()
	})
	if millionErr != nil {
		b.Fatal(millionErr)
	}
	return millionFile
}

// BenchmarkLoad1MRules parses and compiles a 1,000,000-line rules file.
func BenchmarkLoad1MRules(b *testing.B) {
	file := millionRules(b)
	cfg := DefaultConfig()
	cfg.RuleFiles = []string{file}
	b.ReportAllocs()
	for b.Loop() {
		p, err := compilePolicy(&cfg)
		if err != nil {
			b.Fatal(err)
		}
		if p.size() < 800_000 {
			b.Fatal(p.size())
		}
	}
}

// BenchmarkDecide1MRules is the accept decision (rules, bans, lockdown,
// limits) against 1,000,000 rules, for a mix of denied and allowed
// addresses.
func BenchmarkDecide1MRules(b *testing.B) {
	file := millionRules(b)
	cfg := DefaultConfig()
	cfg.RuleFiles = []string{file}
	s, err := New(cfg, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	r := rand.New(rand.NewPCG(3, 4))
	addrs := make([]netip.Addr, 4096)
	hosts := s.pol.Load().hosts4
	for i := range addrs {
		if i%4 == 0 {
			// An address with a host rule (deny or allow).
			k := uint32(hosts[r.IntN(len(hosts))] >> 32)
			addrs[i] = netip.AddrFrom4([4]byte{byte(k >> 24), byte(k >> 16), byte(k >> 8), byte(k)})
		} else if i%2 == 0 {
			addrs[i] = netip.AddrFrom4([4]byte{byte(1 + r.IntN(222)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
		} else {
			var a [16]byte
			a[0], a[1], a[2], a[3] = 0x20, 0x01, 0x0d, 0xb8
			a[4], a[5], a[6], a[7] = byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))
			a[15] = 1
			addrs[i] = netip.AddrFrom16(a)
		}
	}
	denied := 0
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if s.Decide(addrs[i%len(addrs)], "smtp").Action != Allow {
			denied++
		}
		i++
	}
	b.ReportMetric(float64(denied)/float64(i), "denied/op")
}

// BenchmarkAdmitDenied is the accept path for a client denied by one of
// 1,000,000 rules (what a flood costs per connection, without syscalls).
func BenchmarkAdmitDenied(b *testing.B) {
	file := millionRules(b)
	cfg := DefaultConfig()
	cfg.RuleFiles = []string{file}
	cfg.Rules = []string{"deny 203.0.113.0/24 drop"}
	s, err := New(cfg, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	l := s.Listener(dummyListener{}, ListenerConfig{Name: "smtp"}).(*listener)
	addr := mustAddr("203.0.113.7")
	now := s.now()
	b.ReportAllocs()
	for b.Loop() {
		if d, _, _ := s.admit(l, addr, now); d.Action != Drop {
			b.Fatal(d)
		}
		s.agg.add(hostPrefix(addr), "x", Drop, false)
	}
}

// TestRefusalDoesNotAllocate: refusing a denied or banned client allocates
// nothing (a flood costs no garbage).
func TestRefusalDoesNotAllocate(t *testing.T) {
	h := newHarness(t, testConfig(), Options{})
	cfg := testConfig()
	cfg.Rules = []string{"deny 203.0.113.0/24 drop"}
	h = newHarness(t, cfg, Options{})
	l := h.s.Listener(dummyListener{}, ListenerConfig{Name: "smtp"}).(*listener)
	h.s.report(nil, mustAddr("192.0.2.1"), PreGreet, h.clock.Now())
	now := h.clock.Now()
	for _, a := range []string{"203.0.113.7", "192.0.2.1"} {
		addr := mustAddr(a)
		h.s.agg.add(hostPrefix(addr), "x", Drop, false) // first key allocates
		n := testing.AllocsPerRun(100, func() {
			if d, _, _ := h.s.admit(l, addr, now); d.Action == Allow {
				t.Fatal("admitted")
			}
			h.s.agg.add(hostPrefix(addr), "x", Drop, false)
		})
		if n != 0 {
			t.Errorf("%s: %v allocations per refusal", a, n)
		}
	}
}

type dummyListener struct{}

func (dummyListener) Accept() (net.Conn, error) { return nil, net.ErrClosed }
func (dummyListener) Close() error              { return nil }
func (dummyListener) Addr() net.Addr            { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
