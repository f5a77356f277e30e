package outbound

import (
	"strings"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/queue"
)

// TestDelayNotice: a message still deferred DelayNotice after it was queued
// gets one delay notice (RFC 3464 Action: delayed, Will-Retry-Until), even
// with two destinations deferring it; later attempts send none, and the
// null sender never gets one.
func TestDelayNotice(t *testing.T) {
	port, lns := listenSamePort(t, "127.0.0.104")
	p := newPeer(t, lns[0])
	p.rcptReply = func(string) string { return "451 4.3.2 system busy" }
	startPeers(p)
	ev := newEnv(t, port, func(o *Options) { o.DelayNotice = time.Hour })
	ev.dns.Add(t, "a.test. 300 IN MX 10 mx.a.test.", "mx.a.test. 300 IN A 127.0.0.104",
		"b.test. 300 IN MX 10 mx.b.test.", "mx.b.test. 300 IN A 127.0.0.104")
	id := ev.enqueue("s@agua.test", []string{"x@a.test", "y@b.test"}, msg1)
	null := ev.enqueue("", []string{"z@a.test"}, msg1)
	attempt := func(n int) {
		for _, i := range []string{id, null} {
			ev.q.Retry(i, ev.clk.Now())
		}
		ev.waitFor("attempt", func() bool {
			for _, i := range []string{id, null} {
				m, _ := ev.q.Get(i)
				for _, r := range m.Rcpts {
					if r.Attempts < n || r.Status != queue.Deferred {
						return false
					}
				}
			}
			return true
		})
	}
	attempt(1)
	if len(ev.dsnList()) != 0 {
		t.Fatal("delay notice before the delay")
	}
	ev.clk.Add(90 * time.Minute)
	attempt(2)
	d := ev.waitDSN(1)
	if d[0].to != "s@agua.test" {
		t.Fatalf("notice to %s", d[0].to)
	}
	for _, want := range []string{"Subject: Delayed Mail (still being retried)", "Action: delayed", "Status: 4.3.2",
		"Final-Recipient: rfc822; ", "Will-Retry-Until: ", "Diagnostic-Code: smtp; 451 4.3.2 system busy"} {
		if !strings.Contains(d[0].body, want) {
			t.Errorf("notice lacks %q:\n%s", want, d[0].body)
		}
	}
	if m, _ := ev.q.Get(id); !m.DelayNotified {
		t.Fatal("message not marked as notified")
	}
	ev.clk.Add(3 * time.Hour)
	attempt(3)
	// Expiry: the failure DSNs (one per destination) are the marker that
	// the engine has finished with these attempts; between them and the
	// delay notice there is no other.
	ev.q.Delete(null)
	ev.clk.Add(DefaultLifetime)
	ev.q.Retry(id, ev.clk.Now())
	ev.waitGone(id)
	got := ev.waitDSN(3)
	delayed, failed := 0, 0
	for _, x := range got {
		delayed += strings.Count(x.body, "Action: delayed")
		if strings.Contains(x.body, "Action: failed") {
			failed++
		}
	}
	if len(got) != 3 || delayed != 1 || failed != 2 {
		for _, x := range got {
			t.Logf("to %s:\n%s", x.to, x.body)
		}
		t.Fatalf("%d notifications, %d delay notices, %d failures; want 3, 1, 2", len(got), delayed, failed)
	}
}
