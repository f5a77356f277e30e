// Package dnsbl scores client addresses against DNS blocklists and
// allowlists (DNSBL, DNSWL; RFC 5782), postscreen-style: each list has a
// weight, the weights of the lists that list an address add up, and the
// sum is compared with a refusal threshold and an allowlist threshold.
//
// Lookups run in the background from the first Start for an address; the
// result is cached per address (bounded, for the shortest TTL of the
// answers), so nothing on the accept path waits on DNS: a caller waits only
// as long as its own budget.
package dnsbl

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ErrSyntax is the kind of every site syntax error.
var ErrSyntax = errors.New("dnsbl: bad list syntax")

// Site is one list in Postfix's postscreen_dnsbl_sites syntax:
// name[=pattern][*weight]. The pattern is one or more addresses separated
// by ";", each octet a number or a bracketed set of numbers and ranges
// ("127.0.0.[2..11]", "127.0.[0..255].[1;3;5..7]"). No pattern: any answer
// lists. A negative weight makes it an allowlist.
type Site struct {
	Name    string
	Pattern [][4]octet // alternatives; nil: any answer
	Weight  int
	Text    string // as configured
}

// octet is a set of allowed values of one byte of the answer.
type octet [4]uint64 // bitmap of 256 values

func (o *octet) set(lo, hi int) {
	for v := lo; v <= hi; v++ {
		o[v/64] |= 1 << (v % 64)
	}
}

func (o *octet) has(v byte) bool { return o[v/64]&(1<<(v%64)) != 0 }

func syntaxErr(s, format string, a ...any) error {
	return fmt.Errorf("%w: %q: %s", ErrSyntax, s, fmt.Sprintf(format, a...))
}

// ParseSite parses one list in postscreen_dnsbl_sites syntax.
func ParseSite(s string) (Site, error) {
	site := Site{Weight: 1, Text: s}
	rest := strings.TrimSpace(s)
	if i := strings.LastIndexByte(rest, '*'); i >= 0 {
		w, err := strconv.Atoi(rest[i+1:])
		if err != nil || w == 0 || w < -1000 || w > 1000 {
			return Site{}, syntaxErr(s, "weight %q is not a non-zero integer between -1000 and 1000", rest[i+1:])
		}
		site.Weight, rest = w, rest[:i]
	}
	if i := strings.IndexByte(rest, '='); i >= 0 {
		pat := rest[i+1:]
		rest = rest[:i]
		if err := site.parsePattern(s, pat); err != nil {
			return Site{}, err
		}
	}
	name := strings.ToLower(strings.TrimSuffix(rest, "."))
	if !validName(name) {
		return Site{}, syntaxErr(s, "%q is not a DNS domain name", rest)
	}
	site.Name = name
	return site, nil
}

// parsePattern splits alternatives at ";" outside brackets.
func (site *Site) parsePattern(s, pat string) error {
	if pat == "" {
		return syntaxErr(s, "empty pattern after =")
	}
	for _, a := range splitOutside(pat, ';') {
		p, err := parseAddrPattern(s, a)
		if err != nil {
			return err
		}
		site.Pattern = append(site.Pattern, p)
	}
	return nil
}

// splitOutside splits s at sep outside brackets ("127.0.0.[2..3]" has
// four octets; "127.0.0.[2;3];127.0.0.9" two alternatives).
func splitOutside(s string, sep byte) []string {
	depth, start := 0, 0
	var out []string
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '[':
			depth++
		case ']':
			depth--
		case sep:
			if depth == 0 {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

func parseAddrPattern(s, a string) ([4]octet, error) {
	var out [4]octet
	parts := splitOutside(a, '.')
	if len(parts) != 4 {
		return out, syntaxErr(s, "pattern %q is not four octets", a)
	}
	for i, p := range parts {
		if strings.HasPrefix(p, "[") && strings.HasSuffix(p, "]") {
			for _, el := range strings.Split(p[1:len(p)-1], ";") {
				lo, hi, ok := strings.Cut(el, "..")
				if !ok {
					hi = lo
				}
				l, err1 := octetValue(lo)
				h, err2 := octetValue(hi)
				if err1 != nil || err2 != nil || l > h {
					return out, syntaxErr(s, "%q in %q is not a number or range a..b of 0-255", el, a)
				}
				out[i].set(l, h)
			}
			continue
		}
		v, err := octetValue(p)
		if err != nil {
			return out, syntaxErr(s, "octet %q in %q is not 0-255 or [a..b]", p, a)
		}
		out[i].set(v, v)
	}
	return out, nil
}

func octetValue(s string) (int, error) {
	v, err := strconv.Atoi(s)
	if err != nil || v < 0 || v > 255 || s == "" || s[0] == '+' || s[0] == '-' {
		return 0, ErrSyntax
	}
	return v, nil
}

func validName(n string) bool {
	if n == "" || len(n) > 200 || !strings.Contains(n, ".") {
		return false
	}
	for _, label := range strings.Split(n, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// Matches reports whether answer a (an A record of the list) lists the
// address under this site's pattern.
func (site *Site) Matches(a netip.Addr) bool {
	if !a.Is4() {
		return false
	}
	if site.Pattern == nil {
		return true
	}
	b := a.As4()
	for _, p := range site.Pattern {
		if p[0].has(b[0]) && p[1].has(b[1]) && p[2].has(b[2]) && p[3].has(b[3]) {
			return true
		}
	}
	return false
}

// QueryName is the name asked of a list for addr: the reversed octets for
// IPv4, the reversed nibbles for IPv6 (RFC 5782 2.1, 2.4).
func QueryName(addr netip.Addr, list string) string {
	addr = addr.Unmap()
	var b strings.Builder
	if addr.Is4() {
		o := addr.As4()
		fmt.Fprintf(&b, "%d.%d.%d.%d.", o[3], o[2], o[1], o[0])
	} else {
		o := addr.As16()
		const hex = "0123456789abcdef"
		for i := 15; i >= 0; i-- {
			b.WriteByte(hex[o[i]&0xf])
			b.WriteByte('.')
			b.WriteByte(hex[o[i]>>4])
			b.WriteByte('.')
		}
	}
	b.WriteString(list)
	return b.String()
}
