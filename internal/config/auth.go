package config

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// AuthConfig configures the authentication of inbound mail (internal/mailauth):
// SPF, DKIM and DMARC of messages arriving on MX listeners.
type AuthConfig struct {
	Enabled         bool          `toml:"enabled" doc:"Check SPF (RFC 7208), DKIM (RFC 6376) and DMARC (RFC 7489) of mail arriving on MX listeners and add an Authentication-Results field (RFC 8601) with hostname as its authserv-id; fields from senders claiming that id are removed. Authenticated submission and allowlisted clients (shield.allow) are not checked. Lookups use the [dns] resolver."`
	Timeout         time.Duration `toml:"timeout" doc:"Budget for one message's DNS lookups: SPF (started at MAIL FROM), and DKIM keys plus the DMARC record at the end of DATA. Lookups still running then count as temperror, which never refuses a message (see temperror). RFC 7208 4.6.4 asks for at least 20s."`
	DMARCReject     bool          `toml:"dmarc_reject" doc:"Refuse at the end of DATA (550 5.7.1, with the reason) a message that fails DMARC when its From domain's policy is p=reject (after pct sampling). Off: such mail is handled like p=quarantine."`
	DMARCQuarantine bool          `toml:"dmarc_quarantine" doc:"Deliver a message that fails DMARC under p=quarantine (or p=reject when dmarc_reject is off) to the recipients' junk_folder instead of the inbox. Off: it goes to the inbox, marked only in Authentication-Results."`
	SPFFailReject   bool          `toml:"spf_fail_reject" doc:"Refuse (550 5.7.23) a message whose MAIL FROM domain's SPF record says fail (-all) for the client, unless DMARC passes through an aligned DKIM signature (RFC 7489 10.1). Off by default: forwarding breaks SPF while the message is genuine, and DMARC already refuses spoofing of domains that ask for it."`
	TempError       string        `toml:"temperror" doc:"What to do when DNS did not answer in time for DMARC (or for SPF, with spf_fail_reject): accept (deliver, result temperror in Authentication-Results) or defer (451 4.7.0, the sender retries)."`
	DomainPolicy    []string      `toml:"domain_policy" doc:"Overrides of dmarc_reject, dmarc_quarantine, spf_fail_reject and temperror for mail to one recipient domain, one entry per domain: \"example.com: dmarc_reject=off, spf_fail_reject=on\" (keys as above, values on or off, temperror accept or defer; keys not named keep the global setting; the domain must match exactly, subdomains are domains of their own). A message is judged under one policy: a recipient whose domain's policy differs from that of the recipients already accepted in the transaction gets 452 4.5.3 and the sending server sends it in another transaction (RFC 5321 4.5.3.1.10)."`
	JunkFolder      string        `toml:"junk_folder" doc:"Folder of each mailbox that receives quarantined mail, created when first needed; IMAP shows it with the \\Junk attribute when it is named Junk."`
}

func defaultAuth() AuthConfig {
	return AuthConfig{
		Enabled: true, Timeout: 20 * time.Second,
		DMARCReject: true, DMARCQuarantine: true, SPFFailReject: false,
		TempError: "accept", JunkFolder: "Junk",
	}
}

func (a AuthConfig) validate() []Problem {
	var ps []Problem
	bad := func(key, msg string) { ps = append(ps, Problem{Key: "auth." + key, Msg: msg}) }
	if a.Timeout < time.Second || a.Timeout > 5*time.Minute {
		bad("timeout", "must be between 1s and 5m")
	}
	switch a.TempError {
	case "accept", "defer":
	default:
		bad("temperror", "must be accept or defer, not \""+a.TempError+"\"")
	}
	seen := map[string]bool{}
	for i, e := range a.DomainPolicy {
		d, _, err := a.parseDomainPolicy(e)
		switch {
		case err != nil:
			bad("domain_policy", fmt.Sprintf("[%d]: %v", i, err))
		case seen[d]:
			bad("domain_policy", fmt.Sprintf("[%d]: %s has an entry already", i, d))
		}
		seen[d] = true
	}
	j := a.JunkFolder
	if j == "" || strings.EqualFold(j, "INBOX") || strings.HasPrefix(j, ".") || strings.HasSuffix(j, ".") ||
		strings.Contains(j, "..") || strings.ContainsAny(j, "/\\") || !printableASCII(j) {
		bad("junk_folder", "\""+j+"\" is not a folder name (not INBOX; no /, \\, leading, trailing or double dot)")
	}
	return ps
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// AuthPolicy is what the results of sender authentication decide, for
// all mail or for one recipient domain.
type AuthPolicy struct {
	DMARCReject, DMARCQuarantine, SPFFailReject bool
	TempError                                   string // accept or defer
}

// Global is the policy of the [auth] section itself.
func (a AuthConfig) Global() AuthPolicy {
	return AuthPolicy{DMARCReject: a.DMARCReject, DMARCQuarantine: a.DMARCQuarantine, SPFFailReject: a.SPFFailReject, TempError: a.TempError}
}

// ErrPolicySyntax is the kind of a domain_policy entry that does not parse.
var ErrPolicySyntax = errors.New("not \"domain: key=value, ...\"")

// Policies returns the policy of each domain named in domain_policy (lower
// case), the global settings overridden by the entry's.
func (a AuthConfig) Policies() (map[string]AuthPolicy, error) {
	out := map[string]AuthPolicy{}
	for _, e := range a.DomainPolicy {
		d, p, err := a.parseDomainPolicy(e)
		if err != nil {
			return nil, err
		}
		if _, dup := out[d]; dup {
			return nil, fmt.Errorf("%s has two entries", d)
		}
		out[d] = p
	}
	return out, nil
}

// parseDomainPolicy parses "example.com: dmarc_reject=off, temperror=defer".
func (a AuthConfig) parseDomainPolicy(e string) (string, AuthPolicy, error) {
	p := a.Global()
	domain, rest, ok := strings.Cut(e, ":")
	domain = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(domain), "."))
	if !ok || !isDomain(domain) {
		return "", p, fmt.Errorf("%w: %q: no domain before the colon", ErrPolicySyntax, e)
	}
	if strings.TrimSpace(rest) == "" {
		return "", p, fmt.Errorf("%w: %q: no setting after the colon", ErrPolicySyntax, e)
	}
	seen := map[string]bool{}
	for _, kv := range strings.Split(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || seen[k] {
			return "", p, fmt.Errorf("%w: %q: %q is not key=value, or its key is repeated", ErrPolicySyntax, e, kv)
		}
		seen[k] = true
		var flag *bool
		switch k {
		case "dmarc_reject":
			flag = &p.DMARCReject
		case "dmarc_quarantine":
			flag = &p.DMARCQuarantine
		case "spf_fail_reject":
			flag = &p.SPFFailReject
		case "temperror":
			if v != "accept" && v != "defer" {
				return "", p, fmt.Errorf("%w: %q: temperror must be accept or defer", ErrPolicySyntax, e)
			}
			p.TempError = v
			continue
		default:
			return "", p, fmt.Errorf("%w: %q: unknown key %q (dmarc_reject, dmarc_quarantine, spf_fail_reject, temperror)", ErrPolicySyntax, e, k)
		}
		switch v {
		case "on":
			*flag = true
		case "off":
			*flag = false
		default:
			return "", p, fmt.Errorf("%w: %q: %s must be on or off", ErrPolicySyntax, e, k)
		}
	}
	return domain, p, nil
}

// isDomain reports whether d looks like a domain name: dot-separated
// labels of letters, digits and hyphens.
func isDomain(d string) bool {
	if d == "" || len(d) > 253 {
		return false
	}
	for _, l := range strings.Split(d, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}
