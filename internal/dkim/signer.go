package dkim

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	msgdkim "github.com/emersion/go-msgauth/dkim"
)

// DefaultHeaders are the header fields signed when present, each as many
// times as it occurs (RFC 6376 5.4.1's recommended set, plus the MIME
// fields and List-* fields that receivers show or act on).
var DefaultHeaders = []string{
	"From", "Sender", "Reply-To", "Subject", "Date", "To", "Cc",
	"Message-ID", "In-Reply-To", "References",
	"MIME-Version", "Content-Type", "Content-Transfer-Encoding", "Content-ID", "Content-Description",
	"Resent-Date", "Resent-From", "Resent-Sender", "Resent-To", "Resent-Cc", "Resent-Message-ID",
	"List-Id", "List-Help", "List-Unsubscribe", "List-Unsubscribe-Post", "List-Subscribe",
	"List-Post", "List-Owner", "List-Archive",
}

// DefaultOversign are the fields named once more in h= than they occur
// (RFC 6376 8.15): a relay or attacker that adds another From, a Reply-To
// where there was none, or a second Subject breaks the signature instead of
// riding on it. From is always oversigned.
var DefaultOversign = []string{"From", "Reply-To", "Subject", "Date", "To", "Cc", "Message-ID",
	"MIME-Version", "Content-Type", "Content-Transfer-Encoding"}

// Options configure a Signer.
type Options struct {
	DataDir string       // the keys are in DataDir/dkim/<domain>/<selector>.key
	Log     *slog.Logger // nil: discard
	// Headers and Oversign override DefaultHeaders and DefaultOversign.
	// From is signed and oversigned whatever they say; an Oversign name
	// that is not in Headers is not signed at all.
	Headers, Oversign []string
	// Now is the clock that decides when a key's Start has come; nil is
	// time.Now.
	Now func() time.Time
}

// Signer signs outgoing messages with the keys of the data folder. It is
// safe for concurrent use; keys are swapped atomically by Reload (and by
// Watch when a key file changes). A nil *Signer signs nothing.
type Signer struct {
	dataDir  string
	log      *slog.Logger
	now      func() time.Time
	headers  []string // canonical names, From first
	oversign map[string]bool
	keys     atomic.Pointer[keySet]
	reloadMu sync.Mutex

	watchStop chan struct{}
	watchDone chan struct{}
}

// keySet is one immutable snapshot of the loaded keys.
type keySet struct {
	all    []*Key            // as LoadKeys returned them
	active map[string][]*Key // domain -> the newest started key of each algorithm, ed25519 first
	byPath map[string]*Key
	next   time.Time // the earliest Start still in the future: active changes then
}

// NewSigner loads the keys. A key file that cannot be used is logged and
// skipped (the returned error is nil: a bad key must not stop the server).
func NewSigner(opts Options) *Signer {
	s := &Signer{dataDir: opts.DataDir, log: opts.Log, now: opts.Now}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	hdrs := opts.Headers
	if hdrs == nil {
		hdrs = DefaultHeaders
	}
	over := opts.Oversign
	if over == nil {
		over = DefaultOversign
	}
	s.headers = []string{"From"}
	for _, h := range hdrs {
		if !strings.EqualFold(h, "From") && !containsFold(s.headers, h) {
			s.headers = append(s.headers, h)
		}
	}
	s.oversign = map[string]bool{"from": true}
	for _, h := range over {
		s.oversign[strings.ToLower(h)] = true
	}
	s.keys.Store(&keySet{})
	s.Reload()
	return s
}

// Reload reads the key files again. Keys that read fine replace the old
// snapshot at once; a file that fails keeps its previously loaded key, if
// any, and is named in the returned error (also logged).
func (s *Signer) Reload() error {
	if s == nil {
		return nil
	}
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	keys, err := LoadKeys(s.dataDir)
	old := s.keys.Load()
	if err != nil {
		// Keep what was loaded from files that fail now (a half-edited key
		// by hand, a permission changed by mistake).
		have := make(map[string]bool, len(keys))
		for _, k := range keys {
			have[k.Path] = true
		}
		for _, k := range old.all {
			if !have[k.Path] && fileExists(k.Path) {
				keys = append(keys, k)
			}
		}
		s.log.Warn("dkim: some keys could not be loaded", "err", err)
	}
	ks := newKeySet(keys, s.now())
	s.keys.Store(ks)
	if !sameKeys(ks, old) {
		s.log.Info("dkim: keys loaded", "keys", len(ks.all), "domains", len(ks.active))
	}
	return err
}

func newKeySet(keys []*Key, now time.Time) *keySet {
	ks := &keySet{all: keys, active: make(map[string][]*Key), byPath: make(map[string]*Key)}
	// keys are sorted by domain then newest first: the first started key of
	// each algorithm is the one that signs.
	sortKeys(keys)
	for _, k := range keys {
		ks.byPath[k.Path] = k
		if k.Start.After(now) {
			if ks.next.IsZero() || k.Start.Before(ks.next) {
				ks.next = k.Start
			}
			continue
		}
		act := ks.active[k.Domain]
		if slices.ContainsFunc(act, func(a *Key) bool { return a.Algo == k.Algo }) {
			continue
		}
		ks.active[k.Domain] = append(act, k)
	}
	for d, act := range ks.active {
		if len(act) == 2 && act[0].Algo != Ed25519 {
			ks.active[d] = []*Key{act[1], act[0]}
		}
	}
	return ks
}

// Keys returns the keys loaded now, sorted by domain then newest first,
// and which of them sign (see SigningKeys).
func (s *Signer) Keys() (keys []*Key, signing map[*Key]bool) {
	if s == nil {
		return nil, nil
	}
	ks := s.current()
	return ks.all, ks.signing()
}

// SigningKeys says which of keys sign at now: per domain, the newest key of
// each algorithm whose Start has come.
func SigningKeys(keys []*Key, now time.Time) map[*Key]bool {
	return newKeySet(slices.Clone(keys), now).signing()
}

func (ks *keySet) signing() map[*Key]bool {
	m := make(map[*Key]bool)
	for _, act := range ks.active {
		for _, k := range act {
			m[k] = true
		}
	}
	return m
}

// current returns the key snapshot, rebuilt from the loaded keys (no disk
// access) once a key's start time has come.
func (s *Signer) current() *keySet {
	ks := s.keys.Load()
	if ks.next.IsZero() {
		return ks
	}
	now := s.now()
	if now.Before(ks.next) {
		return ks
	}
	fresh := newKeySet(slices.Clone(ks.all), now)
	if s.keys.CompareAndSwap(ks, fresh) {
		s.log.Info("dkim: a new key starts signing now", "keys", len(fresh.all))
	}
	return s.keys.Load()
}

// ErrMalformed says a message could not be signed because its header
// cannot be parsed. The caller sends it unsigned; DKIM never refuses mail.
var ErrMalformed = errors.New("dkim: malformed message header")

// Sign returns the DKIM-Signature header field(s) to prepend to msg, or nil
// when no key applies (logged at debug level: "no signature" is never a
// reason to refuse or delay a message).
//
// envFrom is the envelope sender (MAIL FROM; "" for the null sender). The
// signing domain (d=) is the domain of the From header field when this
// server has a key for it, else the envelope sender's domain when it has
// one. From comes first because DMARC (RFC 7489 3.1.1) aligns d= with the
// From domain: only that signature makes a DMARC pass. The envelope domain
// is the fallback for mail whose From is not ours (a forward or SRS bounce,
// a list, a user allowed to send as an outside address): a signature by the
// domain that does answer for the message still gives receivers a verified
// identity to build reputation on, and harms nothing.
//
// With an ed25519 and an RSA key for the domain, two signatures are made
// (RFC 8463 dual signing: ed25519 first, RSA for verifiers that only know
// RSA). Canonicalization is relaxed/relaxed (RFC 6376 3.4.2, 3.4.4).
//
// The signature covers msg as it goes on the wire in SMTP DATA: line ends
// normalised to CRLF exactly as net/textproto's DotWriter does (a bare LF
// becomes CRLF) and a final CRLF added if missing; msg is not changed. The
// returned bytes end in CRLF and use CRLF line ends.
func (s *Signer) Sign(envFrom string, msg []byte) ([]byte, error) {
	if s == nil {
		return nil, nil
	}
	ks := s.current()
	wire := toWire(msg)
	hdr, ok := splitHeader(wire)
	if !ok {
		// Only a header, no blank line: RFC 5322 2.1 allows the body to be
		// absent; sign it with an empty body, as a verifier will see it.
		hdr = wire
		wire = append(wire[:len(wire):len(wire)], '\r', '\n')
	}
	fields := parseFields(hdr)
	domain, keys := s.pick(ks, fields, envFrom)
	if len(keys) == 0 {
		s.log.Debug("dkim: no key, message not signed", "from_domain", domain, "env_from", envFrom)
		return nil, nil
	}
	hkeys := s.headerKeys(fields)
	var out []byte
	for _, k := range keys {
		sig, err := msgdkim.NewSigner(&msgdkim.SignOptions{
			Domain: k.Domain, Selector: k.Selector, Signer: k.signer,
			HeaderCanonicalization: msgdkim.CanonicalizationRelaxed,
			BodyCanonicalization:   msgdkim.CanonicalizationRelaxed,
			HeaderKeys:             hkeys,
		})
		if err != nil {
			return nil, fmt.Errorf("dkim: sign for %s: %w", k.Domain, err)
		}
		if _, err := sig.Write(wire); err != nil {
			sig.Close()
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		if err := sig.Close(); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		out = append(out, sig.Signature()...)
	}
	return out, nil
}

// pick chooses the signing domain and its keys (see Sign).
func (s *Signer) pick(ks *keySet, fields []field, envFrom string) (string, []*Key) {
	var fromDomain string
	for _, f := range fields {
		if strings.EqualFold(f.name, "From") {
			for _, d := range addressDomains(f.value) {
				if keys := ks.active[d]; len(keys) > 0 {
					return d, keys
				}
				if fromDomain == "" {
					fromDomain = d
				}
			}
			break // RFC 5322 3.6: one From field; a second one is not ours to honour
		}
	}
	if at := strings.LastIndexByte(envFrom, '@'); at >= 0 {
		d := asciiDomain(envFrom[at+1:])
		if keys := ks.active[d]; len(keys) > 0 {
			return d, keys
		}
	}
	return fromDomain, nil
}

// headerKeys builds h=: each configured field as often as it occurs, plus
// once more when it is oversigned.
func (s *Signer) headerKeys(fields []field) []string {
	count := make(map[string]int, len(fields))
	for _, f := range fields {
		count[strings.ToLower(f.name)]++
	}
	var keys []string
	for _, h := range s.headers {
		n := count[strings.ToLower(h)]
		if s.oversign[strings.ToLower(h)] {
			n++
		}
		for range n {
			keys = append(keys, h)
		}
	}
	return keys
}

// field is one header field, its value unfolded.
type field struct{ name, value string }

// splitHeader returns the header block of a CRLF message up to and
// including its final CRLF; ok is false when there is no blank line.
func splitHeader(wire []byte) ([]byte, bool) {
	if bytes.HasPrefix(wire, []byte("\r\n")) {
		return nil, true
	}
	i := bytes.Index(wire, []byte("\r\n\r\n"))
	if i < 0 {
		return nil, false
	}
	return wire[:i+2], true
}

// parseFields reads header fields; a line that is neither a field nor a
// continuation is skipped (the verifier reads it the same way: it is not a
// field it could match against h=).
func parseFields(hdr []byte) []field {
	var fields []field
	for line := range strings.SplitSeq(string(hdr), "\r\n") {
		if line == "" {
			continue
		}
		if (line[0] == ' ' || line[0] == '\t') && len(fields) > 0 {
			fields[len(fields)-1].value += line
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		fields = append(fields, field{strings.TrimSpace(name), value})
	}
	return fields
}

// addressDomains returns the lower-case domains of the addresses in a From
// value, in order. RFC 2047 words that net/mail cannot decode (charsets other
// than UTF-8, US-ASCII, ISO-8859-1) fall back to reading <addr> by hand.
func addressDomains(value string) []string {
	var addrs []string
	if list, err := mail.ParseAddressList(value); err == nil {
		for _, a := range list {
			addrs = append(addrs, a.Address)
		}
	} else {
		v := value
		if i := strings.LastIndexByte(v, '<'); i >= 0 {
			v = v[i+1:]
			if j := strings.IndexByte(v, '>'); j >= 0 {
				v = v[:j]
			}
		}
		addrs = append(addrs, strings.TrimSpace(v))
	}
	var out []string
	for _, a := range addrs {
		if at := strings.LastIndexByte(a, '@'); at >= 0 {
			out = append(out, asciiDomain(a[at+1:]))
		}
	}
	return out
}

// toWire returns msg with the line ends SMTP DATA will carry: the mapping
// of net/textproto's DotWriter without its dot-stuffing (a LF not preceded
// by CR becomes CRLF; a CR alone stays; a missing final line end is added
// as the DotWriter's Close does). msg itself is returned when nothing
// changes.
func toWire(msg []byte) []byte {
	afterCR := false
	need := false
	for _, c := range msg {
		if c == '\n' && !afterCR {
			need = true
			break
		}
		afterCR = c == '\r' && !afterCR
	}
	if !need && bytes.HasSuffix(msg, []byte("\r\n")) {
		return msg
	}
	out := make([]byte, 0, len(msg)+len(msg)/32+2)
	afterCR = false
	for _, c := range msg {
		if c == '\n' && !afterCR {
			out = append(out, '\r')
		}
		out = append(out, c)
		// The DotWriter leaves its CR state on any byte, so "\r\r\n"
		// becomes "\r\r\r\n" on the wire: only the byte just before
		// counts.
		afterCR = c == '\r' && !afterCR
	}
	switch {
	case afterCR:
		out = append(out, '\n')
	case len(out) == 0 || out[len(out)-1] != '\n':
		out = append(out, '\r', '\n')
	}
	return out
}

// sameKeys says whether two snapshots hold the same key files.
func sameKeys(a, b *keySet) bool {
	if len(a.byPath) != len(b.byPath) {
		return false
	}
	for p, k := range a.byPath {
		o := b.byPath[p]
		if o == nil || !o.Start.Equal(k.Start) {
			return false
		}
	}
	return true
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func containsFold(list []string, s string) bool {
	return slices.ContainsFunc(list, func(x string) bool { return strings.EqualFold(x, s) })
}
