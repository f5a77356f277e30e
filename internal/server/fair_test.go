package server

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/config"
)

// Issue 13, fair capacity: a real user is a stranger to the server. While
// a botnet holds every slot strangers may use with idle connections, a
// never-seen client from another network still gets a greeting and
// completes its session: an idle connection of the network holding the
// largest share is closed for it (shield/fair.go).

// botsPerListener fill the share of a listener that clients that are not
// known-good may use: max_connections 1250 minus the 20% reserved for
// known-good clients.
const (
	botsPerListener = 1000
	fairMaxConns    = 1250
)

// startFairServer is a server whose listeners take 1,250 connections and
// whose per-network limits let 1,000 connections from ten /24s in: only
// listener capacity stands between the bots and the stranger.
func startFairServer(t *testing.T) *testServer {
	t.Helper()
	// The bots' ends and the server's, plus the server's own files.
	needFiles(t, 2*botsPerListener+1000)
	return startServer(t, func(c *config.Config) {
		c.SMTP.MaxConns, c.POP3.MaxConns, c.IMAP.MaxConns = fairMaxConns, fairMaxConns, fairMaxConns
		l := &c.Shield.Limits
		l.PerPrefixConns, l.PerPrefixBurst, l.PerPrefixRate = 200, 400, 400
		// Every connection that has said nothing since it was admitted is
		// idle: the test does not depend on how long the bots sat.
		l.EvictIdle = time.Nanosecond
	})
}

// holdIdle opens one connection from each source address, reads its first
// line and keeps it open, silent. It returns how many were greeted with
// greeting and the replies of the others.
func holdIdle(t *testing.T, addr string, srcs []string, greeting string) (greeted int, refused []string) {
	t.Helper()
	var mu sync.Mutex
	var held []net.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	work := make(chan string)
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for src := range work {
				d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
				c, err := d.Dial("tcp", addr)
				if err != nil {
					t.Errorf("bot %s: %v", src, err)
					continue
				}
				c.SetReadDeadline(time.Now().Add(20 * time.Second))
				line, err := bufio.NewReader(c).ReadString('\n')
				c.SetReadDeadline(time.Time{})
				mu.Lock()
				held = append(held, c)
				if strings.HasPrefix(line, greeting) {
					greeted++
				} else {
					refused = append(refused, fmt.Sprintf("%s: %q %v", src, line, err))
				}
				mu.Unlock()
			}
		})
	}
	for _, s := range srcs {
		work <- s
	}
	close(work)
	wg.Wait()
	return greeted, refused
}

// oneSlash16 is n addresses of 127.b.0.0/16, 100 in each /24.
func oneSlash16(b, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("127.%d.%d.%d", b, i/100, i%100+1)
	}
	return out
}

// manySlash16s is n addresses spread over the 64 /16s of 127.64.0.0/10,
// one per /24.
func manySlash16s(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("127.%d.%d.%d", 64+i%64, i/64, 9)
	}
	return out
}

// stranger runs a whole session of proto from src (never seen, not
// allowlisted) on ts.
func (ts *testServer) stranger(t *testing.T, proto, src string) {
	t.Helper()
	switch proto {
	case "smtp":
		c := dialFrom(t, ts.srv.Addr("smtp"), src)
		c.expect("220 ")
		c.cmd("EHLO stranger.example", "250")
		before := len(ts.messages(t, testUser))
		if got := c.deliver("someone@stranger.example", []string{testUser}, "Subject: from a stranger\r\n\r\nhello\r\n"); !strings.HasPrefix(got, "250 ") {
			t.Fatalf("stranger's message: %q", got)
		}
		c.cmd("QUIT", "221")
		if n := len(ts.messages(t, testUser)); n != before+1 {
			t.Fatalf("mailbox holds %d messages, want %d", n, before+1)
		}
	case "pop3":
		p := dialPOP(t, ts.srv.Addr("pop3"), src)
		p.login(testUser, testPass)
		p.do("STAT", "+OK")
		p.do("QUIT", "+OK")
	case "imap":
		c := dialIMAP(t, ts.srv.Addr("imap"), src)
		c.do(`a LOGIN "`+testUser+`" "`+testPass+`"`, "a OK")
		c.send("b SELECT INBOX")
		l := c.line("")
		for ; !strings.HasPrefix(l, "b "); l = c.line("") {
		}
		if !strings.HasPrefix(l, "b OK") {
			t.Fatalf("SELECT: %q", l)
		}
		c.do("c LOGOUT", "* BYE")
	}
}

var fairGreetings = map[string]string{"smtp": "220 ", "pop3": "+OK", "imap": "* OK"}

// TestStrangerServedWhileOneSlash16HoldsListener: 1,000 idle connections
// from 1,000 addresses of one /16 fill each listener; a bot of the /16's
// fullest /24 gets nothing more (it would only evict its own kind), a
// stranger from another /16 gets a greeting and completes its session.
// Before fair capacity the stranger got "421 4.7.0 ... busy".
func TestStrangerServedWhileOneSlash16HoldsListener(t *testing.T) {
	ts := startFairServer(t)
	for i, proto := range []string{"smtp", "pop3", "imap"} {
		t.Run(proto, func(t *testing.T) {
			addr := ts.srv.Addr(proto)
			bots := oneSlash16(10+i, botsPerListener)
			greeted, refused := holdIdle(t, addr, bots, fairGreetings[proto])
			if greeted != botsPerListener {
				t.Fatalf("%d of %d bots greeted; refused: %.5q", greeted, botsPerListener, refused)
			}
			// One more from the fullest /24 of the botnet: the listener
			// is full and its network already holds a largest share.
			_, refused = holdIdle(t, addr, []string{fmt.Sprintf("127.%d.0.150", 10+i)}, fairGreetings[proto])
			if len(refused) != 1 || !strings.Contains(refused[0], "busy") {
				t.Fatalf("a bot of the fullest /24: %q, want a busy refusal", refused)
			}
			ts.stranger(t, proto, fmt.Sprintf("127.%d.3.7", 200+i))
		})
	}
}

// TestStrangerServedWhileManySlash16sHoldListener: the same with the
// botnet spread over 64 /16s (127.64.0.0/10), one connection per /24.
func TestStrangerServedWhileManySlash16sHoldListener(t *testing.T) {
	ts := startFairServer(t)
	for i, proto := range []string{"smtp", "pop3", "imap"} {
		t.Run(proto, func(t *testing.T) {
			greeted, refused := holdIdle(t, ts.srv.Addr(proto), manySlash16s(botsPerListener), fairGreetings[proto])
			if greeted != botsPerListener {
				t.Fatalf("%d of %d bots greeted; refused: %.5q", greeted, botsPerListener, refused)
			}
			ts.stranger(t, proto, fmt.Sprintf("127.%d.9.1", 210+i))
		})
	}
}

// needFiles raises the soft limit on open files to at least n (Go raises it
// to the hard limit at start; a lower hard limit can be raised by root
// only), or fails with what the limit is.
func needFiles(t *testing.T, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur >= n {
		return
	}
	lim.Cur = max(n, lim.Cur)
	lim.Max = max(lim.Max, lim.Cur)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("this test holds %d open files and RLIMIT_NOFILE cannot be raised to it: %v", n, err)
	}
}

// TestBotnetFloodLeavesLegitDelivery (issue 13, botnet message floods): 20
// addresses of one /16 deliver 10 messages each, as fast as they can, every
// one under the per-address limits, through a delivery queue of 2 slots;
// strangers from five other networks, never seen before, deliver meanwhile.
// Every legitimate message is accepted and committed, and the queue served
// strangers while the flood waited: every sender's first message as a
// stranger's (the flood's too), their further ones as repeats, at most one
// slot of the two at once (shield.Gate: the order itself is checked in
// shield's TestGateFairOrder, TestGateRepeatsWaitBehindFirstMessages and
// TestGateRepeatOrder).
func TestBotnetFloodLeavesLegitDelivery(t *testing.T) {
	ts := startServer(t, func(c *config.Config) { c.SMTP.DeliverySlots = 2 })
	addr := ts.srv.Addr("smtp")
	const bots, each, strangers, legitEach = 20, 10, 5, 4
	send := func(src, subject string, n int) {
		c := dialFrom(t, addr, src)
		c.expect("220 ")
		c.cmd("EHLO "+strings.ReplaceAll(src, ".", "-")+".example", "250")
		for i := range n {
			if got := c.deliver("x@"+src+".example", []string{testUser}, fmt.Sprintf("Subject: %s %d\r\n\r\nbody\r\n", subject, i)); !strings.HasPrefix(got, "250 ") {
				t.Errorf("%s message %d: %q", src, i, got)
				return
			}
		}
		c.cmd("QUIT", "221")
	}
	var flood, legit sync.WaitGroup
	for i := range bots {
		flood.Go(func() { send(fmt.Sprintf("127.30.%d.%d", i/10, i%10+1), "flood", each) })
	}
	// The strangers start once the flood has had to queue.
	waitForCond(t, "the flood waiting for delivery slots", func() bool { return ts.srv.deliveries.Stats().Waited > 0 })
	for i := range strangers {
		legit.Go(func() { send(fmt.Sprintf("127.%d.7.%d", 180+i, 20+i), "legit", legitEach) })
	}
	legit.Wait()
	flood.Wait()
	var gotLegit, gotFlood int
	for _, m := range ts.messages(t, testUser) {
		switch {
		case strings.Contains(m, "Subject: legit "):
			gotLegit++
		case strings.Contains(m, "Subject: flood "):
			gotFlood++
		}
	}
	if gotLegit != strangers*legitEach || gotFlood != bots*each {
		t.Fatalf("committed %d legitimate and %d flood messages, want %d and %d", gotLegit, gotFlood, strangers*legitEach, bots*each)
	}
	st := ts.srv.deliveries.Stats()
	if st.Waited == 0 || st.GrantedRest < bots+strangers || st.GrantedRep != bots*(each-1)+strangers*(legitEach-1) || st.RepeatSlots != 1 {
		t.Fatalf("delivery queue %+v: want it contended, each session's first message a stranger's, the others repeats", st)
	}
}
