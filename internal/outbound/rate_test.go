package outbound

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/queue"
)

// TestRateLimitPerDestination: at 2 messages a minute to dest.test, one
// message goes at once and the next only when the (test) clock has moved
// 30 seconds; another destination is not held back.
func TestRateLimitPerDestination(t *testing.T) {
	port, lns := listenSamePort(t, "127.0.0.101", "127.0.0.102")
	limited, free := newPeer(t, lns[0]), newPeer(t, lns[1])
	startPeers(limited, free)
	ev := newEnvStopped(t, port, func(o *Options) { o.Rate = RateLimits{PerDest: map[string]int{"dest.test": 2}} })
	ev.dns.Add(t, "dest.test. 300 IN MX 10 mx.dest.test.", "mx.dest.test. 300 IN A 127.0.0.101",
		"free.test. 300 IN MX 10 mx.free.test.", "mx.free.test. 300 IN A 127.0.0.102")
	var ids []string
	for i := range 3 {
		ids = append(ids, ev.enqueue("s@agua.test", []string{fmt.Sprintf("u%d@dest.test", i)}, msg1))
	}
	var freeIDs []string
	for i := range 3 {
		freeIDs = append(freeIDs, ev.enqueue("s@agua.test", []string{fmt.Sprintf("u%d@free.test", i)}, msg1))
	}
	ev.start()
	for _, id := range freeIDs {
		ev.waitGone(id)
	}
	ev.waitFor("one message to dest.test", func() bool { return len(limited.received()) == 1 })
	ev.waitFor("the rate limit to hold the others", func() bool {
		return strings.Contains(ev.logs.String(), `msg="outbound: destination rate limit reached" destination=dest.test`)
	})
	for step := 2; step <= 3; step++ {
		if n := len(limited.received()); n != step-1 {
			t.Fatalf("%d messages sent within the rate's interval, want %d", n, step-1)
		}
		ev.clk.Add(30 * time.Second)
		// Wake the engine (the timer would, in real time): a change to a
		// message still queued signals it; the first one is gone already.
		for _, id := range ids {
			ev.q.Retry(id, ev.clk.Now())
		}
		ev.waitFor(fmt.Sprintf("message %d", step), func() bool { return len(limited.received()) == step })
	}
	for _, id := range ids {
		ev.waitGone(id)
	}
}

// TestRateLimitReplyLowersConcurrency: a 421 at the greeting or a 451
// rate-limit reply to RCPT takes one connection away from the destination
// (Postfix's queue manager does the same), and the mail is deferred.
func TestRateLimitReplyLowersConcurrency(t *testing.T) {
	for _, stage := range []string{"greeting 421", "rcpt 451"} {
		t.Run(stage, func(t *testing.T) {
			port, lns := listenSamePort(t, "127.0.0.103")
			p := newPeer(t, lns[0])
			if stage == "greeting 421" {
				p.greeting = "421 4.7.0 too many connections from your network"
			} else {
				p.rcptReply = func(string) string { return "451 4.7.1 rate limited, slow down" }
			}
			startPeers(p)
			ev := newEnv(t, port, func(o *Options) { o.InitialConcurrency, o.MaxConcurrency = 3, 5 })
			ev.dns.Add(t, "dest.test. 300 IN MX 10 mx.dest.test.", "mx.dest.test. 300 IN A 127.0.0.103")
			id := ev.enqueue("s@agua.test", []string{"x@dest.test"}, msg1)
			m := ev.waitState(id, queue.Deferred)
			if r := m.Rcpts[0].Reply; !strings.Contains(r, "4.7.") {
				t.Fatalf("reply %q", r)
			}
			ev.waitFor("the concurrency to drop", func() bool {
				return strings.Contains(ev.logs.String(), `msg="outbound: destination concurrency lowered" destination=dest.test limit=2`)
			})
		})
	}
}
