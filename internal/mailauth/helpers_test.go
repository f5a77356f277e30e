package mailauth

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/dkim"
	"github.com/agua-mail/agua/internal/resolver"
	"github.com/agua-mail/agua/internal/resolver/dnstest"
)

// testHost is the test server's host name.
const testHost = "mx.agua.test"

// world is a test DNS server with the records of the sending domains, a
// resolver asking it, a Checker, and signers.
type world struct {
	dns     *dnstest.Server
	res     *resolver.Resolver
	c       *Checker
	signer  *dkim.Signer // agua's own signer, keys for bank.example
	pyKey   string       // PEM file of the RSA key dkimpy signs with (selector py)
	percent int          // what the Checker's pct sampling draws
}

// zone holds the records of the test domains. The ".example" names are
// their own organizational domains (".example" is not in the public
// suffix list, so its default rule makes "bank.example" the org domain).
var zone = []string{
	// bank.example: p=reject, subdomains quarantine; mail from 192.0.2.10.
	`bank.example. 300 IN TXT "v=spf1 ip4:192.0.2.10 -all"`,
	`_dmarc.bank.example. 300 IN TXT "v=DMARC1; p=reject; sp=quarantine; rua=mailto:d@bank.example"`,
	`mail.bank.example. 300 IN TXT "v=spf1 ip4:192.0.2.10 -all"`,
	// shop.example: p=quarantine, SPF softfail for everyone else.
	`shop.example. 300 IN TXT "v=spf1 ip4:192.0.2.20 ~all"`,
	`_dmarc.shop.example. 300 IN TXT "v=DMARC1; p=quarantine"`,
	// news.example: p=none (monitoring).
	`news.example. 300 IN TXT "v=spf1 -all"`,
	`_dmarc.news.example. 300 IN TXT "v=DMARC1; p=none"`,
	// strict.example and relaxed.example: bounces from a subdomain.
	`_dmarc.strict.example. 300 IN TXT "v=DMARC1; p=reject; adkim=s; aspf=s"`,
	`bounce.strict.example. 300 IN TXT "v=spf1 ip4:192.0.2.30 -all"`,
	`_dmarc.relaxed.example. 300 IN TXT "v=DMARC1; p=reject"`,
	`bounce.relaxed.example. 300 IN TXT "v=spf1 ip4:192.0.2.30 -all"`,
	// sampled.example: p=reject for pct=50 of failing mail.
	`_dmarc.sampled.example. 300 IN TXT "v=DMARC1; p=reject; pct=50"`,
	// SPF edge cases.
	`broken.example. 300 IN TXT "v=spf1 frobnicate:x ip4:192.0.2.40 -all"`,
	`void.example. 300 IN TXT "v=spf1 a:n1.void.example a:n2.void.example a:n3.void.example ip4:192.0.2.50 -all"`,
	`many.example. 300 IN TXT "v=spf1 include:i1.many.example include:i2.many.example include:i3.many.example include:i4.many.example include:i5.many.example include:i6.many.example include:i7.many.example include:i8.many.example include:i9.many.example include:i10.many.example include:i11.many.example ip4:192.0.2.60 -all"`,
	`mxa.example. 300 IN TXT "v=spf1 mx a -all"`,
	`mxa.example. 300 IN MX 10 smtp.mxa.example.`,
	`smtp.mxa.example. 300 IN A 192.0.2.70`,
	`slow.example. 300 IN TXT "v=spf1 -all"`,
	`_dmarc.slow.example. 300 IN TXT "v=DMARC1; p=reject"`,
	`servfail.example. 300 IN TXT "v=spf1 -all"`,
	`_dmarc.servfail.example. 300 IN TXT "v=DMARC1; p=reject"`,
}

func init() {
	for i := 1; i <= 11; i++ {
		zone = append(zone, fmt.Sprintf(`i%d.many.example. 300 IN TXT "v=spf1 ip4:203.0.113.%d -all"`, i, i))
	}
}

// makeKeys makes agua's DKIM keys once for the package's tests (RSA key
// generation is the slow part): ed25519 and RSA for each signing domain.
func makeKeys() (string, error) {
	dir, err := os.MkdirTemp("", "agua-mailauth-test-")
	if err != nil {
		return "", err
	}
	for _, d := range []string{"bank.example", "mail.bank.example", "relaxed.example", "shop.example"} {
		for _, a := range []dkim.Algo{dkim.Ed25519, dkim.RSA} {
			if _, err := dkim.Keygen(dir, d, a, "", time.Time{}); err != nil {
				return "", err
			}
		}
	}
	return dir, nil
}

func TestMain(m *testing.M) {
	code := m.Run()
	if keysDir != "" {
		os.RemoveAll(keysDir)
	}
	os.Exit(code)
}

var (
	keysOnce sync.Once
	keysDir  string
	keysErr  error

	pyKeyOnce sync.Once
	pyKeyPEM  []byte
	pyKeyRec  string
	pyKeyErr  error
)

// newWorld starts the DNS server on ip (each test its own) and makes the
// keys: agua's signer for bank.example, relaxed.example and strict.example
// (ed25519 and RSA), and one RSA key (selector "py") for dkimpy under
// every domain.
func newWorld(t testing.TB) *world {
	t.Helper()
	w := &world{dns: dnstest.Start(t, "127.0.0.1")}
	w.dns.Add(t, zone...)
	var err error
	w.res, err = resolver.New(resolver.Config{Servers: []string{w.dns.Addr}, Timeout: 300 * time.Millisecond, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	w.c, err = New(Config{Hostname: testHost, Resolver: w.res, Percent: func() int { return w.percent }})
	if err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	keysOnce.Do(func() { keysDir, keysErr = makeKeys() })
	if keysErr != nil {
		t.Fatal(keysErr)
	}
	keys, err := dkim.LoadKeys(keysDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		w.addTXT(t, k.Name(), k.RecordStrings()...)
	}
	w.signer = dkim.NewSigner(dkim.Options{DataDir: keysDir})

	pyKeyOnce.Do(func() {
		var k *rsa.PrivateKey
		if k, pyKeyErr = rsa.GenerateKey(rand.Reader, 2048); pyKeyErr != nil {
			return
		}
		pyKeyPEM = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
		der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
		pyKeyRec = "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
	})
	if pyKeyErr != nil {
		t.Fatal(pyKeyErr)
	}
	w.pyKey = filepath.Join(data, "py.pem")
	if err := os.WriteFile(w.pyKey, pyKeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"bank.example", "mail.strict.example", "mail.relaxed.example", "slow.example", "servfail.example"} {
		w.addTXT(t, "py._domainkey."+d+".", pyKeyRec)
	}
	return w
}

// addTXT adds a TXT record of several strings (a key longer than 255
// bytes is split, RFC 7208 3.3 / RFC 6376 3.6.2.2).
func (w *world) addTXT(t testing.TB, name string, parts ...string) {
	t.Helper()
	var b strings.Builder
	for _, p := range parts {
		for len(p) > 0 {
			n := min(len(p), 200)
			fmt.Fprintf(&b, " %q", p[:n])
			p = p[n:]
		}
	}
	w.dns.Add(t, name+" 300 IN TXT"+b.String())
}

// msg builds a message with CRLF line ends.
func msg(from, subject, body string) []byte {
	return []byte(strings.ReplaceAll(fmt.Sprintf("From: %s\nTo: user@agua.test\nSubject: %s\nDate: Sat, 05 Dec 2026 20:00:00 +0000\nMessage-ID: <%d@test>\n\n%s", from, subject, time.Now().UnixNano(), body), "\n", "\r\n"))
}

// aguaSign signs m with agua's own signer (internal/dkim).
func (w *world) aguaSign(t testing.TB, envFrom string, m []byte) []byte {
	t.Helper()
	sig, err := w.signer.Sign(envFrom, m)
	if err != nil || sig == nil {
		t.Fatalf("agua signer: %v (signature %q)", err, sig)
	}
	return append(sig, m...)
}

// pySign signs m with dkimpy for domain, selector py; length adds l=.
func (w *world) pySign(t *testing.T, domain string, m []byte, length bool) []byte {
	t.Helper()
	py := "/usr/bin/python3"
	if exec.Command(py, "-c", "import dkim").Run() != nil {
		msg := "/usr/bin/python3 with the dkim module not found (Debian: apt-get install python3-dkim)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip("SKIP: " + msg)
	}
	l := "0"
	if length {
		l = "1"
	}
	cmd := exec.Command(py, filepath.Join("testdata", "sign.py"), w.pyKey, "py", domain, l)
	cmd.Stdin = bytes.NewReader(m)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sign.py: %v\n%s", err, stderr.String())
	}
	return out
}

// check runs the whole check of one message from ip.
func (w *world) check(t testing.TB, ip, helo, mailFrom string, m []byte) *Result {
	t.Helper()
	ch := w.c.Begin(context.Background(), Envelope{IP: netip.MustParseAddr(ip), Helo: helo, From: mailFrom})
	defer ch.Close()
	r, err := ch.Finish(context.Background(), bytes.NewReader(m), int64(len(m)))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// dkimResults lists "result d=domain" per signature.
func dkimResults(r *Result) []string {
	var out []string
	for _, d := range r.DKIM {
		out = append(out, d.Result+" d="+d.Domain)
	}
	return out
}
