package main

import (
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/tlsutil"
)

// fakeSource listens on loopback and greets each client the way an IMAP
// server on that kind of port would: TLS from the first byte (tlsPort) or
// a plaintext greeting. A client that does not speak the same is dropped
// after a bounded wait.
func fakeSource(t *testing.T, tlsPort bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var cfg *tls.Config
	if tlsPort {
		dir := t.TempDir()
		if cfg, _, err = tlsutil.LoadOrCreate(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), []string{"localhost"}); err != nil {
			t.Fatal(err)
		}
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(2 * time.Second))
				if cfg != nil {
					c = tls.Server(c, cfg)
				}
				c.Write([]byte("* OK IMAP4rev1 ready\r\n"))
				c.Read(make([]byte, 512))
			}()
		}
	}()
	return ln.Addr().String()
}

// A failed connection to the source names the flag that fixes it.
func TestImportIMAPSecurityHints(t *testing.T) {
	data := t.TempDir()
	mustAgua(t, "", "domain", "add", "example.test", "-data", data)
	mustAgua(t, "a-long-password\n", "user", "add", "ann@example.test", "-data", data)
	pass := filepath.Join(t.TempDir(), "pass")
	os.WriteFile(pass, []byte("old-secret\n"), 0o600)
	tlsAddr, plainAddr := fakeSource(t, true), fakeSource(t, false)
	for _, c := range []struct {
		name  string
		flags []string
		want  string
	}{
		{"STARTTLS on an implicit-TLS port", []string{"-from", tlsAddr}, "use -tls"},
		{"implicit TLS on a plaintext port", []string{"-from", plainAddr, "-tls"}, "use -starttls"},
		{"a self-signed certificate", []string{"-from", tlsAddr, "-tls"}, "-insecure skips the check"},
	} {
		args := append([]string{"import", "imap", "-user", "ann", "-pass-file", pass, "-to", "ann@example.test", "-data", data}, c.flags...)
		code, _, errs := agua(t, "", args...)
		if code != 1 || !strings.Contains(errs, c.want) {
			t.Errorf("%s: exit %d, stderr %q, want %q", c.name, code, errs, c.want)
		}
	}
}
