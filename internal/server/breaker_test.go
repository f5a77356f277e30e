package server

import (
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/agua-mail/agua/internal/config"
)

// With [auth] on and a resolver that never answers, the first messages
// wait for their DNS budget and count the timeouts; once breaker_failures
// lookups went unanswered, messages are checked without sending any query
// (the circuit is open): SPF, DKIM and DMARC are temperror in
// Authentication-Results, and the message is accepted, never refused,
// even a spoofed one from a p=reject domain (its policy is unknown).
func TestAuthDeadResolverBreaker(t *testing.T) {
	w := newAuthWorld(t)
	ts := w.start(t, func(c *config.Config) {
		c.Auth.Timeout = time.Second
		c.DNS.Timeout = 200 * time.Millisecond
		c.DNS.Attempts = 1
		c.DNS.BreakerFailures = 2
		c.DNS.BreakerCooldown = time.Hour
	})
	w.dns.SilentAll(true)
	got := authSend(t, ts, "127.0.21.1", "mx.first.example", "a@first.example", authMsg("a@first.example", "first", ""))
	if !strings.HasPrefix(got, "250 ") {
		t.Fatalf("first message, DNS dead: %q", got)
	}
	if n := w.dns.Queries("first.example", dns.TypeTXT); n == 0 {
		t.Fatal("no SPF query sent for the first message: the test proves nothing")
	}
	if !ts.srv.acceptDNS.B.Stats().Open {
		t.Fatal("circuit not open after the first message's timeouts")
	}

	spoof := authMsg("Bank Security <security@bank.example>", "verify", "")
	sig, err := w.signer.Sign("security@bank.example", []byte(spoof))
	if err != nil || sig == nil {
		t.Fatalf("sign: %v", err)
	}
	got = authSend(t, ts, "127.0.21.2", "evil.example", "x@evil.example", string(sig)+spoof)
	if !strings.HasPrefix(got, "250 ") {
		t.Fatalf("message while the circuit is open: %q, want accepted (temperror never refuses)", got)
	}
	for _, name := range []string{"evil.example", "_dmarc.bank.example"} {
		if n := w.dns.Queries(name, dns.TypeTXT); n != 0 {
			t.Errorf("%s asked %d times while the circuit is open", name, n)
		}
	}
	msgs := ts.messages(t, testUser)
	if len(msgs) != 2 {
		t.Fatalf("%d messages delivered, want 2", len(msgs))
	}
	var open string
	for _, m := range msgs {
		if strings.Contains(m, "Subject: verify") {
			open = m
		}
	}
	if i := strings.Index(open, "Authentication-Results:"); i >= 0 {
		end := strings.Index(open[i:], "\r\n\r\n")
		t.Logf("while open: %s", open[i:i+max(end, 0)])
	}
	for _, want := range []string{"spf=temperror", "dkim=temperror", "dmarc=temperror"} {
		if !strings.Contains(open, want) {
			t.Errorf("Authentication-Results while the circuit is open lacks %s:\n%s", want, open)
		}
	}
	if st := ts.srv.status().(Status).AcceptDNS; st == nil || !st.Open || st.Skipped == 0 {
		t.Errorf("status accept_dns %+v: want open, lookups skipped", st)
	}
}
