package outbound

import (
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/mtasts"
	"github.com/agua-mail/agua/internal/mtasts/mtaststest"
	"github.com/agua-mail/agua/internal/queue"
	"github.com/agua-mail/agua/internal/resolver"
)

// TestMTASTS (RFC 8461): the policy comes from the test DNS server's
// _mta-sts TXT record and a test HTTPS server with its own CA. In enforce
// mode only MX hosts the policy names receive mail, over TLS with a
// certificate valid for the MX name; otherwise the mail waits (4.7.5) and
// no MAIL command is sent. Testing mode logs and delivers.
func TestMTASTS(t *testing.T) {
	goodTLS, _ := testTLS(t, "mx.dest.test")
	wrongTLS, _ := testTLS(t, "wrong.test")
	roots := x509.NewCertPool()
	roots.AddCert(leafOf(t, goodTLS))
	roots.AddCert(leafOf(t, wrongTLS))
	policy := func(mode, mx string) string {
		return "version: STSv1\nmode: " + mode + "\nmx: " + mx + "\nmax_age: 86400\n"
	}
	cases := []struct {
		name      string
		policy    string
		peerTLS   *tls.Config // nil: no STARTTLS
		delivered bool
		reply     string // of the deferral
		logged    string
	}{
		{"enforce, valid certificate", policy("enforce", "mx.dest.test"), goodTLS, true, "", ""},
		{"enforce, wildcard", policy("enforce", "*.dest.test"), goodTLS, true, "", ""},
		{"enforce, no STARTTLS", policy("enforce", "mx.dest.test"), nil, false, "does not offer STARTTLS", ""},
		{"enforce, certificate for another name", policy("enforce", "mx.dest.test"), wrongTLS, false, "4.7.5", ""},
		{"enforce, MX not in the policy", policy("enforce", "mx.other.test"), goodTLS, false, "matches its policy", ""},
		{"testing, certificate for another name", policy("testing", "mx.dest.test"), wrongTLS, true, "", "MTA-STS certificate check failed (testing mode"},
		{"testing, MX not in the policy", policy("testing", "mx.other.test"), nil, true, "", "not in the MTA-STS policy (testing mode"},
		{"mode none", policy("none", "mx.other.test"), nil, true, "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			port, lns := listenSamePort(t, "127.0.0.95")
			p := newPeer(t, lns[0])
			p.tls = tc.peerTLS
			startPeers(p)
			web := mtaststest.Start(t, "127.0.0.96", "dest.test")
			web.Set("dest.test", tc.policy)
			var ev *env
			ev = newEnvStopped(t, port, func(o *Options) {
				o.TLSConfig = &tls.Config{RootCAs: roots}
			})
			res, err := resolver.New(resolver.Config{Servers: []string{ev.dns.Addr}, Timeout: 2 * time.Second, CacheSize: -1})
			if err != nil {
				t.Fatal(err)
			}
			sts, err := mtasts.New(mtasts.Options{TXT: mtasts.TXTLookup(res), Dial: web.Dial, RootCAs: web.RootCAs, Dir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			ev.e.sts = sts
			ev.dns.Add(t, "dest.test. 300 IN MX 10 mx.dest.test.", "mx.dest.test. 300 IN A 127.0.0.95",
				`_mta-sts.dest.test. 300 IN TXT "v=STSv1; id=20261205;"`)
			ev.start()
			id := ev.enqueue("s@agua.test", []string{"x@dest.test"}, msg1)
			if tc.delivered {
				ev.waitGone(id)
				r := p.received()
				if len(r) != 1 || r[0].tls != (tc.peerTLS != nil) {
					t.Fatalf("received %+v", r)
				}
			} else {
				m := ev.waitState(id, queue.Deferred)
				if !strings.Contains(m.Rcpts[0].Reply, tc.reply) || !strings.Contains(m.Rcpts[0].Reply, "4.7.5") {
					t.Fatalf("reply %q, want %q", m.Rcpts[0].Reply, tc.reply)
				}
				if p.sawMail() {
					t.Fatal("mail sent although the policy was not met")
				}
			}
			if tc.logged != "" && !strings.Contains(ev.logs.String(), tc.logged) {
				t.Fatalf("log lacks %q", tc.logged)
			}
			if web.Fetches("dest.test") != 1 {
				t.Fatalf("%d policy fetches", web.Fetches("dest.test"))
			}
		})
	}
}

// TestMTASTSSkipsUnlistedMX: in enforce mode a better MX that the policy
// does not name is never used; the listed one gets the mail.
func TestMTASTSSkipsUnlistedMX(t *testing.T) {
	goodTLS, pool := testTLS(t, "mx.dest.test")
	port, lns := listenSamePort(t, "127.0.0.97", "127.0.0.98")
	rogue, listed := newPeer(t, lns[0]), newPeer(t, lns[1])
	listed.tls = goodTLS
	startPeers(rogue, listed)
	web := mtaststest.Start(t, "127.0.0.96", "dest.test")
	web.Set("dest.test", "version: STSv1\nmode: enforce\nmx: mx.dest.test\nmax_age: 600\n")
	ev := newEnvStopped(t, port, func(o *Options) { o.TLSConfig = &tls.Config{RootCAs: pool} })
	res, _ := resolver.New(resolver.Config{Servers: []string{ev.dns.Addr}, Timeout: 2 * time.Second, CacheSize: -1})
	sts, err := mtasts.New(mtasts.Options{TXT: mtasts.TXTLookup(res), Dial: web.Dial, RootCAs: web.RootCAs})
	if err != nil {
		t.Fatal(err)
	}
	ev.e.sts = sts
	ev.dns.Add(t, "dest.test. 300 IN MX 5 rogue.attacker.test.", "rogue.attacker.test. 300 IN A 127.0.0.97",
		"dest.test. 300 IN MX 10 mx.dest.test.", "mx.dest.test. 300 IN A 127.0.0.98",
		`_mta-sts.dest.test. 300 IN TXT "v=STSv1; id=1"`)
	ev.start()
	id := ev.enqueue("s@agua.test", []string{"x@dest.test"}, msg1)
	ev.waitGone(id)
	if len(rogue.received()) != 0 || rogue.connections() != 0 || len(listed.received()) != 1 || !listed.received()[0].tls {
		t.Fatalf("rogue: %d connections; listed: %+v", rogue.connections(), listed.received())
	}
}

func leafOf(t *testing.T, cfg *tls.Config) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(cfg.Certificates[0].Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return c
}
