package bench_test

import (
	"bufio"
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/bench"
)

// fakeMailbox is a minimal POP3 or IMAP server that says yes to everything,
// with an empty mailbox, and records the address of every client.
type fakeMailbox struct {
	ln    net.Listener
	mu    sync.Mutex
	addrs []netip.Addr
}

func newFakeMailbox(t *testing.T, proto string) *fakeMailbox {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	f := &fakeMailbox{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.addrs = append(f.addrs, c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap())
			f.mu.Unlock()
			go f.serve(c, proto)
		}
	}()
	return f
}

func (f *fakeMailbox) serve(c net.Conn, proto string) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	if proto == "pop3" {
		c.Write([]byte("+OK ready\r\n"))
	} else {
		c.Write([]byte("* OK ready\r\n"))
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if proto == "pop3" {
			switch strings.ToUpper(fields[0]) {
			case "STAT":
				c.Write([]byte("+OK 0 0\r\n"))
			case "QUIT":
				c.Write([]byte("+OK bye\r\n"))
				return
			default:
				c.Write([]byte("+OK\r\n"))
			}
			continue
		}
		tag := fields[0]
		cmd := ""
		if len(fields) > 1 {
			cmd = strings.ToUpper(fields[1])
		}
		switch cmd {
		case "SELECT":
			c.Write([]byte("* 0 EXISTS\r\n" + tag + " OK done\r\n"))
		case "LOGOUT":
			c.Write([]byte("* BYE\r\n" + tag + " OK done\r\n"))
			return
		default:
			c.Write([]byte(tag + " OK done\r\n"))
		}
	}
}

// POP3 and IMAP sessions come from strangers, as SMTP ones do (issue 13):
// each session from its own address of the legitimate pool, never
// 127.0.0.1, which agua allowlists. With -legit-rate every session of every
// client still runs.
func TestMailboxSessionsFromStrangers(t *testing.T) {
	for _, proto := range []string{"pop3", "imap"} {
		for _, rate := range []int{0, 500} {
			f := newFakeMailbox(t, proto)
			rep, err := bench.Run(context.Background(), bench.Config{
				Target: f.ln.Addr().String(), Proto: proto, Duration: 20 * time.Second,
				Legit: 3, MaxSessions: 4, LegitRate: rate, User: "u%d@example.test", Pass: "pw",
			})
			if err != nil {
				t.Fatal(err)
			}
			if l := rep.Legit; l.Sessions != 12 || l.OK != 12 {
				t.Errorf("%s rate %d: %+v", proto, rate, l)
			}
			f.mu.Lock()
			seen := map[netip.Addr]bool{}
			for _, a := range f.addrs {
				if a == netip.MustParseAddr("127.0.0.1") || !bench.DefaultLegitPool.Contains(a) {
					t.Errorf("%s: a session from %s", proto, a)
				}
				seen[a] = true
			}
			// The probe reuses client 0's first address; every session
			// has its own.
			if len(f.addrs) != 13 || len(seen) != 12 {
				t.Errorf("%s rate %d: %d connections from %d addresses, want 13 from 12", proto, rate, len(f.addrs), len(seen))
			}
			f.mu.Unlock()
		}
	}
}
