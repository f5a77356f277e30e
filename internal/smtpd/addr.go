package smtpd

import (
	"strings"
	"unicode/utf8"
)

// parsePathArg splits "FROM:<path> PARAM PARAM" (RFC 5321 4.1.1.2/4.1.1.3)
// into the path between the angle brackets and its parameters. A space
// after the colon is tolerated, as most servers do.
func parsePathArg(arg, prefix string) (path string, params []string, err error) {
	if len(arg) < len(prefix) || !strings.EqualFold(arg[:len(prefix)], prefix) {
		return "", nil, errSyntax
	}
	rest := strings.TrimLeft(arg[len(prefix):], " ")
	if !strings.HasPrefix(rest, "<") {
		return "", nil, errNoBrackets
	}
	end := closingBracket(rest)
	if end < 0 {
		return "", nil, errSyntax
	}
	path = rest[1:end]
	params = strings.Fields(rest[end+1:])
	return path, params, nil
}

// closingBracket finds the '>' ending the path, skipping quoted strings.
func closingBracket(s string) int {
	quoted := false
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			if quoted {
				i++
			}
		case '"':
			quoted = !quoted
		case '>':
			if !quoted {
				return i
			}
		}
	}
	return -1
}

// parseReversePath accepts the null path "" or a mailbox.
func parseReversePath(p string) (string, error) {
	if p == "" {
		return "", nil
	}
	return parseMailbox(stripRoute(p))
}

// parseForwardPath accepts a mailbox or the bare "Postmaster"
// (RFC 5321 4.1.1.3 requires accepting it without a domain).
func parseForwardPath(p string) (string, error) {
	p = stripRoute(p)
	if strings.EqualFold(p, "postmaster") {
		return "postmaster", nil
	}
	return parseMailbox(p)
}

// stripRoute drops an obsolete source route "@a,@b:" (RFC 5321 4.1.2:
// accepted and ignored).
func stripRoute(p string) string {
	if strings.HasPrefix(p, "@") {
		if i := strings.IndexByte(p, ':'); i >= 0 {
			return p[i+1:]
		}
	}
	return p
}

// parseMailbox checks local-part@domain loosely: both parts present, no
// spaces or controls outside a quoted local part, valid UTF-8, sane length
// (RFC 5321 4.5.3.1: 64 for the local part, 255 for the domain).
func parseMailbox(m string) (string, error) {
	at := strings.LastIndexByte(m, '@')
	if at <= 0 || at == len(m)-1 {
		return "", errBadAddress
	}
	local, domain := m[:at], m[at+1:]
	if !utf8.ValidString(m) || len(local) > 64 || len(domain) > 255 {
		return "", errBadAddress
	}
	quoted := strings.HasPrefix(local, `"`) && strings.HasSuffix(local, `"`) && len(local) >= 2
	for _, r := range m {
		if r < 0x20 || r == 0x7f {
			return "", errBadAddress
		}
	}
	if !quoted && strings.ContainsAny(local, " <>()[]\\,;:\"") {
		return "", errBadAddress
	}
	if strings.ContainsAny(domain, " <>()\\,;:\"@") && !strings.HasPrefix(domain, "[") {
		return "", errBadAddress
	}
	return m, nil
}
