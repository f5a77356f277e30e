package accounts

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// RFC 5321 4.5.3.1: limits on the parts of an address.
const (
	maxLocalPart = 64
	maxDomain    = 253
	maxLabel     = 63
)

// NormaliseDomain lower-cases and trims a domain name and checks that it is a
// valid host name.
func NormaliseDomain(name string) (string, error) {
	d := strings.ToLower(strings.TrimSpace(name))
	if err := checkDomain(d); err != nil {
		return "", err
	}
	return d, nil
}

// checkDomain reports whether d is a valid ASCII host name (RFC 1123 2.1):
// dot-separated labels of letters, digits and hyphens, no hyphen at either
// end of a label.
func checkDomain(d string) error {
	if d == "" {
		return NewError(ErrInvalid, "domain is empty")
	}
	if len(d) > maxDomain {
		return NewError(ErrInvalid, "domain "+quote(d)+" is longer than 253 characters")
	}
	for rest, more := d, true; more; {
		var label string
		label, rest, more = strings.Cut(rest, ".")
		if label == "" {
			return NewError(ErrInvalid, "domain "+quote(d)+" has an empty label")
		}
		if len(label) > maxLabel {
			return NewError(ErrInvalid, "domain "+quote(d)+" has a label longer than 63 characters")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return NewError(ErrInvalid, "domain "+quote(d)+" has a label that starts or ends with a hyphen")
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				if c >= utf8.RuneSelf {
					return NewError(ErrInvalid, "domain "+quote(d)+" is not ASCII; write internationalised domains in their xn-- form")
				}
				return NewError(ErrInvalid, "domain "+quote(d)+" contains "+quote(string(c))+"; only letters, digits, hyphens and dots are allowed")
			}
		}
	}
	return nil
}

// NormaliseAddress lower-cases and trims an address and checks its syntax.
// It returns the address and its domain.
func NormaliseAddress(address string) (addr, domain string, err error) {
	a := strings.ToLower(strings.TrimSpace(address))
	if a == "" {
		return "", "", NewError(ErrInvalid, "address is empty")
	}
	at := strings.LastIndexByte(a, '@')
	if at < 0 {
		return "", "", NewError(ErrInvalid, "address "+quote(a)+" has no @")
	}
	local, domain := a[:at], a[at+1:]
	if strings.IndexByte(local, '@') >= 0 {
		return "", "", NewError(ErrInvalid, "address "+quote(a)+" has more than one @")
	}
	if err := checkLocalPart(local, a); err != nil {
		return "", "", err
	}
	if err := checkDomain(domain); err != nil {
		return "", "", err
	}
	return a, domain, nil
}

// NormaliseAliasSource accepts "local@domain" or "@domain" (catch-all).
func NormaliseAliasSource(from string) (addr, domain string, err error) {
	f := strings.ToLower(strings.TrimSpace(from))
	if strings.HasPrefix(f, "@") {
		d := f[1:]
		if err := checkDomain(d); err != nil {
			return "", "", err
		}
		return f, d, nil
	}
	return NormaliseAddress(f)
}

// atext of RFC 5322 3.2.3 besides letters and digits, without "/": local
// parts name mailbox folders, and a slash in a folder name is an accident
// waiting to happen for little gain.
const atextSpecials = "!#$%&'*+-=?^_`{|}~"

// checkLocalPart checks a dot-atom local part (RFC 5321 4.1.2) whose atext is
// extended with UTF-8 by RFC 6531 3.3. Quoted local parts are refused: they
// are legal but almost only used by spammers, and they complicate paths.
// "/" is refused too (see atextSpecials).
func checkLocalPart(local, addr string) error {
	if local == "" {
		return NewError(ErrInvalid, "address "+quote(addr)+" has an empty local part")
	}
	if len(local) > maxLocalPart {
		return NewError(ErrInvalid, "address "+quote(addr)+" has a local part longer than 64 octets")
	}
	if !utf8.ValidString(local) {
		return NewError(ErrInvalid, "address "+quote(addr)+" is not valid UTF-8")
	}
	if local[0] == '.' || local[len(local)-1] == '.' || strings.Contains(local, "..") {
		return NewError(ErrInvalid, "address "+quote(addr)+" has a misplaced dot in its local part")
	}
	for _, r := range local {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '.':
		case r < utf8.RuneSelf && strings.ContainsRune(atextSpecials, r):
		case r >= utf8.RuneSelf && unicode.IsGraphic(r) && !unicode.IsSpace(r):
		default:
			return NewError(ErrInvalid, "address "+quote(addr)+" contains "+quote(string(r))+" in its local part")
		}
	}
	return nil
}

// quote quotes s for an error message, escaping control characters.
func quote(s string) string { return strconv.Quote(s) }

// CheckForward vets an external alias target dst of src: its local part may
// not carry the old routing syntaxes that make relays of careless servers,
// "%" (the percent hack) and "!" (UUCP bang paths), and its domain must have
// a dot. (Source routes and address literals do not pass NormaliseAddress.)
func CheckForward(src, dst string) error {
	local := dst[:strings.LastIndexByte(dst, '@')]
	if strings.ContainsAny(local, "%!") {
		return NewError(ErrInvalid, "cannot forward "+src+" to "+dst+": '%' and '!' in a local part are relay routing syntax, not accepted in a forwarding target")
	}
	if !strings.Contains(dst[len(local)+1:], ".") {
		return NewError(ErrInvalid, "cannot forward "+src+" to "+dst+": the domain is not local and has no dot")
	}
	return nil
}
