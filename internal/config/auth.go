package config

import (
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
