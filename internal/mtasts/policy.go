// Package mtasts implements the sending side of SMTP MTA Strict Transport
// Security (RFC 8461): it finds a destination domain's policy through the
// "_mta-sts" TXT record (RFC 8461 3.1), fetches it over HTTPS from
// https://mta-sts.DOMAIN/.well-known/mta-sts.txt with a verified
// certificate (3.3), parses it (3.2), keeps it in a bounded cache persisted
// in the data folder (5.1: a policy is used until max_age runs out, and
// fetched again when the TXT id changes), and says which MX hosts it
// allows (4.1).
//
// What a sender does with the policy (TLS required, certificate verified
// against the MX name, mail deferred otherwise in enforce mode) is the
// delivery engine's decision (internal/outbound).
package mtasts

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Mode is a policy's mode (RFC 8461 5).
type Mode string

const (
	Enforce Mode = "enforce" // deliver only to matching MX hosts over valid TLS
	Testing Mode = "testing" // report failures, deliver anyway
	None    Mode = "none"    // the domain withdraws its policy
)

// ErrSyntax: a policy or TXT record that does not parse.
var ErrSyntax = errors.New("mtasts: malformed policy")

// MaxMaxAge caps max_age (RFC 8461 3.2: up to 31557600 seconds, a year).
const MaxMaxAge = 31557600 * time.Second

// Policy is a parsed policy file (RFC 8461 3.2).
type Policy struct {
	Mode   Mode          `json:"mode"`
	MX     []string      `json:"mx"` // patterns, lower case: "mx.example.com" or "*.example.com"
	MaxAge time.Duration `json:"max_age"`
}

// Parse reads a policy file: "key: value" lines, CRLF or LF
// (RFC 8461 3.2). version must be STSv1; mode and max_age are required, and
// at least one mx unless mode is none. Unknown keys are ignored.
func Parse(b []byte) (Policy, error) {
	var p Policy
	var version, maxAge string
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimRight(line, "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return Policy{}, fmt.Errorf("%w: line %q has no colon", ErrSyntax, trunc(line))
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "version":
			version = v
		case "mode":
			p.Mode = Mode(v)
		case "max_age":
			maxAge = v
		case "mx":
			p.MX = append(p.MX, strings.ToLower(strings.TrimSuffix(v, ".")))
		}
	}
	if version != "STSv1" {
		return Policy{}, fmt.Errorf("%w: version %q, want STSv1", ErrSyntax, trunc(version))
	}
	switch p.Mode {
	case Enforce, Testing, None:
	default:
		return Policy{}, fmt.Errorf("%w: mode %q", ErrSyntax, trunc(string(p.Mode)))
	}
	// RFC 8461 3.2: max_age is a plaintext non-negative integer of at most
	// 10 digits.
	n, err := strconv.ParseUint(maxAge, 10, 64)
	if err != nil || len(maxAge) > 10 {
		return Policy{}, fmt.Errorf("%w: max_age %q", ErrSyntax, trunc(maxAge))
	}
	p.MaxAge = time.Duration(min(n, uint64(MaxMaxAge/time.Second))) * time.Second
	if len(p.MX) == 0 && p.Mode != None {
		return Policy{}, fmt.Errorf("%w: no mx", ErrSyntax)
	}
	return p, nil
}

// Match reports whether host (an MX name) is allowed by the policy
// (RFC 8461 4.1): equal to a pattern, or, for "*.suffix", exactly one
// label in front of suffix.
func (p Policy) Match(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, pat := range p.MX {
		if MatchName(pat, host) {
			return true
		}
	}
	return false
}

// MatchName matches one host name against one pattern with at most a
// leading "*." wildcard, which stands for exactly one label (RFC 8461 4.1,
// as for certificates in RFC 6125 6.4.3).
func MatchName(pattern, host string) bool {
	if suffix, ok := strings.CutPrefix(pattern, "*."); ok {
		label, rest, ok := strings.Cut(host, ".")
		return ok && label != "" && rest == suffix
	}
	return pattern == host
}

// ParseTXT reads an "_mta-sts" TXT record (RFC 8461 3.1): "v=STSv1;
// id=...;" and returns its id (1 to 32 letters and digits).
func ParseTXT(s string) (id string, err error) {
	fields := strings.Split(s, ";")
	if strings.TrimSpace(fields[0]) != "v=STSv1" {
		return "", fmt.Errorf("%w: TXT record %q does not start with v=STSv1", ErrSyntax, trunc(s))
	}
	for _, f := range fields[1:] {
		k, v, _ := strings.Cut(strings.TrimSpace(f), "=")
		if k == "id" {
			id = v
		}
	}
	if id == "" || len(id) > 32 || strings.IndexFunc(id, func(r rune) bool {
		return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9')
	}) >= 0 {
		return "", fmt.Errorf("%w: TXT record %q has no valid id", ErrSyntax, trunc(s))
	}
	return id, nil
}

func trunc(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
