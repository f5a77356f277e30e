package server

import (
	"fmt"
	"strings"
	"testing"

	"github.com/agua-mail/agua/internal/config"
)

// A listener at its connection ceiling refuses the next client with the
// shield's reason as it is: "server busy, try again later" once, in each
// protocol's form (issue 10: SMTP said "..., try again later, try again
// later").
func TestBusyRefusalText(t *testing.T) {
	ts := startServer(t, func(c *config.Config) {
		c.SMTP.MaxConns = 2
		c.POP3.MaxConns = 2
		c.IMAP.MaxConns = 2
	})
	for i, tc := range []struct{ listener, want string }{
		{"smtp", "421 4.7.0 " + ts.cfg.Hostname + " server busy, try again later"},
		{"pop3", "-ERR [SYS/TEMP] server busy, try again later"},
		{"imap", "* BYE [UNAVAILABLE] server busy, try again later"},
	} {
		t.Run(tc.listener, func(t *testing.T) {
			// Fill the listener (part of it is reserved for known-good
			// clients, which these are not) until a client is refused.
			for n := 1; ; n++ {
				if n > 10 {
					t.Fatal("no client refused at the connection ceiling")
				}
				c := dialFrom(t, ts.srv.Addr(tc.listener), fmt.Sprintf("127.0.22.%d", 10*i+n))
				l, err := c.r.ReadString('\n')
				if err != nil {
					t.Fatalf("read: %v", err)
				}
				l = strings.TrimRight(l, "\r\n")
				if strings.HasPrefix(l, "220 ") || strings.HasPrefix(l, "+OK") || strings.HasPrefix(l, "* OK") {
					continue // greeted; stays open and holds its slot
				}
				if l != tc.want {
					t.Fatalf("refusal %q, want %q", l, tc.want)
				}
				c.expectClosed()
				return
			}
		})
	}
}
