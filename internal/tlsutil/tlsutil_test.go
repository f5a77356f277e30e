package tlsutil

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestLoadOrCreate(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "tls", "cert.pem"), filepath.Join(dir, "tls", "key.pem")
	cfg, created, err := LoadOrCreate(cert, key, []string{"mx.example.test"})
	if err != nil || !created || len(cfg.Certificates) != 1 {
		t.Fatalf("first start: %v created=%v", err, created)
	}
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key mode: %v %v", fi.Mode(), err)
	}
	first, _ := os.ReadFile(cert)
	if _, created, err := LoadOrCreate(cert, key, nil); err != nil || created {
		t.Fatalf("second start: %v created=%v", err, created)
	}
	if again, _ := os.ReadFile(cert); !bytes.Equal(first, again) {
		t.Fatal("a usable pair was replaced")
	}
	// A torn pair (a crash during the very first start) is replaced.
	os.WriteFile(cert, first[:len(first)/2], 0o644)
	if _, created, err := LoadOrCreate(cert, key, nil); err != nil || !created {
		t.Fatalf("torn pair: %v created=%v", err, created)
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, "tls", ".tmp-*"))
	if len(leftovers) != 0 {
		t.Fatalf("temporary files left: %v", leftovers)
	}
}

// An operator's certificate is loaded or refused, never generated.
func TestLoadNeverGenerates(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(filepath.Join(dir, "none.pem"), filepath.Join(dir, "none.key")); err == nil {
		t.Fatal("missing files accepted")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("Load wrote files: %v", ents)
	}
}
