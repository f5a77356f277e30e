package crash

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agua-mail/agua/test/internal/harness"
)

// TestKill9DuringFirstStart kills agua while its first start generates the
// self-signed certificate, then restarts it on the same data folder: it
// must start, whatever state the kill left. (It did not before 726a569:
// key.pem and cert.pem were written in place one after the other, and a
// kill between them left a folder agua refused to start on.)
func TestKill9DuringFirstStart(t *testing.T) {
	attempts := 10
	if testing.Short() {
		attempts = 5
	}
	for i := range attempts {
		srv := harness.New(t, harness.Options{})
		key := filepath.Join(srv.DataDir, "tls", "key.pem")
		srv.Launch(t)
		// Kill as soon as key.pem exists: between the key and the
		// certificate, or just after both.
		const appear = 30 * time.Second // a bound, not an expectation
		deadline := time.Now().Add(appear)
		for {
			if _, err := os.Stat(key); err == nil {
				break
			}
			if exited, err := srv.Exited(); exited {
				t.Fatalf("attempt %d: agua exited during its first start: %v\n%s", i, err, srv.LogTail(20))
			}
			if time.Now().After(deadline) {
				t.Fatalf("attempt %d: %s did not appear within %v", i, key, appear)
			}
		}
		srv.Kill(t)
		state := tlsState(srv.DataDir)
		srv.Start(t) // fails the test with agua's error if it cannot start
		srv.Stop(t)
		t.Logf("attempt %d: killed with tls/ %s; restart OK", i, state)
	}
}

// TestStartAfterTornCertificate starts agua on data folders holding what a
// kill during certificate generation could leave behind before 726a569,
// without timing luck: the self-signed pair must be made again.
func TestStartAfterTornCertificate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string // name in data/tls → content
	}{
		{"key-without-cert", map[string]string{"key.pem": pemKey(t)}},
		{"empty-key-without-cert", map[string]string{"key.pem": ""}},
		{"torn-key-without-cert", map[string]string{"key.pem": "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49"}},
		{"key-and-empty-cert", map[string]string{"key.pem": pemKey(t), "cert.pem": ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := harness.New(t, harness.Options{})
			dir := filepath.Join(srv.DataDir, "tls")
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			for name, content := range tc.files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			srv.Start(t)
			srv.Stop(t)
		})
	}
}

func tlsState(data string) string {
	var parts []string
	for _, name := range []string{"key.pem", "cert.pem"} {
		fi, err := os.Stat(filepath.Join(data, "tls", name))
		if err != nil {
			parts = append(parts, name+" missing")
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %d bytes", name, fi.Size()))
	}
	return strings.Join(parts, ", ")
}

// pemKey returns a valid PKCS #8 private key, as the first write leaves it.
func pemKey(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// TestKill9DuringDemoCreation kills the first start (embedded default
// demo = true) at random moments: after a restart the demo user must exist
// (regression: the steps were separate commits and a start killed between
// them left the domain without the user, for good).
func TestKill9DuringDemoCreation(t *testing.T) {
	attempts := 25 // the window is tens of ms: about one kill in five hits it
	if testing.Short() {
		attempts = 5
	}
	for i := range attempts {
		srv := harness.New(t, harness.Options{Demo: true})
		srv.Launch(t)
		delay := 20*time.Millisecond + rand.N(200*time.Millisecond)
		time.Sleep(delay)
		srv.Kill(t)
		before := srv.Agua(t, "", "user", "list")
		srv.Start(t)
		srv.Stop(t)
		if users := srv.Agua(t, "", "user", "list"); !strings.Contains(users, "demo@example.test") {
			t.Fatalf("attempt %d: killed after %v; after a restart there is no demo user:\n%s\n(domains: %s)",
				i, delay, users, srv.Agua(t, "", "domain", "list"))
		}
		t.Logf("attempt %d: killed after %v with %d user(s); demo user present after restart",
			i, delay, strings.Count(before, "\n")-1)
	}
}
