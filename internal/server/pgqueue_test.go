package server

import (
	"strings"
	"testing"

	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/pg/pgtest"
	"github.com/agua-mail/agua/internal/queue"
	"github.com/agua-mail/agua/internal/resolver/dnstest"
)

// TestQueueOnPostgresOutage: with [postgres] queue the outbound queue is
// on PostgreSQL. While PostgreSQL is down (SIGKILL) a submission is
// answered 451, never 250 for what was not committed; once it is back the
// node delivers what was queued before, and takes new mail, without being
// restarted.
func TestQueueOnPostgresOutage(t *testing.T) {
	pgs := pgtest.Start(t)
	dns := dnstest.Start(t, labDNS)
	port := freePort(t, labPeer)
	dns.Add(t, "remote.test. 300 IN MX 10 mx.remote.test.", "mx.remote.test. 300 IN A "+labPeer)
	sender, _ := startSender(t, dns, port, func(c *config.Config) {
		c.Postgres.URL = pgs.NewDatabase(t)
		c.Postgres.Queue = true
		c.Postgres.Migrate = true
	})
	if _, ok := sender.srv.out.queue.(*queue.File); ok {
		t.Fatal("[postgres] queue = true, but the server opened the file queue")
	}

	// The peer is not up yet: the first message is deferred.
	if got := submit(t, sender, []string{"bob@remote.test"}, "Subject: one\r\n\r\nqueued before the outage\r\n"); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("submission: %q", got)
	}
	waitOutbound(t, "the first message deferred", func() bool {
		l, err := sender.srv.out.queue.List()
		return err == nil && len(l) == 1 && l[0].Rcpts[0].Status == queue.Deferred
	})

	pgs.Kill()
	if got := submit(t, sender, []string{"bob@remote.test"}, "Subject: two\r\n\r\nsent during the outage\r\n"); !strings.HasPrefix(got, "451 ") {
		t.Fatalf("submission with PostgreSQL down: %q, want 451", got)
	}
	peer := startPeer(t, port)
	pgs.Restart()

	waitOutbound(t, "the first message at the peer", func() bool { return len(peer.messages(t, "bob@remote.test")) == 1 })
	if got := submit(t, sender, []string{"bob@remote.test"}, "Subject: three\r\n\r\nsent after the outage\r\n"); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("submission after the restart: %q", got)
	}
	waitOutbound(t, "the third message at the peer", func() bool { return len(peer.messages(t, "bob@remote.test")) == 2 })
	waitOutbound(t, "the queue to empty", func() bool { return sender.srv.out.queue.Stats().Messages == 0 })
	all := strings.Join(peer.messages(t, "bob@remote.test"), "\n")
	if !strings.Contains(all, "queued before the outage") || !strings.Contains(all, "sent after the outage") || strings.Contains(all, "sent during the outage") {
		t.Fatalf("peer received:\n%s", all)
	}
}
