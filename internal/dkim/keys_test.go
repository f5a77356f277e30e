package dkim

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestKeygenFiles(t *testing.T) {
	data := t.TempDir()
	k, err := Keygen(data, "Mail.Example.ORG.", Ed25519, "", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if k.Domain != "mail.example.org" || !regexp.MustCompile(`^agua\d{8}e$`).MatchString(k.Selector) {
		t.Errorf("domain %q selector %q", k.Domain, k.Selector)
	}
	if want := filepath.Join(data, "dkim", "mail.example.org", k.Selector+".key"); k.Path != want {
		t.Errorf("path %s, want %s", k.Path, want)
	}
	for path, mode := range map[string]os.FileMode{k.Path: 0o600, filepath.Dir(k.Path): 0o700} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode().Perm(), mode)
		}
	}
	// RFC 8463 4.2: the raw 32-byte key, 44 base64 characters.
	if !regexp.MustCompile(`^v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}=$`).MatchString(k.Record()) {
		t.Errorf("record %q", k.Record())
	}
	if k.ZoneRecord() != k.Name()+` IN TXT "`+k.Record()+`"` {
		t.Errorf("zone record %q", k.ZoneRecord())
	}

	// The same selector again is refused and the key is left alone.
	before, _ := os.ReadFile(k.Path)
	if _, err := Keygen(data, "mail.example.org", Ed25519, k.Selector, time.Time{}); !errors.Is(err, ErrExists) {
		t.Errorf("same selector: %v, want ErrExists", err)
	}
	if after, _ := os.ReadFile(k.Path); !bytes.Equal(before, after) {
		t.Error("existing key overwritten")
	}
	// Nothing but the key is left in the folder (no temporary files).
	if ents, _ := os.ReadDir(filepath.Dir(k.Path)); len(ents) != 1 {
		t.Errorf("folder holds %d entries", len(ents))
	}

	for _, c := range []struct {
		domain, sel string
		algo        Algo
		want        error
	}{
		{"../etc", "", Ed25519, ErrBadDomain},
		{"a/b.example", "", Ed25519, ErrBadDomain},
		{"localhost", "", Ed25519, ErrBadDomain},
		{"", "", Ed25519, ErrBadDomain},
		{"example.org", "a.b", Ed25519, ErrBadSelector},
		{"example.org", "-x", Ed25519, ErrBadSelector},
		{"example.org", "../x", Ed25519, ErrBadSelector},
		{"example.org", "", "dsa", ErrBadAlgo},
	} {
		if _, err := Keygen(data, c.domain, c.algo, c.sel, time.Time{}); !errors.Is(err, c.want) {
			t.Errorf("Keygen(%q, %q, %q): %v, want %v", c.domain, c.algo, c.sel, err, c.want)
		}
	}
	if _, err := ParseAlgo("RSA"); err != nil {
		t.Error(err)
	}
	if _, err := ParseAlgo("ecdsa"); !errors.Is(err, ErrBadAlgo) {
		t.Errorf("ParseAlgo(ecdsa): %v", err)
	}
}

// TestRSARecordSplit: a 2048-bit key record is longer than one TXT string;
// it is cut into strings of at most 255 bytes that join back to the record.
func TestRSARecordSplit(t *testing.T) {
	fx := testFixture(t)
	keys, err := LoadKeys(fx.data)
	if err != nil {
		t.Fatal(err)
	}
	var k *Key
	for _, kk := range keys {
		if kk.Domain == "rsa.example" {
			k = kk
		}
	}
	if k == nil || k.Algo != RSA {
		t.Fatalf("no RSA key loaded: %v", keys)
	}
	parts := k.RecordStrings()
	if len(parts) < 2 || strings.Join(parts, "") != k.Record() || !strings.HasPrefix(k.Record(), "v=DKIM1; k=rsa; p=MII") {
		t.Fatalf("record %q split into %q", k.Record(), parts)
	}
	for _, p := range parts {
		if len(p) > 255 {
			t.Errorf("TXT string of %d bytes", len(p))
		}
	}
	if z := k.ZoneRecord(); !strings.HasPrefix(z, k.Selector+"._domainkey.rsa.example. IN TXT ( \"v=DKIM1") || !strings.HasSuffix(z, "\" )") {
		t.Errorf("zone record %q", z)
	}
}

// TestNewestKeySigns: per domain and algorithm the newest key signs; a
// corrupt key file is reported by path and the others still load.
func TestNewestKeySigns(t *testing.T) {
	data := t.TempDir()
	old, err := Keygen(data, "example.org", Ed25519, "old", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	newer, err := Keygen(data, "example.org", Ed25519, "new", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-48 * time.Hour)
	os.Chtimes(old.Path, past, past)
	os.Chtimes(newer.Path, past.Add(time.Hour), past.Add(time.Hour))
	bad := filepath.Join(data, "dkim", "example.org", "broken.key")
	os.WriteFile(bad, []byte("not a key"), 0o600)

	keys, err := LoadKeys(data)
	if !errors.Is(err, ErrBadKey) || !strings.Contains(err.Error(), bad) {
		t.Errorf("LoadKeys error %v, want ErrBadKey naming %s", err, bad)
	}
	if len(keys) != 2 || keys[0].Selector != "new" {
		t.Fatalf("keys %v", keys)
	}
	s := NewSigner(Options{DataDir: data})
	h, err := s.Sign("", []byte(plainMsg))
	if err != nil || !bytes.Contains(h, []byte("s=new;")) || bytes.Count(h, []byte("DKIM-Signature")) != 1 {
		t.Errorf("signature %q %v, want one by selector new", h, err)
	}
	all, signing := s.Keys()
	if len(all) != 2 || !signing[all[0]] || signing[all[1]] {
		t.Errorf("Keys: %v %v", all, signing)
	}
}

// TestReload: an explicit Reload picks up a new key; a key file broken in
// place keeps the key loaded before and Reload says which file.
func TestReload(t *testing.T) {
	data := t.TempDir()
	s := NewSigner(Options{DataDir: data})
	if h, err := s.Sign("ann@example.org", []byte(plainMsg)); h != nil || err != nil {
		t.Fatalf("no key yet: %q %v", h, err)
	}
	k, err := Keygen(data, "example.org", Ed25519, "", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := s.Sign("", []byte(plainMsg)); h != nil {
		t.Fatal("signed before Reload without Watch")
	}
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if h, _ := s.Sign("", []byte(plainMsg)); !bytes.Contains(h, []byte("d=example.org;")) {
		t.Fatalf("after Reload: %q", h)
	}
	os.WriteFile(k.Path, []byte("-----BEGIN PRIVATE KEY-----\ngarbage\n"), 0o600)
	if err := s.Reload(); !errors.Is(err, ErrBadKey) || !strings.Contains(err.Error(), k.Path) {
		t.Errorf("Reload of a broken key: %v", err)
	}
	if h, _ := s.Sign("", []byte(plainMsg)); !bytes.Contains(h, []byte("s="+k.Selector+";")) {
		t.Errorf("old key dropped after a failed reload: %q", h)
	}
}

// TestWatch: with Watch on, a key created by Keygen (as `agua dkim keygen`
// does next to a running server) signs without a Reload call, for a domain
// folder that did not exist when the watch started; a removed key stops
// signing.
func TestWatch(t *testing.T) {
	data := t.TempDir()
	s := NewSigner(Options{DataDir: data})
	if err := s.Watch(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k, err := Keygen(data, "example.org", Ed25519, "", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	signs := func() bool {
		h, err := s.Sign("", []byte(plainMsg))
		if err != nil {
			t.Fatal(err)
		}
		return h != nil
	}
	waitFor(t, "the new key to sign", signs)
	if err := os.Remove(k.Path); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the removed key to stop signing", func() bool { return !signs() })
}

// waitFor polls cond until it holds, failing after a generous bound (the
// bound is a safety net, not an assertion about speed).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRotation: a key generated with a start in the future does not sign
// until then (the old key does, while the new record propagates); when the
// clock passes its start it signs, without a reload.
func TestRotation(t *testing.T) {
	data := t.TempDir()
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	if _, err := Keygen(data, "example.org", Ed25519, "old", now.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	k, err := Keygen(data, "example.org", Ed25519, "new", now.Add(48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if k.Start.Before(now.Add(47 * time.Hour)) {
		t.Errorf("start %v", k.Start)
	}
	s := NewSigner(Options{DataDir: data, Now: clock})
	selector := func() string {
		h, err := s.Sign("", []byte(plainMsg))
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`s=([^;]+);`).FindSubmatch(h)
		if m == nil || bytes.Count(h, []byte("DKIM-Signature")) != 1 {
			t.Fatalf("signature %q", h)
		}
		return string(m[1])
	}
	if got := selector(); got != "old" {
		t.Fatalf("before the new key's start: signed by %s", got)
	}
	keys, _ := LoadKeys(data)
	if sg := SigningKeys(keys, now); len(sg) != 1 {
		t.Errorf("SigningKeys: %v", sg)
	}
	mu.Lock()
	now = now.Add(49 * time.Hour)
	mu.Unlock()
	if got := selector(); got != "new" {
		t.Fatalf("after the new key's start: signed by %s", got)
	}
}

// TestSignDuringReload: signing goes on while keys are reloaded (run with
// -race); every signature made verifies with the key it names.
func TestSignDuringReload(t *testing.T) {
	data := t.TempDir()
	records := map[string][]string{}
	k, err := Keygen(data, "example.org", Ed25519, "k0", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	records[k.Name()] = k.RecordStrings()
	s := NewSigner(Options{DataDir: data})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var out [][]byte
	for range 4 {
		wg.Go(func() {
			for range 50 {
				h, err := s.Sign("", []byte(plainMsg))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				out = append(out, append(h, plainMsg...))
				mu.Unlock()
			}
		})
	}
	for i := 1; i <= 5; i++ {
		k, err := Keygen(data, "example.org", Ed25519, fmt.Sprintf("k%d", i), time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		records[k.Name()] = k.RecordStrings()
		mu.Unlock()
		s.Reload()
	}
	wg.Wait()
	for _, m := range out {
		if r := goVerify(t, records, m); len(r) != 1 || r[0] != "pass d=example.org" {
			t.Fatalf("%q", r)
		}
	}
}
