package dkim

import (
	"cmp"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/net/idna"
)

// Algo is a DKIM key type (the k= tag of the key record).
type Algo string

// The key types agua creates and signs with.
const (
	Ed25519 Algo = "ed25519" // RFC 8463: ed25519-sha256
	RSA     Algo = "rsa"     // RFC 6376 / RFC 8301: rsa-sha256, 2048 bits
)

// RSABits is the size of the RSA keys Keygen creates. RFC 8301 3.2 requires
// at least 1024 bits and recommends 2048; 2048-bit records fit TXT records
// that every DNS provider accepts once split (see Key.RecordStrings).
const RSABits = 2048

// maxTXTString is the longest character-string of a TXT record (RFC 1035
// 3.3: a length octet, so 255 bytes).
const maxTXTString = 255

// Errors that decide behaviour, for errors.Is.
var (
	ErrExists      = errors.New("dkim: a key with this selector already exists")
	ErrBadDomain   = errors.New("dkim: invalid domain name")
	ErrBadSelector = errors.New("dkim: invalid selector")
	ErrBadAlgo     = errors.New("dkim: unknown key algorithm (ed25519 or rsa)")
	ErrBadKey      = errors.New("dkim: unusable key file")
)

// keyExt is the extension of a private key file: <data>/dkim/<domain>/<selector>.key,
// PKCS#8 in PEM, mode 0600. The public half and the DNS record are derived
// from it, so there is one file per selector and nothing to keep in step.
const keyExt = ".key"

// Key is one selector's key for one domain.
type Key struct {
	Domain   string // lower-case, as the d= tag
	Selector string // the s= tag
	Algo     Algo
	Path     string // the private key file
	// Start is when the key begins to sign: the key file's modification
	// time, which Keygen sets in the future to leave time to publish the
	// record first.
	Start  time.Time
	signer crypto.Signer
}

// Dir is the folder that holds every domain's keys.
func Dir(dataDir string) string { return filepath.Join(dataDir, "dkim") }

// DefaultSelector names a new key: "agua" + the date + "e" (ed25519) or "r"
// (RSA), e.g. agua20261205e. The date lets a later key rotation pick a new,
// distinct name; the letter lets both key types of one day coexist.
func DefaultSelector(algo Algo, now time.Time) string {
	suffix := "e"
	if algo == RSA {
		suffix = "r"
	}
	return "agua" + now.UTC().Format("20060102") + suffix
}

// ParseAlgo accepts "ed25519" and "rsa" (any case).
func ParseAlgo(s string) (Algo, error) {
	switch Algo(strings.ToLower(s)) {
	case Ed25519:
		return Ed25519, nil
	case RSA:
		return RSA, nil
	}
	return "", fmt.Errorf("%w: %q", ErrBadAlgo, s)
}

// Keygen creates a key for domain in the data folder and returns it; its
// Record and ZoneRecord give the TXT record to publish. selector "" picks
// DefaultSelector. An existing selector is never overwritten (ErrExists).
// The file appears atomically with mode 0600, so a running server that
// watches the folder never reads half a key.
//
// start is when the key begins to sign (zero: at once). A start in the
// future is how a key is rotated without a gap: the old key keeps signing
// while the new record reaches the DNS caches. It is kept as the file's
// modification time, set before the file appears.
func Keygen(dataDir, domain string, algo Algo, selector string, start time.Time) (*Key, error) {
	domain, err := normDomain(domain)
	if err != nil {
		return nil, err
	}
	if algo != Ed25519 && algo != RSA {
		return nil, fmt.Errorf("%w: %q", ErrBadAlgo, algo)
	}
	if selector == "" {
		selector = DefaultSelector(algo, time.Now())
	}
	if err := checkSelector(selector); err != nil {
		return nil, err
	}
	var signer crypto.Signer
	if algo == Ed25519 {
		_, signer, err = ed25519.GenerateKey(rand.Reader)
	} else {
		signer, err = rsa.GenerateKey(rand.Reader, RSABits)
	}
	if err != nil {
		return nil, fmt.Errorf("dkim: generate %s key: %w", algo, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(signer)
	if err != nil {
		return nil, fmt.Errorf("dkim: encode key: %w", err)
	}
	dir := filepath.Join(Dir(dataDir), domain)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("dkim: %w", err)
	}
	path := filepath.Join(dir, selector+keyExt)
	if err := writeNew(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), start); err != nil {
		return nil, err
	}
	k := &Key{Domain: domain, Selector: selector, Algo: algo, Path: path, Start: start, signer: signer}
	if fi, err := os.Stat(path); err == nil {
		k.Start = fi.ModTime()
	}
	return k, nil
}

// writeNew writes data to path only if path does not exist: a synced
// temporary file (with modification time mtime unless zero) is hard-linked
// into place (link fails on an existing name, where rename would replace
// it), then the folder is synced.
func writeNew(path string, data []byte, mtime time.Time) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("dkim: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o600)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("dkim: write %s: %w", path, err)
	}
	if err == nil && !mtime.IsZero() {
		err = os.Chtimes(tmp, mtime, mtime)
	}
	if err != nil {
		return fmt.Errorf("dkim: write %s: %w", path, err)
	}
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w: %s", ErrExists, path)
		}
		return fmt.Errorf("dkim: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// LoadKeys reads every key in the data folder, sorted by domain, then
// newest first. A missing dkim folder is no keys. Files that cannot be used
// are skipped and reported together in the error (each with its path);
// the keys that could be read are returned alongside.
func LoadKeys(dataDir string) ([]*Key, error) {
	root := Dir(dataDir)
	domains, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("dkim: %w", err)
	}
	var keys []*Key
	var errs []error
	for _, d := range domains {
		if !d.IsDir() || strings.HasPrefix(d.Name(), ".") {
			continue
		}
		domain, err := normDomain(d.Name())
		if err != nil || domain != d.Name() {
			errs = append(errs, fmt.Errorf("%w: folder %s is not a lower-case domain name", ErrBadKey, filepath.Join(root, d.Name())))
			continue
		}
		files, err := os.ReadDir(filepath.Join(root, domain))
		if err != nil {
			errs = append(errs, fmt.Errorf("dkim: %w", err))
			continue
		}
		for _, f := range files {
			name := f.Name()
			if f.IsDir() || strings.HasPrefix(name, ".") || !strings.HasSuffix(name, keyExt) {
				continue
			}
			k, err := loadKey(filepath.Join(root, domain, name), domain, strings.TrimSuffix(name, keyExt))
			if err != nil {
				errs = append(errs, err)
				continue
			}
			keys = append(keys, k)
		}
	}
	sortKeys(keys)
	return keys, errors.Join(errs...)
}

// sortKeys orders keys by domain, then newest first (ties: selector name,
// descending), which is the order in which Signer picks the signing key.
func sortKeys(keys []*Key) {
	slices.SortFunc(keys, func(a, b *Key) int {
		return cmp.Or(strings.Compare(a.Domain, b.Domain), b.Start.Compare(a.Start), strings.Compare(b.Selector, a.Selector))
	})
}

// loadKey reads one PKCS#8 PEM private key file.
func loadKey(path, domain, selector string) (*Key, error) {
	if err := checkSelector(selector); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadKey, path, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("dkim: %w", err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("dkim: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%w: %s: no PEM \"PRIVATE KEY\" block", ErrBadKey, path)
	}
	priv, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadKey, path, err)
	}
	k := &Key{Domain: domain, Selector: selector, Path: path, Start: fi.ModTime()}
	switch p := priv.(type) {
	case ed25519.PrivateKey:
		k.Algo, k.signer = Ed25519, p
	case *rsa.PrivateKey:
		// RFC 8301 3.2: verifiers MUST NOT consider keys under 1024 bits valid.
		if p.N.BitLen() < 1024 {
			return nil, fmt.Errorf("%w: %s: RSA key of %d bits (at least 1024, better 2048)", ErrBadKey, path, p.N.BitLen())
		}
		k.Algo, k.signer = RSA, p
	default:
		return nil, fmt.Errorf("%w: %s: %T is neither ed25519 nor RSA", ErrBadKey, path, priv)
	}
	return k, nil
}

// Record is the key record (RFC 6376 3.6.1) as one string:
// "v=DKIM1; k=ed25519; p=..." with the raw 32-byte key for ed25519 (RFC
// 8463 4.2), "v=DKIM1; k=rsa; p=..." with the SubjectPublicKeyInfo for RSA.
func (k *Key) Record() string {
	var p []byte
	switch pub := k.signer.Public().(type) {
	case ed25519.PublicKey:
		p = pub
	default:
		p, _ = x509.MarshalPKIXPublicKey(pub) // cannot fail for an *rsa.PublicKey
	}
	return "v=DKIM1; k=" + string(k.Algo) + "; p=" + base64.StdEncoding.EncodeToString(p)
}

// Name is the DNS name the record is published at (RFC 6376 3.6.2.1).
func (k *Key) Name() string { return k.Selector + "._domainkey." + k.Domain + "." }

// RecordStrings splits Record into TXT character-strings of at most 255
// bytes (RFC 1035 3.3; RFC 6376 3.6.2.2: verifiers concatenate them).
func (k *Key) RecordStrings() []string {
	rec := k.Record()
	var out []string
	for len(rec) > maxTXTString {
		out = append(out, rec[:maxTXTString])
		rec = rec[maxTXTString:]
	}
	return append(out, rec)
}

// ZoneRecord is the record in zone-file syntax, ready to paste:
// `sel._domainkey.example.org. IN TXT "v=DKIM1; ..." "..."`.
func (k *Key) ZoneRecord() string {
	parts := k.RecordStrings()
	for i, s := range parts {
		parts[i] = `"` + s + `"`
	}
	if len(parts) == 1 {
		return k.Name() + " IN TXT " + parts[0]
	}
	return k.Name() + " IN TXT ( " + strings.Join(parts, " ") + " )"
}

// normDomain lower-cases a domain and checks it is a plain DNS name that is
// also safe as a folder name.
func normDomain(d string) (string, error) {
	d = asciiDomain(strings.TrimSpace(d))
	if d == "" || len(d) > 253 || !strings.Contains(d, ".") {
		return "", fmt.Errorf("%w: %q", ErrBadDomain, d)
	}
	for _, label := range strings.Split(d, ".") {
		if !isLabel(label) {
			return "", fmt.Errorf("%w: %q", ErrBadDomain, d)
		}
	}
	return d, nil
}

// asciiDomain lower-cases a domain, drops a final dot and turns U-labels
// into A-labels: RFC 8616 4 has d= in A-labels, and the key folders use
// them too, so mail from "bücher.example" finds "xn--bcher-kva.example".
// A name idna refuses is returned lower-cased, for the caller to reject.
func asciiDomain(d string) string {
	d = strings.TrimSuffix(strings.ToLower(d), ".")
	for i := 0; i < len(d); i++ {
		if d[i] >= 0x80 {
			if a, err := idna.Lookup.ToASCII(d); err == nil {
				return a
			}
			return d
		}
	}
	return d
}

// checkSelector accepts one DNS label of letters, digits and hyphens (RFC
// 6376 3.1 allows dotted selectors; agua keeps them to one label so a
// selector is also a file name).
func checkSelector(s string) error {
	if !isLabel(s) {
		return fmt.Errorf("%w: %q (letters, digits and '-', at most 63)", ErrBadSelector, s)
	}
	return nil
}

func isLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
