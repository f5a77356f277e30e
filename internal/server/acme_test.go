package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/resolver/dnstest"
	"github.com/agua-mail/agua/internal/tlsutil"
)

// pebbleCA is pebble, the ACME test CA, on loopback: it validates
// challenges for real on challengePort of whatever the test's DNS server
// answers, and issues certificates valid for validity.
type pebbleCA struct {
	directory string         // ACME directory URL
	caRoot    string         // PEM file: pebble's own HTTPS certificate
	roots     *x509.CertPool // the root pebble issues under
	rootPEM   []byte
	dns       *dnstest.Server
}

func startPebble(t *testing.T, challengePort int, validity time.Duration) *pebbleCA {
	t.Helper()
	bin, err := exec.LookPath("pebble")
	if err != nil {
		msg := "pebble (the ACME test CA) is not installed (Debian: apt-get install pebble; .ci/run installs it)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip("SKIP: " + msg)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if _, _, err := tlsutil.LoadOrCreate(certFile, keyFile, []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	dirPort, mgmtPort := freePort(t, "127.0.0.1"), freePort(t, "127.0.0.1")
	conf := map[string]any{"pebble": map[string]any{
		"listenAddress": fmt.Sprintf("127.0.0.1:%d", dirPort), "managementListenAddress": fmt.Sprintf("127.0.0.1:%d", mgmtPort),
		"certificate": certFile, "privateKey": keyFile, "httpPort": challengePort, "tlsPort": challengePort,
		"ocspResponderURL": "", "externalAccountBindingRequired": false,
		"certificateValidityPeriod": int(validity / time.Second),
	}}
	data, _ := json.Marshal(conf)
	confFile := filepath.Join(dir, "pebble.json")
	os.WriteFile(confFile, data, 0o644)
	dns := dnstest.Start(t, "127.0.0.1")
	cmd := exec.Command(bin, "-config", confFile, "-dnsserver", dns.Addr)
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0")
	logf, _ := os.Create(filepath.Join(dir, "pebble.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("pebble log:\n%s", b)
		}
	})
	p := &pebbleCA{directory: fmt.Sprintf("https://127.0.0.1:%d/dir", dirPort), caRoot: certFile, dns: dns}
	pool, err := config.LoadCARoots(certFile)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	var root []byte
	eventually(t, "pebble to answer", func() bool {
		resp, err := hc.Get(fmt.Sprintf("https://127.0.0.1:%d/roots/0", mgmtPort))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		root, _ = io.ReadAll(resp.Body)
		return resp.StatusCode == 200
	})
	p.rootPEM = root
	p.roots = x509.NewCertPool()
	if !p.roots.AppendCertsFromPEM(root) {
		t.Fatalf("pebble root: %q", root)
	}
	return p
}

// resolve makes the test's DNS answer 127.0.0.1 for names.
func (p *pebbleCA) resolve(t *testing.T, names ...string) {
	for _, n := range names {
		p.dns.Add(t, n+". 60 IN A 127.0.0.1")
	}
}

// eventually polls cond until it holds, failing the test after a generous
// bound (no timing is asserted: the bound only stops a hung test; ACME
// issuance and renewal take seconds on a loaded machine).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitWithin(t, 90*time.Second, what, cond)
}

// verifiedLeaf does a TLS handshake on conn for name, trusting only roots,
// and returns the leaf, or nil when the certificate does not verify.
func verifiedLeaf(conn net.Conn, name string, roots *x509.CertPool) *x509.Certificate {
	tc := tls.Client(conn, &tls.Config{ServerName: name, RootCAs: roots})
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	defer tc.Close()
	if err := tc.Handshake(); err != nil {
		return nil
	}
	return tc.ConnectionState().PeerCertificates[0]
}

func implicitTLSLeaf(t *testing.T, addr, name string, roots *x509.CertPool) *x509.Certificate {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return verifiedLeaf(conn, name, roots)
}

// startTLSLeaf is a submission client: banner, EHLO, STARTTLS, handshake.
func startTLSLeaf(t *testing.T, addr, name string, roots *x509.CertPool) *x509.Certificate {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	readReply := func() string {
		var last string
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("submission: %v", err)
			}
			if last = line; len(line) < 4 || line[3] != '-' {
				return last
			}
		}
	}
	readReply()
	fmt.Fprintf(conn, "EHLO client.test\r\n")
	readReply()
	fmt.Fprintf(conn, "STARTTLS\r\n")
	if rep := readReply(); !strings.HasPrefix(rep, "220") {
		t.Fatalf("STARTTLS: %q", rep)
	}
	return verifiedLeaf(conn, name, roots)
}

func serial(c *x509.Certificate) *big.Int {
	if c == nil {
		return nil
	}
	return c.SerialNumber
}

// With [tls] acme against pebble, agua obtains certificates for its
// hostname and its domains' autoconfig names (validated for real by
// TLS-ALPN-01 on its challenge listener), serves them on submission
// (STARTTLS), IMAPS and the HTTPS autoconfig listener, gets one for a
// domain added while it runs, and renews without restart: a new
// connection sees a new serial.
func TestACMEWithPebble(t *testing.T) {
	const host = "mx.agua.test"
	challengePort := freePort(t, "127.0.0.1")
	// Short-lived certificates, checked every second: renewal comes due
	// while the test runs (certmagic renews in the last third of the life).
	pebble := startPebble(t, challengePort, 30*time.Second)
	pebble.resolve(t, host, "autoconfig.example.test", "autodiscover.example.test", "mta-sts.example.test",
		"autoconfig.second.test", "autodiscover.second.test", "mta-sts.second.test")
	oldPoll, oldCheck := acmeDomainPoll, acmeRenewCheck
	acmeDomainPoll, acmeRenewCheck = 200*time.Millisecond, time.Second
	t.Cleanup(func() { acmeDomainPoll, acmeRenewCheck = oldPoll, oldCheck })

	ts := startServer(t, func(c *config.Config) {
		c.Hostname = host
		c.TLS.ACME = true
		c.TLS.ACMEDirectory = pebble.directory
		c.TLS.ACMECARoot = pebble.caRoot
		c.TLS.ACMEEmail = "postmaster@example.test"
		c.TLS.ACMEListen = fmt.Sprintf("127.0.0.1:%d", challengePort)
		c.Autoconfig.Listen = "127.0.0.1:0"
		c.Autoconfig.TLS = true
	})
	sub, imaps, ac := ts.srv.Addr("submission"), ts.srv.Addr("imaps"), ts.srv.Addr("autoconfig")

	var first *x509.Certificate
	eventually(t, "a pebble certificate on submission", func() bool {
		first = startTLSLeaf(t, sub, host, pebble.roots)
		return first != nil
	})
	if first.Subject.CommonName != host && !containsName(first.DNSNames, host) {
		t.Fatalf("submission certificate is for %v", first.DNSNames)
	}
	if leaf := implicitTLSLeaf(t, imaps, host, pebble.roots); leaf == nil {
		t.Fatal("IMAPS does not serve the pebble certificate")
	}
	// A real client: openssl verifies the chain against pebble's root.
	rootFile := filepath.Join(t.TempDir(), "root.pem")
	os.WriteFile(rootFile, pebble.rootPEM, 0o644)
	out, err := exec.Command("openssl", "s_client", "-connect", imaps, "-servername", host, "-CAfile", rootFile,
		"-verify_return_error", "-verify_hostname", host).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Verify return code: 0 (ok)") {
		t.Fatalf("openssl s_client on IMAPS: %v\n%s", err, out)
	}
	// Without SNI (clients that connect by address) the hostname's certificate.
	conn, _ := net.Dial("tcp", imaps)
	tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil || !containsName(tc.ConnectionState().PeerCertificates[0].DNSNames, host) {
		t.Fatalf("no SNI: %v", err)
	}
	tc.Close()

	eventually(t, "the autoconfig name's certificate", func() bool {
		return implicitTLSLeaf(t, ac, "autoconfig.example.test", pebble.roots) != nil
	})
	// A domain added while agua runs gets its names' certificates.
	if err := ts.dir.AddDomain(context.Background(), "second.test"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the new domain's mta-sts certificate", func() bool {
		return implicitTLSLeaf(t, ac, "mta-sts.second.test", pebble.roots) != nil
	})

	// Renewal, live: a new connection to the same listener gets a
	// certificate with another serial, issued by pebble.
	eventually(t, "a renewed certificate on submission", func() bool {
		c := startTLSLeaf(t, sub, host, pebble.roots)
		return c != nil && c.SerialNumber.Cmp(first.SerialNumber) != 0
	})
	// agua status shows each managed name with the certificate served.
	st := ts.srv.status().(Status)
	found := false
	for _, c := range st.Certificates {
		if c.Name == host {
			found = c.Serial != "" && strings.Contains(strings.ToLower(c.Issuer), "pebble")
		}
	}
	if !found || len(st.Certificates) != 7 {
		t.Fatalf("status certificates: %+v", st.Certificates)
	}
	// ... by certmagic's renewal, which says so in one line.
	if logs := ts.logs.String(); !strings.Contains(logs, `msg="acme: certificate obtained" name=mx.agua.test renewal=true`) {
		t.Fatalf("no log line for the renewal:\n%s", logs)
	}
}

func containsName(names []string, n string) bool {
	for _, x := range names {
		if x == n {
			return true
		}
	}
	return false
}

// A CA that cannot be reached: agua starts, serves its self-signed pair
// and logs the failure in one line (certmagic retries with backoff).
func TestACMEUnreachableCAServesSelfSigned(t *testing.T) {
	dead := freePort(t, "127.0.0.1") // nothing listens there
	ts := startServer(t, func(c *config.Config) {
		c.Hostname = "mx.agua.test"
		c.TLS.ACME = true
		c.TLS.ACMEDirectory = fmt.Sprintf("https://127.0.0.1:%d/dir", dead)
		c.TLS.ACMEListen = fmt.Sprintf("127.0.0.1:%d", freePort(t, "127.0.0.1"))
	})
	eventually(t, "the failure's log line", func() bool {
		return strings.Contains(ts.logs.String(), "acme: obtaining certificate failed")
	})
	conn, err := net.Dial("tcp", ts.srv.Addr("imaps"))
	if err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true, ServerName: "mx.agua.test"})
	defer tc.Close()
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	if org := tc.ConnectionState().PeerCertificates[0].Subject.Organization; len(org) == 0 || org[0] != "agua self-signed" {
		t.Fatalf("served %v, want the self-signed pair", org)
	}
}

// The challenge port held by another program stops the start, saying so.
func TestACMEChallengePortTaken(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	cfg := testConfig(t)
	cfg.Hostname = "mx.agua.test"
	cfg.TLS.ACME = true
	cfg.TLS.ACMEListen = held.Addr().String()
	srv, err := New(cfg, slog.New(slog.DiscardHandler), io.Discard)
	if err == nil {
		srv.Close()
		t.Fatal("started with the challenge port taken")
	}
	if !strings.Contains(err.Error(), "acme challenge listener") || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("error: %v", err)
	}
}

// HTTP-01 answered by the plain-HTTP autoconfig listener (the address of
// both is the same): pebble validates over HTTP and the certificate is
// served on POP3S, while autoconfig documents still answer there.
func TestACMEHTTP01OnAutoconfigListener(t *testing.T) {
	const host = "mx.agua.test"
	port := freePort(t, "127.0.0.1")
	pebble := startPebble(t, port, time.Hour)
	pebble.resolve(t, host, "autoconfig.example.test", "autodiscover.example.test", "mta-sts.example.test")
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	ts := startServer(t, func(c *config.Config) {
		c.Hostname = host
		c.TLS.ACME = true
		c.TLS.ACMEDirectory = pebble.directory
		c.TLS.ACMECARoot = pebble.caRoot
		c.TLS.ACMEChallenge = "http-01"
		c.TLS.ACMEListen = addr
		c.Autoconfig.Listen = addr
	})
	eventually(t, "a pebble certificate on POP3S", func() bool {
		return implicitTLSLeaf(t, ts.srv.Addr("pop3s"), host, pebble.roots) != nil
	})
	resp, err := http.Get("http://" + addr + "/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=" + testUser)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("autoconfig behind the challenge handler: %s", resp.Status)
	}
	if ts.srv.Addr("acme") != "" {
		t.Fatal("a second listener was bound for the challenge")
	}
}
