package config

import (
	"errors"
	"strings"
	"testing"
)

// ACME settings are checked together: a public hostname, no cert_file, a
// known challenge and an https directory, each problem on its line.
func TestACMEValidation(t *testing.T) {
	src := `hostname = "localhost"
[tls]
cert_file = "c.pem"
key_file = "k.pem"
acme = true
acme_challenge = "dns-01"
acme_directory = "http://ca.test/dir"
`
	_, err := Parse("acme.toml", []byte(src))
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("want *Error, got %v", err)
	}
	got := map[string]int{}
	for _, p := range ce.Problems {
		got[p.Key] = p.Line
	}
	for key, line := range map[string]int{"hostname": 1, "tls.acme": 5, "tls.acme_challenge": 6, "tls.acme_directory": 7} {
		if got[key] != line {
			t.Errorf("%s: want line %d, got %d\n%v", key, line, got[key], ce)
		}
	}
	if !strings.Contains(ce.Error(), "public DNS name") {
		t.Errorf("hostname problem not explained:\n%v", ce)
	}

	ok := `hostname = "mail.example.com"
[tls]
acme = true
acme_email = "ops@example.com"
acme_challenge = "http-01"
`
	c, err := Parse("ok.toml", []byte(ok))
	if err != nil {
		t.Fatal(err)
	}
	if c.TLS.ACMEDirectory != LetsEncrypt || c.TLS.ACMEChallengeAddr() != ":80" {
		t.Fatalf("defaults: %q %q", c.TLS.ACMEDirectory, c.TLS.ACMEChallengeAddr())
	}
	if Default().TLS.ACME {
		t.Fatal("ACME is on by default; the self-signed pair must stay the default")
	}
}

// The challenge listener is answered by the autoconfig listener only when
// both name the same address; an overlapping other spelling would fail to
// bind at start, so check says so.
func TestACMEChallengeListenerClash(t *testing.T) {
	base := "hostname = \"mail.example.com\"\n[tls]\nacme = true\n[autoconfig]\ntls = true\n"
	if _, err := Parse("same.toml", []byte(base+"listen = \":443\"\n")); err != nil {
		t.Fatalf("the autoconfig listener answering the challenge: %v", err)
	}
	_, err := Parse("clash.toml", []byte(base+"listen = \"0.0.0.0:443\"\n"))
	if err == nil || !strings.Contains(err.Error(), `tls.acme_challenge_listen: ":443" clashes with autoconfig.listen = "0.0.0.0:443"`) {
		t.Fatalf("clash: %v", err)
	}
	_, err = Parse("plain.toml", []byte("hostname = \"mail.example.com\"\n[tls]\nacme = true\n[autoconfig]\nlisten = \":443\"\n"))
	if err == nil || !strings.Contains(err.Error(), "needs tls = true") {
		t.Fatalf("tls-alpn-01 on a plain HTTP listener: %v", err)
	}
}
