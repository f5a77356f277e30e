package server

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/resolver/dnstest"
	"github.com/miekg/dns"
)

// silentFor reports whether the client got nothing within d: the negative
// check of a tarpit (it can pass wrongly on a slow machine, never fail).
func silentFor(c *client, d time.Duration) bool {
	c.conn.SetReadDeadline(time.Now().Add(d))
	defer c.conn.SetReadDeadline(time.Time{})
	_, err := c.r.Peek(1)
	return err != nil && strings.Contains(err.Error(), "timeout")
}

// A DNSBL that answers late (here: held until the test releases it, as a
// list answering after 5 s would be) does not hold the banner: the
// greeting arrives while the DNS server still holds the query, and the
// answer, when it comes, is used for the client's next connection.
func TestDNSBLLateAnswerDoesNotHoldBanner(t *testing.T) {
	ts, d := dnsblServer(t, func(c *config.Config) {
		c.DNSBL.BannerBudget = config.Default().DNSBL.BannerBudget
		c.DNSBL.Timeout = time.Minute
		c.DNS.Timeout = time.Minute
		c.DNS.Attempts = 1
	})
	d.Add(t, "5.19.0.127.bl.test. 300 IN A 127.0.0.2", "5.19.0.127.bl2.test. 300 IN A 127.0.0.2")
	release := d.Hold(t, "5.19.0.127.bl.test.", dns.TypeA)
	c := dialFrom(t, ts.srv.Addr("smtp"), "127.0.19.5")
	waitFor(t, "the DNS server to receive the query", func() bool { return d.Queries("5.19.0.127.bl.test.", dns.TypeA) == 1 })
	c.expect("220 ")
	addr := netip.MustParseAddr("127.0.19.5")
	if ts.srv.dnsblChecker().Peek(addr).Done {
		t.Fatal("the held query was answered before the greeting: the test proves nothing")
	}
	c.cmd("EHLO late.test", "250")
	release()
	waitFor(t, "the late answer", func() bool { return ts.srv.dnsblChecker().Peek(addr).Done })
	if r := ts.srv.dnsblChecker().Peek(addr); !r.Listed {
		t.Fatalf("late answer not used: %+v", r)
	}
	got, _ := greeting(t, ts, "127.0.19.5")
	if !strings.HasPrefix(got, "554 5.7.1 ") {
		t.Fatalf("next connection after the late answer: %q", got)
	}
}

// action = tarpit: a listed client gets its greeting late and every reply
// late, in its session's goroutine; others are served at once; shutdown
// ends the waits (the test's cleanup bounds it).
func TestDNSBLTarpit(t *testing.T) {
	for _, tc := range []struct {
		name            string
		greeting, reply time.Duration
	}{{"greeting", 5 * time.Minute, 0}, {"replies", 0, time.Minute}} {
		t.Run(tc.name, func(t *testing.T) {
			ts, d := dnsblServer(t, func(c *config.Config) {
				c.DNSBL.Action = "tarpit"
				c.DNSBL.TarpitGreeting, c.DNSBL.TarpitReply = tc.greeting, tc.reply
			})
			d.Add(t, "5.18.0.127.bl.test. 300 IN A 127.0.0.2", "5.18.0.127.bl2.test. 300 IN A 127.0.0.2")
			c := dialFrom(t, ts.srv.Addr("smtp"), "127.0.18.5")
			waitFor(t, "the listing", func() bool {
				return strings.Contains(ts.logs.String(), "addr=127.0.18.5 score=4 reason=dnsbl:bl.test action=tarpit")
			})
			if tc.greeting > 0 {
				if !silentFor(c, 300*time.Millisecond) {
					t.Fatal("tarpitted client got its greeting at once")
				}
			} else {
				c.expect("220 ")
				c.send("EHLO slow.test")
				if !silentFor(c, 300*time.Millisecond) {
					t.Fatal("tarpitted client got its reply at once")
				}
			}
			got, other := greeting(t, ts, "127.0.18.6")
			if !strings.HasPrefix(got, "220 ") {
				t.Fatalf("unlisted client during the tarpit: %q", got)
			}
			other.cmd("EHLO quick.test", "250")
		})
	}
}

// dnsblFileText is a config file using the DNS server d, with [dnsbl]
// section dnsbl and greylisting off.
func dnsblFileText(dataDir string, d *dnstest.Server, dnsbl string) string {
	return reloadConfigText(dataDir, fmt.Sprintf("\n[dns]\nresolver = [%q]\n\n[dnsbl]\n%s\n", d.Addr, dnsbl))
}

// The [dnsbl] section applies on reload: lists added, action changed, and
// action = untrusted takes a listed known-good client's reserved capacity
// away from its next connection.
func TestDNSBLReloadLive(t *testing.T) {
	d := dnstest.Start(t, "127.0.0.1")
	d.Add(t, "5.17.0.127.bl.test. 300 IN A 127.0.0.2")
	dataDir := t.TempDir()
	path := filepath.Join(t.TempDir(), "agua.toml")
	write := func(dnsbl string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(dnsblFileText(dataDir, d, dnsbl)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("lists = []")
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	setupDirectory(t, cfg)
	srv, _, _ := startFromFile(t, path)
	ts := &testServer{srv: srv, cfg: cfg}
	reload := func(dnsbl string) {
		t.Helper()
		write(dnsbl)
		if err := srv.ReloadConfig(); err != nil {
			t.Fatal(err)
		}
	}
	const listed = "127.0.17.5"
	got, c := greeting(t, ts, listed)
	if !strings.HasPrefix(got, "220 ") {
		t.Fatalf("no lists: %q", got)
	}
	c.cmd("EHLO before.test", "250")
	c.cmd("QUIT", "221")

	reload("lists = [\"bl.test*3\"]\nthreshold = 3")
	if got, _ := greeting(t, ts, listed); !strings.HasPrefix(got, "554 5.7.1 Service refused: 127.0.17.5 is listed by bl.test") {
		t.Fatalf("after adding the list: %q", got)
	}

	// action = log: served; a message accepted makes it known-good.
	reload("lists = [\"bl.test*3\"]\nthreshold = 3\naction = \"log\"")
	got, c = greeting(t, ts, listed)
	if !strings.HasPrefix(got, "220 ") {
		t.Fatalf("action log: %q", got)
	}
	c.cmd("EHLO client.test", "250")
	if r := c.deliver("a@sender.test", []string{testUser}, "Subject: hi\r\n\r\nhi\r\n"); !strings.HasPrefix(r, "250 ") {
		t.Fatalf("delivery: %q", r)
	}
	knownGood := func() bool {
		t.Helper()
		found, good := false, false
		for _, ci := range srv.Shield().Conns() { // oldest first: the last is c
			if ci.Listener == "smtp" && ci.Addr.String() == listed {
				found, good = true, ci.KnownGood
			}
		}
		if !found {
			t.Fatal("connection not found")
		}
		return good
	}
	c.cmd("QUIT", "221")
	c.expectClosed()
	got, c = greeting(t, ts, listed)
	if !strings.HasPrefix(got, "220 ") || !knownGood() {
		t.Fatalf("action log, known-good client: %q, known-good %v", got, knownGood())
	}
	c.cmd("QUIT", "221")
	c.expectClosed()

	reload("lists = [\"bl.test*3\"]\nthreshold = 3\naction = \"untrusted\"")
	got, c = greeting(t, ts, listed) // the new checker looks it up
	c.cmd("QUIT", "221")
	c.expectClosed()
	got, c = greeting(t, ts, listed)
	if !strings.HasPrefix(got, "220 ") || knownGood() {
		t.Fatalf("action untrusted: %q, known-good %v (want served as a stranger)", got, knownGood())
	}
}
