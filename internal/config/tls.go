package config

import (
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
)

// TLSConfig names the certificate: the operator's files, agua's
// self-signed pair (the default), or certificates from an ACME CA.
type TLSConfig struct {
	CertFile string `toml:"cert_file" doc:"PEM certificate chain. Empty: self-signed in <data_dir>/tls/cert.pem (or ACME certificates when acme = true)."`
	KeyFile  string `toml:"key_file" doc:"PEM private key. Empty: self-signed in <data_dir>/tls/key.pem."`

	ACME          bool   `toml:"acme" doc:"Obtain and renew certificates from an ACME CA (RFC 8555; Let's Encrypt by default) for hostname and, when [autoconfig] listen is set, for autoconfig., autodiscover. and mta-sts. of every local domain (domains added later get theirs within a minute). Every TLS listener serves them and a renewal applies to new connections at once, without restart; until a name has its certificate (or when the CA is unreachable) the self-signed pair is served and the CA is retried with backoff. Setting it accepts the CA's terms of service. Certificates and the account key are kept in <data_dir>/acme. Needs a public hostname and cannot be combined with cert_file."`
	ACMEDirectory string `toml:"acme_directory" doc:"Directory URL of the ACME CA. Let's Encrypt's staging CA, for trying things out without its rate limits, is https://acme-staging-v02.api.letsencrypt.org/directory."`
	ACMEEmail     string `toml:"acme_email" doc:"Contact address given to the CA for expiry and problem notices. Empty: none."`
	ACMEChallenge string `toml:"acme_challenge" doc:"How the CA checks that this server answers for a name: tls-alpn-01 (RFC 8737, TLS on port 443) or http-01 (RFC 8555 8.3, plain HTTP on port 80). The CA always connects to port 443 or 80 of the name's address."`
	ACMEListen    string `toml:"acme_challenge_listen" doc:"Where agua answers the challenge (host:port). Empty: :443 for tls-alpn-01, :80 for http-01. When it is the [autoconfig] listen address, that listener answers (tls = true for tls-alpn-01, tls = false for http-01); otherwise agua binds it itself and refuses to start if another program holds it. Behind a port redirect, the port agua really listens on."`
	ACMECARoot    string `toml:"acme_ca_root" doc:"PEM file of extra root certificates trusted for the ACME directory's own HTTPS, for a private or test CA (e.g. pebble). Empty: the system roots."`
}

// LetsEncrypt is the default ACME directory.
const LetsEncrypt = "https://acme-v02.api.letsencrypt.org/directory"

func defaultTLS() TLSConfig {
	return TLSConfig{ACMEDirectory: LetsEncrypt, ACMEChallenge: "tls-alpn-01"}
}

// ACMEChallengeAddr is where the ACME challenge is answered.
func (t TLSConfig) ACMEChallengeAddr() string {
	switch {
	case t.ACMEListen != "":
		return t.ACMEListen
	case t.ACMEChallenge == "http-01":
		return ":80"
	}
	return ":443"
}

func (c Config) validateTLS() []Problem {
	var ps []Problem
	t := c.TLS
	bad := func(key, msg string) { ps = append(ps, Problem{Key: "tls." + key, Msg: msg}) }
	if (t.CertFile == "") != (t.KeyFile == "") {
		bad("cert_file", "cert_file and key_file must be set together")
	}
	switch t.ACMEChallenge {
	case "tls-alpn-01", "http-01":
	default:
		bad("acme_challenge", "must be tls-alpn-01 or http-01, not \""+t.ACMEChallenge+"\"")
	}
	if t.ACMEListen != "" && !validHostPort(t.ACMEListen) {
		bad("acme_challenge_listen", hostPortProblem(t.ACMEListen))
	}
	if u, err := url.Parse(t.ACMEDirectory); err != nil || u.Scheme != "https" || u.Host == "" {
		bad("acme_directory", "must be an https:// URL, not \""+t.ACMEDirectory+"\"")
	}
	if t.ACMEEmail != "" && (!strings.Contains(t.ACMEEmail, "@") || strings.ContainsAny(t.ACMEEmail, " \t<>")) {
		bad("acme_email", "\""+t.ACMEEmail+"\" is not an email address")
	}
	if !t.ACME {
		return ps
	}
	if t.CertFile != "" {
		bad("acme", "acme = true and cert_file cannot be used together: remove one")
	}
	h := strings.ToLower(c.Hostname)
	if net.ParseIP(h) != nil || !strings.Contains(h, ".") || h == "localhost" || strings.HasSuffix(h, ".localhost") || strings.HasSuffix(h, ".local") {
		ps = append(ps, Problem{Key: "hostname", Msg: "acme = true needs the server's public DNS name as hostname (e.g. mail.example.com), not \"" + c.Hostname + "\""})
	}
	if ac := c.Autoconfig; ac.Listen != "" && ac.Listen == t.ACMEChallengeAddr() && ac.TLS != (t.ACMEChallenge == "tls-alpn-01") {
		bad("acme_challenge_listen", "the [autoconfig] listener at "+ac.Listen+" answers the "+t.ACMEChallenge+" challenge, so it needs tls = "+map[bool]string{true: "true", false: "false"}[t.ACMEChallenge == "tls-alpn-01"])
	}
	return ps
}

// LoadCARoots reads a PEM file of root certificates (tls.acme_ca_root).
func LoadCARoots(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s: no PEM certificate in it", path)
	}
	return pool, nil
}
