// Package srs implements the Sender Rewriting Scheme (SRS, Shevek's 2004
// scheme as libsrs2 and postsrsd use it): a forwarding server replaces the
// envelope sender of a message it forwards with an address of its own
// domain, so that SPF (RFC 7208) at the destination checks the forwarder's
// domain, not the original sender's; a bounce to that address is verified
// and sent on to the original sender.
//
// The SRS0 form is
//
//	SRS0=HHHHHH=TT=original-domain=original-local@forwarding-domain
//
// TT is the day (days since the Unix epoch, modulo 1024) in two base32
// characters; HHHHHH authenticates TT, the domain and the local part with
// an HMAC-SHA256 keyed by a secret of this server. A reversal checks the
// hash (no one else can make an address that we would forward to an
// arbitrary sender, which would make the server an open relay) and the
// age (MaxAge: old addresses stop working).
//
// A message whose sender is already an SRS address (forwarded twice) gets
// the SRS1 form instead, which does not grow with each hop:
//
//	SRS1=HHHHHH=first-forwarder==HHHHHH=TT=original-domain=original-local@domain
//
// It reverses to the first forwarder's SRS0 address, which that forwarder
// reverses in turn. (Wrapping SRS0 in SRS0 would grow the local part past
// the 64 octets of RFC 5321 4.5.3.1.1 after one or two hops, and servers
// that enforce the limit would refuse the forward.)
//
// Written here rather than imported: no Go SRS library is available on the
// module proxy this project can reach, and the scheme is small. One
// deliberate difference from libsrs2, which only this server has to read:
// the hash is base32 (case-insensitive, so a relay that lowercases the
// local part does not break it) and 6 characters (30 bits) instead of
// base64's 4.
package srs

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/agua-mail/agua/internal/atomicfile"
)

// Errors of Reverse.
var (
	ErrNotSRS  = errors.New("srs: not an SRS address")
	ErrSyntax  = errors.New("srs: malformed SRS address")
	ErrBadHash = errors.New("srs: SRS address hash does not verify (forged)")
	ErrExpired = errors.New("srs: SRS address expired")
)

const (
	// DefaultMaxAge is how long a rewritten address can be bounced to
	// (libsrs2's default: 21 days).
	DefaultMaxAge = 21
	hashLen       = 6
	day           = 24 * time.Hour
	tsModulo      = 1024 // two base32 characters
)

// alpha is the RFC 4648 base32 alphabet in lower case.
const alpha = "abcdefghijklmnopqrstuvwxyz234567"

var b32 = base32.NewEncoding(alpha).WithPadding(base32.NoPadding)

// SRS rewrites and reverses addresses with one secret.
type SRS struct {
	secret []byte
	maxAge int // days
	now    func() time.Time
}

// New returns an SRS with secret; maxAge in days (0: DefaultMaxAge); now
// nil: time.Now.
func New(secret []byte, maxAge int, now func() time.Time) (*SRS, error) {
	if len(secret) < 16 {
		return nil, errors.New("srs: secret shorter than 16 bytes")
	}
	if maxAge <= 0 {
		maxAge = DefaultMaxAge
	}
	if maxAge >= tsModulo {
		return nil, errors.New("srs: max age must be under 1024 days")
	}
	if now == nil {
		now = time.Now
	}
	return &SRS{secret: secret, maxAge: maxAge, now: now}, nil
}

// LoadOrCreateSecret reads the secret at path, or creates it (32 random
// bytes, mode 0600) when there is none. Changing it invalidates every
// address handed out, so it lives in the data folder and is backed up
// with it.
func LoadOrCreateSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if len(b) < 16 {
			return nil, fmt.Errorf("srs: secret %s is shorter than 16 bytes", path)
		}
		return b, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	b = make([]byte, 32)
	rand.Read(b)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	// Synced before it is used: a secret lost to a power cut would make
	// every SRS address handed out since unverifiable.
	return b, atomicfile.Write(path, b, 0o600)
}

// IsSRS reports whether addr looks like an SRS address (its local part
// starts with "SRS0=" or "SRS1=", in any case).
func IsSRS(addr string) bool {
	return isSRS0(addr) || isSRS1(addr)
}

func isSRS0(addr string) bool { return len(addr) > 5 && strings.EqualFold(addr[:5], "SRS0=") }
func isSRS1(addr string) bool { return len(addr) > 5 && strings.EqualFold(addr[:5], "SRS1=") }

// srs1Tag keeps SRS1 hashes apart from SRS0 ones (not a base32 stamp).
const srs1Tag = "1"

// Forward rewrites sender for a message forwarded by domain. The null
// sender stays null (RFC 5321 4.5.5: nothing may bounce back to it).
func (s *SRS) Forward(sender, domain string) (string, error) {
	if sender == "" {
		return "", nil
	}
	at := strings.LastIndexByte(sender, '@')
	if at <= 0 || at == len(sender)-1 {
		return "", fmt.Errorf("%w: %q has no domain", ErrSyntax, sender)
	}
	local, dom := sender[:at], sender[at+1:]
	switch {
	case isSRS0(sender):
		// Another forwarder's (or our) SRS0 address: SRS1 naming it.
		inner := local[4:] // "=HHH=TT=domain=local"
		return "SRS1=" + s.hash(srs1Tag, dom, inner) + "=" + dom + "=" + inner + "@" + domain, nil
	case isSRS1(sender):
		// Already SRS1: keep its first forwarder and inner part.
		first, inner, err := splitSRS1(local)
		if err != nil {
			return "", err
		}
		return "SRS1=" + s.hash(srs1Tag, first, inner) + "=" + first + "=" + inner + "@" + domain, nil
	}
	ts := s.stamp(s.now())
	return "SRS0=" + s.hash(ts, dom, local) + "=" + ts + "=" + dom + "=" + local + "@" + domain, nil
}

// splitSRS1 splits the local part "SRS1=HHH=first==inner" into the first
// forwarder and "=inner" (the SRS0 address without "SRS0").
func splitSRS1(local string) (first, inner string, err error) {
	_, rest, ok := strings.Cut(local[5:], "=")
	if !ok {
		return "", "", ErrSyntax
	}
	first, in, ok := strings.Cut(rest, "==")
	if !ok || first == "" || in == "" || strings.ContainsAny(first, "@%!:[]") {
		return "", "", ErrSyntax
	}
	return first, "=" + in, nil
}

// Reverse returns the original sender of an SRS0 address made by Forward,
// after checking its hash and age; for an SRS1 address, the first
// forwarder's SRS0 address, after checking its hash.
func (s *SRS) Reverse(addr string) (string, error) {
	at := strings.LastIndexByte(addr, '@')
	if !IsSRS(addr) || at < 0 {
		return "", ErrNotSRS
	}
	if isSRS1(addr) {
		local := addr[:at]
		first, inner, err := splitSRS1(local)
		if err != nil {
			return "", err
		}
		h, _, _ := strings.Cut(local[5:], "=")
		if !hmac.Equal([]byte(strings.ToLower(h)), []byte(s.hash(srs1Tag, first, inner))) {
			return "", ErrBadHash
		}
		return "SRS0" + inner + "@" + first, nil
	}
	// Hash, stamp and domain contain no "="; the original local part may.
	parts := strings.SplitN(addr[5:at], "=", 4)
	if len(parts) != 4 || parts[2] == "" || parts[3] == "" || len(parts[1]) != 2 {
		return "", ErrSyntax
	}
	h, ts, dom, local := parts[0], parts[1], parts[2], parts[3]
	if strings.ContainsAny(dom, "@%!:[]") || strings.ContainsAny(local, "@") {
		return "", ErrSyntax
	}
	// The hash first: an unauthenticated address reveals nothing more.
	if !hmac.Equal([]byte(strings.ToLower(h)), []byte(s.hash(strings.ToLower(ts), dom, local))) {
		return "", ErrBadHash
	}
	stamp, ok := decodeStamp(strings.ToLower(ts))
	if !ok {
		return "", ErrSyntax
	}
	today := int(s.now().Unix()/int64(day/time.Second)) % tsModulo
	if age := (today - stamp + tsModulo) % tsModulo; age > s.maxAge {
		return "", ErrExpired
	}
	return local + "@" + dom, nil
}

// stamp is the day of t in two base32 characters.
func (s *SRS) stamp(t time.Time) string {
	n := int(t.Unix()/int64(day/time.Second)) % tsModulo
	return string([]byte{alpha[n>>5], alpha[n&31]})
}

func decodeStamp(ts string) (int, bool) {
	hi, lo := strings.IndexByte(alpha, ts[0]), strings.IndexByte(alpha, ts[1])
	if hi < 0 || lo < 0 {
		return 0, false
	}
	return hi<<5 | lo, true
}

// hash authenticates a stamp, domain and local part, case-insensitively
// (domains are, and relays may change the case of local parts).
func (s *SRS) hash(ts, domain, local string) string {
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte(strings.ToLower(ts + "\x00" + domain + "\x00" + local)))
	return b32.EncodeToString(m.Sum(nil))[:hashLen]
}
