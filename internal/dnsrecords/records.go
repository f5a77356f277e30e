// Package dnsrecords builds the DNS records a local domain needs to receive
// and send mail through this server, and checks them against what a
// resolver answers (`agua domain dns` and `agua domain check`).
//
// The records: MX (RFC 5321 5.1), SPF (RFC 7208), DKIM keys (RFC 6376
// 3.6), DMARC (RFC 7489 6.1), MTA-STS (RFC 8461 3.1) and SMTP TLS
// reporting (RFC 8460 3), the service records of RFC 6186 (with RFC 8314's
// implicit-TLS services), and the CNAMEs that point the autoconfig,
// autodiscover and mta-sts host names at this server. The MTA-STS policy
// text is built here too (Policy), because its record's id is derived from
// it: the HTTP handler that serves the policy and the record that announces
// it cannot drift apart.
package dnsrecords

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/dkim"
)

// Record is one resource record, in the form it is compared with DNS.
type Record struct {
	Name string // owner name, lower-case, fully qualified with the final dot
	Type string // MX, TXT, SRV or CNAME
	// Value is the RDATA: "10 mail.example.org." for MX, the text of a TXT
	// record with its character-strings joined, "0 1 993 mail.example.org."
	// for SRV, "mail.example.org." for CNAME.
	Value   string
	Comment string // one line saying what the record is for
}

// maxTXTString is the longest character-string in a TXT record (RFC 1035 3.3).
const maxTXTString = 255

// Zone is the record in zone-file syntax (RFC 1035 5.1), ready to paste;
// a long TXT value is split into 255-byte character-strings.
func (r Record) Zone() string {
	data := r.Value
	if r.Type == "TXT" {
		var parts []string
		v := r.Value
		for len(v) > maxTXTString {
			parts = append(parts, strconv.Quote(v[:maxTXTString]))
			v = v[maxTXTString:]
		}
		parts = append(parts, strconv.Quote(v))
		data = strings.Join(parts, " ")
		if len(parts) > 1 {
			data = "( " + data + " )"
		}
	}
	return r.Name + " IN " + r.Type + " " + data
}

// Service is one mail service clients connect to, as announced by an RFC
// 6186 SRV record and by the autoconfiguration documents.
type Service struct {
	Port int  // 0: not offered
	TLS  bool // implicit TLS (RFC 8314); false: STARTTLS
}

// Services are the client-facing services of this server. Host is the name
// clients connect to (and the MX target); the ports come from the first
// listener of each kind.
type Services struct {
	Host                    string
	Submission, Submissions Service
	IMAP, IMAPS             Service
	POP3, POP3S             Service
}

// FromConfig reads the services from the configuration's listeners and
// hostname.
func FromConfig(cfg config.Config) Services {
	first := func(addrs []string, tls bool) Service {
		for _, a := range addrs {
			if _, p, err := net.SplitHostPort(a); err == nil {
				if n, err := strconv.Atoi(p); err == nil && n > 0 {
					return Service{Port: n, TLS: tls}
				}
			}
		}
		return Service{TLS: tls}
	}
	return Services{
		Host:        strings.ToLower(strings.TrimSuffix(cfg.Hostname, ".")),
		Submission:  first(cfg.SMTP.SubmissionListen, false),
		Submissions: first(cfg.SMTP.SubmissionsListen, true),
		IMAP:        first(cfg.IMAP.Listen, false),
		IMAPS:       first(cfg.IMAP.TLSListen, true),
		POP3:        first(cfg.POP3.Listen, false),
		POP3S:       first(cfg.POP3.TLSListen, true),
	}
}

// Params is what the records of one domain are built from.
type Params struct {
	Domain   string
	Services Services
	// IPs are this server's public addresses, listed in SPF; none gives
	// "v=spf1 mx -all" (the MX hosts send, which is this server).
	IPs []string
	// Keys are the domain's DKIM keys (dkim.LoadKeys); Now decides which
	// of them sign.
	Keys []*dkim.Key
	Now  time.Time
	// MTASTS is the policy served at mta-sts.DOMAIN.
	MTASTS PolicyParams
}

// PolicyParams are the MTA-STS policy settings (RFC 8461 3.2).
type PolicyParams struct {
	Mode   string        // enforce, testing or none
	MaxAge time.Duration // max_age, whole seconds
}

// Policy is the MTA-STS policy file of a domain whose mail goes to mx
// (RFC 8461 3.2: CRLF line ends).
func Policy(mx string, p PolicyParams) string {
	return "version: STSv1\r\nmode: " + p.Mode + "\r\nmx: " + strings.TrimSuffix(mx, ".") +
		"\r\nmax_age: " + strconv.FormatInt(int64(p.MaxAge/time.Second), 10) + "\r\n"
}

// PolicyID is the id of the _mta-sts record for a policy: it changes
// exactly when the policy text does (RFC 8461 3.1: 1 to 32 alphanumerics),
// so senders refetch the policy after every change and only then.
func PolicyID(policy string) string {
	sum := sha256.Sum256([]byte(policy))
	return hex.EncodeToString(sum[:10])
}

// Build returns every record the domain needs, in the order they are
// printed: mail routing and sender authentication first, then transport
// security, then client discovery.
func Build(p Params) []Record {
	d := strings.ToLower(strings.TrimSuffix(p.Domain, ".")) + "."
	host := p.Services.Host + "."
	postmaster := "postmaster@" + strings.TrimSuffix(d, ".")
	var rs []Record
	add := func(name, typ, value, comment string) {
		rs = append(rs, Record{Name: name, Type: typ, Value: value, Comment: comment})
	}

	add(d, "MX", "10 "+host, "mail for the domain goes to this server (RFC 5321 5.1)")

	spf, why := "v=spf1 mx -all", "only the MX hosts (this server) send for the domain (RFC 7208)"
	if len(p.IPs) > 0 {
		var mech []string
		for _, ip := range p.IPs {
			if a := net.ParseIP(ip); a != nil && a.To4() != nil {
				mech = append(mech, "ip4:"+a.String())
			} else if a != nil {
				mech = append(mech, "ip6:"+a.String())
			}
		}
		spf, why = "v=spf1 "+strings.Join(mech, " ")+" -all", "only this server's addresses send for the domain (RFC 7208)"
	}
	add(d, "TXT", spf, why)

	signing := dkim.SigningKeys(p.Keys, p.Now)
	var signs bool
	for _, k := range p.Keys {
		if k.Domain+"." != d {
			continue
		}
		switch {
		case signing[k]:
			signs = true
			add(k.Name(), "TXT", k.Record(), "DKIM key "+k.Selector+" ("+string(k.Algo)+"), signing now (RFC 6376 3.6)")
		case k.Start.After(p.Now):
			// Published before it starts signing, so that no message is
			// signed with a key receivers cannot find yet.
			add(k.Name(), "TXT", k.Record(), "DKIM key "+k.Selector+" ("+string(k.Algo)+"), signs from "+k.Start.UTC().Format(time.RFC3339)+": publish it now")
		}
	}

	// RFC 7489 6.3. quarantine only once DKIM signs: with SPF alone, mail
	// forwarded by a mailing list or an alias fails DMARC and would be
	// quarantined; "none" collects the reports meanwhile.
	policy, pwhy := "quarantine", "DMARC: DKIM and SPF are in place, so mail failing both is quarantined; reports to postmaster (RFC 7489)"
	if !signs {
		policy, pwhy = "none", "DMARC: monitor only until DKIM signs (agua dkim keygen), since SPF alone fails forwarded mail; reports to postmaster (RFC 7489)"
	}
	add("_dmarc."+d, "TXT", "v=DMARC1; p="+policy+"; rua=mailto:"+postmaster, pwhy)

	pol := Policy(p.Services.Host, p.MTASTS)
	add("_mta-sts."+d, "TXT", "v=STSv1; id="+PolicyID(pol),
		"MTA-STS: senders fetch https://mta-sts."+strings.TrimSuffix(d, ".")+"/.well-known/mta-sts.txt (mode "+p.MTASTS.Mode+"); the id changes with the policy (RFC 8461)")
	add("_smtp._tls."+d, "TXT", "v=TLSRPTv1; rua=mailto:"+postmaster, "TLS reports from senders go to postmaster (RFC 8460)")

	srv := func(name string, s Service, what string) {
		if s.Port == 0 {
			// RFC 6186 4: target "." says the service is not offered.
			add(name+"."+d, "SRV", "0 0 0 .", what+": not offered")
			return
		}
		add(name+"."+d, "SRV", fmt.Sprintf("0 1 %d %s", s.Port, host), what+" (RFC 6186)")
	}
	srv("_submission._tcp", p.Services.Submission, "submission with STARTTLS")
	srv("_submissions._tcp", p.Services.Submissions, "submission with implicit TLS, RFC 8314")
	srv("_imap._tcp", p.Services.IMAP, "IMAP with STARTTLS")
	srv("_imaps._tcp", p.Services.IMAPS, "IMAP with implicit TLS")
	srv("_pop3._tcp", p.Services.POP3, "POP3 with STLS")
	srv("_pop3s._tcp", p.Services.POP3S, "POP3 with implicit TLS")

	for _, sub := range []string{"autoconfig", "autodiscover", "mta-sts"} {
		add(sub+"."+d, "CNAME", host, sub+" documents are served by this server")
	}
	return rs
}
