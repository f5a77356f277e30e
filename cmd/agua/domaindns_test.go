package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/agua-mail/agua/internal/resolver/dnstest"
)

// TestDomainDNSAndCheck prints a domain's records, serves them (some
// changed, some left out) from a DNS server on loopback, and checks that
// `domain check` names each one right.
func TestDomainDNSAndCheck(t *testing.T) {
	data := t.TempDir()
	cfg := filepath.Join(data, "agua.toml")
	os.WriteFile(cfg, []byte("hostname = \"mail.example.net\"\n[autoconfig]\nmta_sts_mode = \"enforce\"\n"), 0o600)
	mustAgua(t, "", "domain", "add", "example.org", "-data", data)
	mustAgua(t, "", "domain", "add", "second.example", "-data", data)
	mustAgua(t, "", "dkim", "keygen", "example.org", "-algo", "ed25519", "-selector", "s1", "-data", data)

	out := mustAgua(t, "", "domain", "dns", "Example.org", "-config", cfg, "-data", data)
	for _, re := range []string{
		`(?m)^example\.org\. IN MX 10 mail\.example\.net\.$`,
		`(?m)^example\.org\. IN TXT "v=spf1 mx -all"$`,
		`(?m)^s1\._domainkey\.example\.org\. IN TXT "v=DKIM1; k=ed25519; p=[A-Za-z0-9+/=]+"$`,
		`(?m)^_dmarc\.example\.org\. IN TXT "v=DMARC1; p=quarantine; rua=mailto:postmaster@example\.org"$`,
		`(?m)^_mta-sts\.example\.org\. IN TXT "v=STSv1; id=[0-9a-f]{20}"$`,
		`(?m)^; MTA-STS: .*\(mode enforce\)`,
		`(?m)^_smtp\._tls\.example\.org\. IN TXT "v=TLSRPTv1; rua=mailto:postmaster@example\.org"$`,
		`(?m)^_submission\._tcp\.example\.org\. IN SRV 0 1 2587 mail\.example\.net\.$`,
		`(?m)^_imaps\._tcp\.example\.org\. IN SRV 0 1 2993 mail\.example\.net\.$`,
		`(?m)^_pop3s\._tcp\.example\.org\. IN SRV 0 1 2995 mail\.example\.net\.$`,
		`(?m)^autoconfig\.example\.org\. IN CNAME mail\.example\.net\.$`,
		`(?m)^autodiscover\.example\.org\. IN CNAME mail\.example\.net\.$`,
		`(?m)^mta-sts\.example\.org\. IN CNAME mail\.example\.net\.$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("domain dns lacks %s:\n%s", re, out)
		}
	}
	if strings.Contains(out, "dkim keygen") {
		t.Errorf("keygen hint although the domain has a key:\n%s", out)
	}
	// Without a key: no DKIM record, DMARC monitors only, and a hint.
	out2 := mustAgua(t, "", "domain", "dns", "second.example", "-config", cfg, "-data", data)
	if strings.Contains(out2, "_domainkey") || !strings.Contains(out2, "p=none") || !strings.Contains(out2, "agua dkim keygen second.example") {
		t.Errorf("domain dns without keys:\n%s", out2)
	}

	// Serve what was printed, except: SPF changed, the IMAPS port wrong,
	// TLS-RPT and the autodiscover CNAME left out.
	var zone []string
	for _, line := range strings.Split(out, "\n") {
		switch {
		case line == "" || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "_smtp._tls."), strings.HasPrefix(line, "autodiscover."):
		case strings.Contains(line, "v=spf1"):
			zone = append(zone, `example.org. IN TXT "v=spf1 a mx ~all"`, `example.org. IN TXT "other=text"`)
		case strings.HasPrefix(line, "_imaps."):
			zone = append(zone, "_imaps._tcp.example.org. IN SRV 0 1 993 mail.example.net.")
		default:
			zone = append(zone, line)
		}
	}
	dnsSrv := dnstest.Start(t, "127.0.54.1")
	dnsSrv.Add(t, zone...)
	code, got, errs := agua(t, "", "domain", "check", "example.org", "-resolver", dnsSrv.Addr, "-config", cfg, "-data", data)
	if code != 1 || !strings.Contains(errs, "4 of 15") {
		t.Errorf("domain check: exit %d, stderr %q", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(got), "\n")
	if len(lines) != 15 {
		t.Fatalf("domain check printed %d lines, want one per record:\n%s", len(lines), got)
	}
	for _, want := range []string{
		"ok       example.org. MX 10 mail.example.net.",
		`differs  example.org. TXT: want "v=spf1 mx -all" got "v=spf1 a mx ~all"`,
		`missing  _smtp._tls.example.org. TXT: want "v=TLSRPTv1; rua=mailto:postmaster@example.org"`,
		"differs  _imaps._tcp.example.org. SRV: want 0 1 2993 mail.example.net. got 0 1 993 mail.example.net.",
		"ok       _pop3._tcp.example.org. SRV 0 1 2110 mail.example.net.",
		"missing  autodiscover.example.org. CNAME: want mail.example.net.",
		"ok       mta-sts.example.org. CNAME mail.example.net.",
	} {
		if !strings.Contains(got, want+"\n") {
			t.Errorf("domain check lacks %q:\n%s", want, got)
		}
	}
	if !regexp.MustCompile(`(?m)^ok +s1\._domainkey\.example\.org\. TXT "v=DKIM1; k=ed25519`).MatchString(got) {
		t.Errorf("DKIM record not ok:\n%s", got)
	}

	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"domain", "dns", "unknown.example"}, 1, "not a local domain"},
		{[]string{"domain", "check", "example.org"}, 2, "-resolver HOST:PORT"},
		{[]string{"domain", "check", "example.org", "-resolver", "127.0.54.2:9", "-timeout", "300ms"}, 1, "the DNS server 127.0.54.2:9 answered none of the 15 queries"},
		{[]string{"domain", "check", "example.org", "-resolver", "127.0.54.2", "-timeout", "300ms"}, 1, "the DNS server 127.0.54.2:53 answered none"},
		{[]string{"domain", "check", "example.org", "-resolver", "nonsense"}, 2, `-resolver "nonsense": want a DNS server's address`},
		{[]string{"domain", "check", "example.org", "-resolver", "127.0.54.2:99999"}, 2, `-resolver "127.0.54.2:99999"`},
	} {
		code, out, errs := agua(t, "", append(c.args, "-data", data)...)
		if code != c.code || !strings.Contains(errs, c.want) {
			t.Errorf("agua %v: exit %d, stdout %q stderr %q; want exit %d and %q", c.args, code, out, errs, c.code, c.want)
		}
	}
}
