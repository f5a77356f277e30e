package server

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/admin"
	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/resolver/dnstest"
	"github.com/miekg/dns"
)

// dnsblServer runs agua with [dnsbl] lists answered by a test DNS server:
// bl.test (weight 2, 127.0.0.[2..11]), bl2.test (weight 2, any answer),
// wl.test (an allowlist, weight -5), threshold 3.
func dnsblServer(t *testing.T, mutate func(*config.Config)) (*testServer, *dnstest.Server) {
	t.Helper()
	d := dnstest.Start(t, "127.0.0.1")
	ts := startServer(t, func(c *config.Config) {
		c.DNS.Resolver = []string{d.Addr}
		c.DNSBL.Lists = []string{"bl.test=127.0.0.[2..11]*2", "bl2.test*2", "wl.test=127.0.[0..255].[0..255]*-5"}
		c.DNSBL.Threshold = 3
		c.DNSBL.AllowlistThreshold = -1
		c.DNSBL.BannerBudget = 5 * time.Second
		if mutate != nil {
			mutate(c)
		}
	})
	return ts, d
}

// greeting returns the first reply line a client from src gets on the MX port.
func greeting(t *testing.T, ts *testServer, src string) (string, *client) {
	t.Helper()
	c := dialFrom(t, ts.srv.Addr("smtp"), src)
	lines, err := c.reply()
	if err != nil || len(lines) == 0 {
		t.Fatalf("%s: no greeting: %v", src, err)
	}
	return lines[len(lines)-1], c
}

func TestDNSBLRefusedBeforeGreeting(t *testing.T) {
	ts, d := dnsblServer(t, nil)
	d.Add(t,
		"5.5.0.127.bl.test. 300 IN A 127.0.0.2",
		"5.5.0.127.bl2.test. 300 IN A 127.0.0.4",
		// Listed by one list only: weight 2, below the threshold.
		"6.5.0.127.bl.test. 300 IN A 127.0.0.3",
		// An answer outside bl.test's pattern does not count.
		"7.5.0.127.bl.test. 300 IN A 127.0.0.1",
		"7.5.0.127.bl2.test. 300 IN A 127.0.0.2",
		// Listed by both blocklists and by the allowlist: known-good.
		"8.5.0.127.bl.test. 300 IN A 127.0.0.2",
		"8.5.0.127.bl2.test. 300 IN A 127.0.0.2",
		"8.5.0.127.wl.test. 300 IN A 127.0.10.3",
	)
	got, c := greeting(t, ts, "127.0.5.5")
	if want := "554 5.7.1 Service refused: 127.0.5.5 is listed by bl.test"; got != want {
		t.Fatalf("listed client: %q, want %q", got, want)
	}
	c.expectClosed()
	if !strings.Contains(ts.logs.String(), "reason=dnsbl:bl.test") {
		t.Errorf("no dnsbl:bl.test reason in the log")
	}
	// Its score is cached now: the next connection is refused by the
	// shield at accept, before any session.
	got, c = greeting(t, ts, "127.0.5.5")
	if want := "554 5.7.1 " + ts.cfg.Hostname + " Service refused: listed by bl.test"; got != want {
		t.Fatalf("listed client, cached: %q, want %q", got, want)
	}
	c.expectClosed()
	if n := d.Queries("5.5.0.127.bl.test.", dns.TypeA); n != 1 {
		t.Errorf("bl.test asked %d times about 127.0.5.5, want 1 (cached)", n)
	}
	for _, src := range []string{"127.0.5.6", "127.0.5.7", "127.0.5.8", "127.0.5.9"} {
		got, c := greeting(t, ts, src)
		if !strings.HasPrefix(got, "220 ") {
			t.Fatalf("%s: %q, want the greeting", src, got)
		}
		c.cmd("EHLO client.test", "250")
	}

	// agua why: each list's answer and the score.
	var why admin.WhyResult
	if err := admin.NewClient(AdminSocket(ts.cfg)).Do("GET", "/v1/why?ip=127.0.5.5", nil, &why); err != nil {
		t.Fatal(err)
	}
	if why.DNSBL == nil || why.DNSBL.Score != 4 || !why.DNSBL.Listed || len(why.DNSBL.Answers) != 3 {
		t.Fatalf("why 127.0.5.5: %+v", why.DNSBL)
	}
	for _, a := range why.DNSBL.Answers {
		if a.Listed != (a.List != "wl.test") {
			t.Errorf("why 127.0.5.5: %+v", a)
		}
	}
	if err := admin.NewClient(AdminSocket(ts.cfg)).Do("GET", "/v1/why?ip=127.0.5.8", nil, &why); err != nil {
		t.Fatal(err)
	}
	if why.DNSBL == nil || why.DNSBL.Score != -1 || !why.DNSBL.Allowlisted || why.DNSBL.Listed {
		t.Fatalf("why 127.0.5.8: %+v", why.DNSBL)
	}
	if !why.KnownGood {
		t.Errorf("127.0.5.8, allowlisted by wl.test, is not known-good")
	}
	if err := admin.NewClient(AdminSocket(ts.cfg)).Do("GET", "/v1/why?ip=127.0.5.7", nil, &why); err != nil {
		t.Fatal(err)
	}
	if why.KnownGood {
		t.Errorf("127.0.5.7, served but not allowlisted, is known-good")
	}
	if why.DNSBL == nil || why.DNSBL.Score != 2 || why.DNSBL.Listed || why.DNSBL.Answers[0].Listed || len(why.DNSBL.Answers[0].Records) != 1 {
		t.Fatalf("why 127.0.5.7: %+v", why.DNSBL)
	}
}

// A list that answers SERVFAIL, or not at all, lists nobody.
func TestDNSBLFailuresNotListed(t *testing.T) {
	ts, d := dnsblServer(t, func(c *config.Config) {
		c.DNS.Timeout = 200 * time.Millisecond
		c.DNS.Attempts = 1
	})
	d.Add(t, "5.6.0.127.bl.test. 300 IN A 127.0.0.2", "5.6.0.127.bl2.test. 300 IN A 127.0.0.2")
	d.Rcode("5.6.0.127.bl.test.", dns.TypeA, dns.RcodeServerFailure)
	d.Silent("5.6.0.127.bl2.test.", dns.TypeA, true)
	got, c := greeting(t, ts, "127.0.6.5")
	if !strings.HasPrefix(got, "220 ") {
		t.Fatalf("lists failing: %q, want the greeting", got)
	}
	c.cmd("EHLO client.test", "250")
	r := ts.srv.dnsblChecker().Peek(netip.MustParseAddr("127.0.6.5"))
	if !r.Done || r.Score != 0 || r.Answers[0].Error == "" || r.Answers[1].Error == "" {
		t.Fatalf("result: %+v", r)
	}
}

// A list that does not answer holds the greeting no longer than
// banner_budget, and costs other clients nothing: a listed client is
// refused and an unlisted one served while it is still silent.
func TestDNSBLSlowListDoesNotHoldOthers(t *testing.T) {
	ts, d := dnsblServer(t, func(c *config.Config) {
		c.DNSBL.BannerBudget = 300 * time.Millisecond
		c.DNSBL.Timeout = time.Minute
		c.DNS.Timeout = time.Minute
		c.DNS.Attempts = 1
	})
	d.Silent("5.7.0.127.bl.test.", dns.TypeA, true) // never answers
	d.Add(t, "5.7.0.127.bl2.test. 300 IN A 127.0.0.2",
		"9.7.0.127.bl.test. 300 IN A 127.0.0.2", "9.7.0.127.bl2.test. 300 IN A 127.0.0.2")
	slow := netip.MustParseAddr("127.0.7.5")
	got, c := greeting(t, ts, slow.String())
	if !strings.HasPrefix(got, "220 ") {
		t.Fatalf("client of the slow list: %q, want the greeting after the budget", got)
	}
	if ts.srv.dnsblChecker().Peek(slow).Done {
		t.Fatal("the silent list answered: the test proves nothing")
	}
	// Other clients while the slow lookup is still pending.
	got, _ = greeting(t, ts, "127.0.7.9")
	if !strings.HasPrefix(got, "554 5.7.1 ") {
		t.Fatalf("listed client during a slow lookup: %q", got)
	}
	got, c2 := greeting(t, ts, "127.0.7.10")
	if !strings.HasPrefix(got, "220 ") {
		t.Fatalf("unlisted client during a slow lookup: %q", got)
	}
	c2.cmd("EHLO other.test", "250")
	c.cmd("EHLO slow.test", "250")
	if ts.srv.dnsblChecker().Peek(slow).Done {
		t.Fatal("the silent list answered: the test proves nothing")
	}
	if n := d.Queries("5.7.0.127.bl.test.", dns.TypeA); n != 1 {
		t.Errorf("silent list asked %d times, want 1 (one lookup per address, shared)", n)
	}
}
