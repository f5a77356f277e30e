package dnsrecords

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/dkim"
	"github.com/agua-mail/agua/internal/resolver/dnstest"
	"github.com/miekg/dns"
)

func testServices() Services {
	cfg := config.Default()
	cfg.Hostname = "Mail.Example.NET"
	cfg.POP3.Listen = nil // POP3 with STLS not offered
	return FromConfig(cfg)
}

func byName(rs []Record) map[string]Record {
	m := map[string]Record{}
	for _, r := range rs {
		m[r.Name+" "+r.Type+" "+txtTag(r.Value)] = r
	}
	return m
}

func TestBuildWithoutKeys(t *testing.T) {
	rs := Build(Params{Domain: "Example.ORG", Services: testServices(), Now: time.Now(),
		MTASTS: PolicyParams{Mode: "testing", MaxAge: 7 * 24 * time.Hour}})
	m := byName(rs)
	want := map[string]string{
		"example.org. MX 10":                                "10 mail.example.net.",
		"example.org. TXT v=spf1":                           "v=spf1 mx -all",
		"_dmarc.example.org. TXT v=dmarc1":                  "v=DMARC1; p=none; rua=mailto:postmaster@example.org",
		"_smtp._tls.example.org. TXT v=tlsrptv1":            "v=TLSRPTv1; rua=mailto:postmaster@example.org",
		"_submission._tcp.example.org. SRV 0":               "0 1 2587 mail.example.net.",
		"_submissions._tcp.example.org. SRV 0":              "0 1 2465 mail.example.net.",
		"_imap._tcp.example.org. SRV 0":                     "0 1 2143 mail.example.net.",
		"_imaps._tcp.example.org. SRV 0":                    "0 1 2993 mail.example.net.",
		"_pop3._tcp.example.org. SRV 0":                     "0 0 0 .",
		"_pop3s._tcp.example.org. SRV 0":                    "0 1 2995 mail.example.net.",
		"autoconfig.example.org. CNAME mail.example.net.":   "mail.example.net.",
		"autodiscover.example.org. CNAME mail.example.net.": "mail.example.net.",
		"mta-sts.example.org. CNAME mail.example.net.":      "mail.example.net.",
	}
	for k, v := range want {
		if m[k].Value != v {
			t.Errorf("%s: got %q, want %q", k, m[k].Value, v)
		}
	}
	pol := Policy("mail.example.net", PolicyParams{Mode: "testing", MaxAge: 7 * 24 * time.Hour})
	if pol != "version: STSv1\r\nmode: testing\r\nmx: mail.example.net\r\nmax_age: 604800\r\n" {
		t.Errorf("policy %q", pol)
	}
	sts := m["_mta-sts.example.org. TXT v=stsv1"].Value
	if sts != "v=STSv1; id="+PolicyID(pol) {
		t.Errorf("_mta-sts record %q", sts)
	}
	// The id follows the policy: another mode, another id.
	if PolicyID(Policy("mail.example.net", PolicyParams{Mode: "enforce", MaxAge: 7 * 24 * time.Hour})) == PolicyID(pol) {
		t.Error("the MTA-STS id does not change with the policy")
	}
	if len(rs) != len(want)+1 {
		t.Errorf("%d records, want %d: %v", len(rs), len(want)+1, rs)
	}
	for _, r := range rs {
		if strings.Contains(r.Name, "_domainkey") {
			t.Errorf("DKIM record without keys: %v", r)
		}
	}
}

func TestBuildWithKeysAndIPs(t *testing.T) {
	data := t.TempDir()
	now := time.Now()
	if _, err := dkim.Keygen(data, "example.org", dkim.Ed25519, "old", now.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := dkim.Keygen(data, "example.org", dkim.Ed25519, "next", now.Add(48*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := dkim.Keygen(data, "other.example", dkim.RSA, "s1", time.Time{}); err != nil {
		t.Fatal(err)
	}
	keys, err := dkim.LoadKeys(data)
	if err != nil {
		t.Fatal(err)
	}
	rs := Build(Params{Domain: "example.org", Services: testServices(), Keys: keys, Now: now,
		IPs: []string{"192.0.2.7", "2001:db8::7"}, MTASTS: PolicyParams{Mode: "enforce", MaxAge: time.Hour}})
	m := byName(rs)
	if v := m["example.org. TXT v=spf1"].Value; v != "v=spf1 ip4:192.0.2.7 ip6:2001:db8::7 -all" {
		t.Errorf("spf %q", v)
	}
	if v := m["_dmarc.example.org. TXT v=dmarc1"].Value; !strings.Contains(v, "p=quarantine") {
		t.Errorf("dmarc with a signing key: %q", v)
	}
	for _, k := range keys {
		r, ok := m[k.Name()+" TXT v=dkim1"]
		if ok != (k.Domain == "example.org") {
			t.Errorf("key %s listed %v", k.Name(), ok)
		}
		if ok && r.Value != k.Record() {
			t.Errorf("key %s: %q", k.Name(), r.Value)
		}
	}
	if c := m["next._domainkey.example.org. TXT v=dkim1"].Comment; !strings.Contains(c, "publish it now") {
		t.Errorf("future key comment %q", c)
	}
}

func TestZoneSplitsLongTXT(t *testing.T) {
	long := strings.Repeat("a", 300)
	z := Record{Name: "x.example.", Type: "TXT", Value: long}.Zone()
	if z != `x.example. IN TXT ( "`+long[:255]+`" "`+long[255:]+`" )` {
		t.Errorf("zone %q", z)
	}
	if z := (Record{Name: "example.", Type: "MX", Value: "10 mx.example."}).Zone(); z != "example. IN MX 10 mx.example." {
		t.Errorf("zone %q", z)
	}
}

// TestCheck serves some records right, some wrong and some not at all on
// a loopback DNS server and checks each verdict.
func TestCheck(t *testing.T) {
	want := []Record{
		{Name: "example.org.", Type: "MX", Value: "10 mail.example.net."},
		{Name: "example.org.", Type: "TXT", Value: "v=spf1 mx -all"},
		{Name: "_dmarc.example.org.", Type: "TXT", Value: "v=DMARC1; p=none; rua=mailto:postmaster@example.org"},
		{Name: "_smtp._tls.example.org.", Type: "TXT", Value: "v=TLSRPTv1; rua=mailto:postmaster@example.org"},
		{Name: "_imaps._tcp.example.org.", Type: "SRV", Value: "0 1 993 mail.example.net."},
		{Name: "_pop3._tcp.example.org.", Type: "SRV", Value: "0 0 0 ."},
		{Name: "autoconfig.example.org.", Type: "CNAME", Value: "mail.example.net."},
		{Name: "long.example.org.", Type: "TXT", Value: strings.Repeat("v=DKIM1; p=", 1) + strings.Repeat("A", 400)},
	}
	srv := dnstest.Start(t, "127.0.53.1")
	srv.Add(t,
		"example.org. 300 IN MX 10 MAIL.example.net.",                                                               // ok (case)
		"example.org. 300 IN TXT \"google-site-verification=x\"",                                                    // ignored: another kind
		"example.org. 300 IN TXT \"v=spf1 a mx ~all\"",                                                              // differs
		"_dmarc.example.org. 300 IN TXT \"v=DMARC1;p=none;  rua=mailto:postmaster@example.org\"",                    // ok (spacing)
		"_imaps._tcp.example.org. 300 IN SRV 0 1 2993 mail.example.net.",                                            // differs (port)
		"_pop3._tcp.example.org. 300 IN SRV 0 0 0 .",                                                                // ok
		"autoconfig.example.org. 300 IN A 192.0.2.1",                                                                // differs: an A record, not the CNAME
		"long.example.org. 300 IN TXT \"v=DKIM1; p="+strings.Repeat("A", 200)+"\" \""+strings.Repeat("A", 200)+"\"", // ok (joined)
		// _smtp._tls: missing
	)
	res := Checker{Server: srv.Addr, Timeout: 5 * time.Second}.Check(context.Background(), want)
	wantStatus := []Status{OK, Differs, OK, Missing, Differs, OK, Differs, OK}
	for i, r := range res {
		if r.Status != wantStatus[i] {
			t.Errorf("%s %s: %s (%v), want %s", r.Want.Name, r.Want.Type, r.Status, r.Err, wantStatus[i])
		}
	}
	if s := res[1].String(); s != `differs  example.org. TXT: want "v=spf1 mx -all" got "v=spf1 a mx ~all"` {
		t.Errorf("line %q", s)
	}
	if s := res[4].String(); s != `differs  _imaps._tcp.example.org. SRV: want 0 1 993 mail.example.net. got 0 1 2993 mail.example.net.` {
		t.Errorf("line %q", s)
	}

	if s := res[6].String(); s != "differs  autoconfig.example.org. CNAME: want mail.example.net. got A 192.0.2.1" {
		t.Errorf("line %q", s)
	}
	// SERVFAIL is an error, not "missing".
	srv.Rcode("example.org.", dns.TypeMX, dns.RcodeServerFailure)
	if r := (Checker{Server: srv.Addr}).Check(context.Background(), want[:1]); r[0].Status != Failed || !errors.Is(r[0].Err, ErrQuery) {
		t.Errorf("SERVFAIL: %v %v", r[0].Status, r[0].Err)
	}
	// A server that does not answer is an error too.
	dead := Checker{Server: "127.0.53.2:9", Timeout: 200 * time.Millisecond}.Check(context.Background(), want[:1])
	if dead[0].Status != Failed || !errors.Is(dead[0].Err, ErrQuery) {
		t.Errorf("dead resolver: %v %v", dead[0].Status, dead[0].Err)
	}
}
