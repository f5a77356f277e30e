package report

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/mailevents"
	"github.com/agua-mail/agua/shield"
	"golang.org/x/net/dns/dnsmessage"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// clock is the injected clock of the recorded attack.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// serve is a tiny line protocol that reports to the shield the way agua's
// protocol sessions do.
func serve(c net.Conn) {
	defer c.Close()
	fmt.Fprintf(c, "220 ready\r\n")
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		f := strings.Fields(line)
		var d shield.Decision
		switch {
		case len(f) == 0:
			d = shield.Report(c, shield.ProtocolError)
		case f[0] == "AUTH" && len(f) == 3:
			d = shield.ReportAuth(c, f[1], f[2] == "good")
		case f[0] == "RCPT" && len(f) == 2 && f[1] == "bad":
			d = shield.Report(c, mailevents.UnknownRecipient)
		case f[0] == "RCPT":
			d = shield.Report(c, mailevents.RecipientAccepted)
		case f[0] == "MSG":
			d = shield.Report(c, mailevents.MessageAccepted)
		case f[0] == "QUIT":
			fmt.Fprintf(c, "221 bye\r\n")
			return
		default:
			d = shield.Report(c, shield.ProtocolError)
		}
		if d.Denied() {
			fmt.Fprintf(c, "554 %s\r\n", d.Reason)
			return
		}
		fmt.Fprintf(c, "250 ok\r\n")
	}
}

type session struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dial(t *testing.T, addr, src string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return d.Dial("tcp", addr)
}

// open dials from src and reads the greeting.
func open(t *testing.T, addr, src string) *session {
	t.Helper()
	c, err := dial(t, addr, src)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s := &session{t: t, c: c, br: bufio.NewReader(c)}
	if l := s.read(); !strings.HasPrefix(l, "220") {
		t.Fatalf("%s: greeting %q", src, l)
	}
	return s
}

func (s *session) read() string {
	s.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	l, _ := s.br.ReadString('\n')
	return strings.TrimSpace(l)
}

func (s *session) cmd(line string) string {
	fmt.Fprintf(s.c, "%s\r\n", line)
	return s.read()
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 1000 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// recordAttack drives a shield listener with real loopback connections from
// many 127.x addresses under an injected clock and returns its history.
func recordAttack(t *testing.T) shield.HistorySnapshot {
	t.Helper()
	clk := &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	start := clk.Now()
	cfg := shield.DefaultConfig()
	cfg.Rules = []string{"deny 127.0.9.0/24 drop"}
	cfg.Limits.PerIPRate, cfg.Limits.PerIPBurst = 1000, 1000
	cfg.Limits.PerPrefixRate, cfg.Limits.PerPrefixBurst = 10000, 10000
	s, err := shield.New(cfg, shield.Options{Logger: slog.New(slog.DiscardHandler), Now: clk.Now, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := s.Listener(inner, shield.ListenerConfig{Name: "smtp", Reject: func(c net.Conn, d shield.Decision) {
		fmt.Fprintf(c, "554 %s\r\n", d.Reason)
	}})
	t.Cleanup(func() { ln.Close() })
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
	stats := func() shield.ListenerStats { return s.Stats().Listeners["smtp"] }

	// Minute 0: a connection flood from a denied network.
	for src, n := range map[string]int{"127.0.9.1": 300, "127.0.9.2": 200} {
		for range n {
			if c, err := dial(t, addr, src); err == nil {
				c.Close()
			}
		}
	}
	eventually(t, "flood refused", func() bool { return stats().Dropped == 500 })
	clk.Add(time.Minute)

	// Minute 1: brute force, harvesting and protocol errors until banned,
	// and a real user.
	bf := open(t, addr, "127.0.7.1")
	for range 10 {
		bf.cmd("AUTH bob wrong")
	}
	hv := open(t, addr, "127.0.7.2")
	for range 20 {
		hv.cmd("RCPT bad")
	}
	pe := open(t, addr, "127.0.6.1")
	for range 10 {
		pe.cmd("HELLO?")
	}
	user := open(t, addr, "127.0.5.1")
	user.cmd("AUTH alice good")
	user.cmd("RCPT ok")
	user.cmd("RCPT ok")
	user.cmd("MSG")
	user.cmd("QUIT")
	clk.Add(time.Minute)

	// Minute 2: the brute forcer comes back and is refused; the user is
	// served as known-good.
	for range 5 {
		if c, err := dial(t, addr, "127.0.7.1"); err == nil {
			c.Close()
		}
	}
	eventually(t, "banned client refused", func() bool { return stats().Rejected == 5 })
	user = open(t, addr, "127.0.5.1")
	user.cmd("MSG")
	user.cmd("QUIT")
	clk.Add(30 * time.Second)
	return s.HistorySnapshot(start, time.Minute)
}

// ptrServer is a minimal DNS server on loopback that answers PTR queries
// from a table and NXDOMAIN otherwise.
func ptrServer(t *testing.T, names map[string]string) (string, *atomic.Int64) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	queries := new(atomic.Int64)
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var p dnsmessage.Parser
			h, err := p.Start(buf[:n])
			if err != nil {
				continue
			}
			q, err := p.Question()
			if err != nil {
				continue
			}
			queries.Add(1)
			name, ok := names[q.Name.String()]
			rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired}
			if !ok || q.Type != dnsmessage.TypePTR {
				rh.RCode = dnsmessage.RCodeNameError
			}
			b := dnsmessage.NewBuilder(nil, rh)
			b.EnableCompression()
			b.StartQuestions()
			b.Question(q)
			if ok && q.Type == dnsmessage.TypePTR {
				b.StartAnswers()
				b.PTRResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60},
					dnsmessage.PTRResource{PTR: dnsmessage.MustNewName(name)})
			}
			msg, err := b.Finish()
			if err == nil {
				pc.WriteTo(msg, from)
			}
		}
	}()
	return pc.LocalAddr().String(), queries
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from %s (go test -update rewrites it):\n%s", name, path, got)
	}
}

// TestReportsGolden records an attack and compares every report format
// with its golden file.
func TestReportsGolden(t *testing.T) {
	snap := recordAttack(t)
	dns, queries := ptrServer(t, map[string]string{
		"1.9.0.127.in-addr.arpa.": "host1.attacker.example.",
		"2.9.0.127.in-addr.arpa.": "host2.attacker.example.",
		"1.7.0.127.in-addr.arpa.": "dsl-7-1.isp.example.net.",
	})
	ab := Abuse(context.Background(), snap, AbuseOptions{Hostname: "mx.example.net", Prefix4: 24,
		Resolver: &Resolver{Server: dns, Timeout: 2 * time.Second, Max: 10}})
	if queries.Load() == 0 {
		t.Error("no reverse DNS queries reached the test server")
	}
	var txt, csv, xarf, attack bytes.Buffer
	if err := ab.WriteText(&txt); err != nil {
		t.Fatal(err)
	}
	if err := ab.WriteCSV(&csv); err != nil {
		t.Fatal(err)
	}
	if err := ab.WriteXARF(&xarf); err != nil {
		t.Fatal(err)
	}
	if err := Attack(snap, AttackOptions{Hostname: "mx.example.net"}).WriteText(&attack); err != nil {
		t.Fatal(err)
	}
	golden(t, "abuse.txt", txt.Bytes())
	golden(t, "abuse.csv", csv.Bytes())
	golden(t, "abuse.xarf.json", xarf.Bytes())
	golden(t, "attack.txt", attack.Bytes())

	// The XARF output is valid JSON with the core fields of every report.
	var reports []map[string]any
	if err := json.Unmarshal(xarf.Bytes(), &reports); err != nil {
		t.Fatal(err)
	}
	// The flood refused by the operator's deny rule is no abuse to report.
	if len(reports) != 3 {
		t.Errorf("%d XARF reports, want 3 (brute force, harvester, protocol errors)", len(reports))
	}
	for _, r := range reports {
		for _, k := range []string{"xarf_version", "report_id", "timestamp", "reporter", "source_identifier", "class", "type", "protocol", "first_seen"} {
			if r[k] == nil {
				t.Errorf("report for %v lacks %s", r["source_identifier"], k)
			}
		}
	}
	// The legitimate user is in no abuse report, nor are the addresses
	// only refused by the operator's rule.
	for _, a := range []string{"127.0.5.1", "127.0.9.1", "127.0.9.2"} {
		if strings.Contains(txt.String(), a) {
			t.Errorf("%s was reported", a)
		}
	}
}

// TestResolverBounded: lookups stop at Max and a dead server costs at
// most the timeout per lookup.
func TestResolverBounded(t *testing.T) {
	dns, queries := ptrServer(t, map[string]string{})
	var offs []*Offender
	for i := range 20 {
		offs = append(offs, &Offender{Addr: netipPrefix(fmt.Sprintf("127.0.3.%d", i+1))})
	}
	(&Resolver{Server: dns, Timeout: time.Second, Max: 5}).resolve(context.Background(), offs)
	if queries.Load() > 10 { // the Go resolver may ask twice (search list, retries)
		t.Errorf("%d queries for at most 5 lookups", queries.Load())
	}
	for _, o := range offs {
		if o.PTR != "" {
			t.Errorf("%s resolved to %q", o.Addr, o.PTR)
		}
	}
}

func netipPrefix(s string) netip.Prefix {
	a := netip.MustParseAddr(s)
	return netip.PrefixFrom(a, a.BitLen())
}

// The summary's refusals add up: a dry run's "would block" (served) is
// not among their parts but on a line of its own. The old line read
// "connections refused: 5 (drop 3, reject 2, would_block 1)".
func TestAttackSummaryKeepsDryRunApart(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC)
	snap := shield.HistorySnapshot{Now: at.Add(time.Minute), Since: at, Step: time.Minute, Timeline: []shield.TimelinePoint{
		{Start: at, Admitted: 4, Refused: map[string]uint64{"drop": 3, "reject": 2, "would_block": 1}},
	}}
	var b bytes.Buffer
	if err := Attack(snap, AttackOptions{}).WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"  connections refused:  5 (drop 3, reject 2)\n",
		"  dry run:              1 served that a rule or limit in dry run would have refused\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("want %q in:\n%s", want, out)
		}
	}
}
