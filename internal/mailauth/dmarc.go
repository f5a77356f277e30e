package mailauth

import (
	"context"
	"errors"
	"strings"

	"blitiri.com.ar/go/spf"
	"github.com/emersion/go-msgauth/dmarc"
	"golang.org/x/net/idna"
	"golang.org/x/net/publicsuffix"

	"github.com/agua-mail/agua/internal/resolver"
)

// DMARCResult is the DMARC evaluation of the message (RFC 7489 6.6).
type DMARCResult struct {
	// Result is none (no policy), pass, fail, temperror or permerror
	// (RFC 8601 2.7.6... RFC 7489 11.2).
	Result string
	Domain string // the RFC5322.From domain
	// Policy is the policy that applies to Domain: p=, or sp= when the
	// record is the organizational domain's (RFC 7489 6.3); "" without one.
	Policy dmarc.Policy
	// Disposition is what the domain asks for this failing message:
	// Policy, lowered by one step when pct= sampled it out (RFC 7489
	// 6.6.4). "none" for a message that passed or has no policy.
	Disposition dmarc.Policy
	Reason      string
}

// evalDMARC evaluates DMARC for every author domain in From (one, in a
// well-formed message) and keeps the worst outcome, so a second From
// field or address cannot lead past a policy.
func (c *Checker) evalDMARC(ctx context.Context, fields []field, s SPFResult, d []DKIMResult) DMARCResult {
	domains, nFrom := fromDomains(fields)
	if len(domains) == 0 {
		if nFrom == 0 {
			return DMARCResult{Result: "none", Disposition: dmarc.PolicyNone, Reason: "no From field"}
		}
		return DMARCResult{Result: "permerror", Disposition: dmarc.PolicyNone, Reason: "no domain in From"}
	}
	var worst DMARCResult
	for i, dom := range domains {
		// RFC 7489 3.1 compares A-labels; a U-label From domain
		// (SMTPUTF8, RFC 6531) is looked up as its A-label.
		if a, err := idna.Lookup.ToASCII(dom); err == nil {
			dom = a
		}
		r := c.dmarcDomain(ctx, dom, s, d)
		if i == 0 || rank(r) > rank(worst) {
			worst = r
		}
	}
	return worst
}

// rank orders outcomes from best to worst for evalDMARC.
func rank(r DMARCResult) int {
	switch r.Disposition {
	case dmarc.PolicyReject:
		return 6
	case dmarc.PolicyQuarantine:
		return 5
	}
	switch r.Result {
	case "temperror":
		return 4
	case "fail":
		return 3
	case "permerror":
		return 2
	case "none":
		return 1
	}
	return 0 // pass
}

func (c *Checker) dmarcDomain(ctx context.Context, dom string, s SPFResult, d []DKIMResult) DMARCResult {
	r := DMARCResult{Domain: dom, Disposition: dmarc.PolicyNone}
	org := orgDomain(dom)
	// RFC 7489 6.6.3: the From domain's record, else the organizational
	// domain's, whose sp= then applies.
	rec, err := c.lookupDMARC(ctx, dom)
	atOrg := false
	if errors.Is(err, dmarc.ErrNoPolicy) && org != dom {
		rec, err = c.lookupDMARC(ctx, org)
		atOrg = true
	}
	switch {
	case errors.Is(err, dmarc.ErrNoPolicy):
		r.Result = "none"
		return r
	case isTemp(err):
		r.Result, r.Reason = "temperror", "policy lookup: "+err.Error()
		return r
	case err != nil:
		r.Result, r.Reason = "permerror", err.Error()
		return r
	}
	r.Policy = rec.Policy
	if atOrg && rec.SubdomainPolicy != "" {
		r.Policy = rec.SubdomainPolicy
	}

	// RFC 7489 3.1: an identifier is aligned when its domain is the From
	// domain (strict) or shares its organizational domain (relaxed).
	aligned := func(id string, mode dmarc.AlignmentMode) bool {
		id = strings.ToLower(strings.TrimSuffix(id, "."))
		if a, err := idna.Lookup.ToASCII(id); err == nil {
			id = a
		}
		if mode == dmarc.AlignmentStrict {
			return id == dom
		}
		return id != "" && orgDomain(id) == org
	}
	temp := false
	// RFC 7489 4.2: pass when SPF or DKIM passes with an aligned identifier.
	if aligned(s.Domain, rec.SPFAlignment) {
		switch s.Result {
		case spf.Pass:
			r.Result = "pass"
			return r
		case spf.TempError:
			temp = true
		}
	}
	for _, k := range d {
		if !aligned(k.Domain, rec.DKIMAlignment) {
			continue
		}
		switch k.Result {
		case "pass":
			r.Result = "pass"
			return r
		case "temperror":
			temp = true
		}
	}
	if temp {
		// An aligned identifier could not be checked: the message may
		// well pass later, so it must not be refused now.
		r.Result, r.Reason = "temperror", "an aligned SPF or DKIM check failed temporarily"
		return r
	}
	r.Result, r.Reason = "fail", "no aligned SPF or DKIM pass"
	r.Disposition = r.Policy
	if rec.Percent != nil && *rec.Percent < 100 && c.cfg.Percent() >= *rec.Percent {
		// RFC 7489 6.6.4: outside the sampled percentage, the next
		// less severe policy applies.
		switch r.Policy {
		case dmarc.PolicyReject:
			r.Disposition = dmarc.PolicyQuarantine
		case dmarc.PolicyQuarantine:
			r.Disposition = dmarc.PolicyNone
		}
	}
	return r
}

// lookupDMARC fetches and parses the DMARC record of domain (RFC 7489
// 6.6.3): exactly one TXT record starting "v=DMARC1" at _dmarc.<domain>;
// none or several is no policy (dmarc.ErrNoPolicy).
func (c *Checker) lookupDMARC(ctx context.Context, domain string) (*dmarc.Record, error) {
	txts, _, err := c.cfg.Resolver.TXT(ctx, "_dmarc."+domain)
	if errors.Is(err, resolver.ErrNotFound) {
		return nil, dmarc.ErrNoPolicy
	}
	if err != nil {
		return nil, dnsError("_dmarc."+domain, err)
	}
	var recs []string
	for _, t := range txts {
		if v, _, _ := strings.Cut(t, ";"); strings.TrimSpace(v) == "v=DMARC1" {
			recs = append(recs, t)
		}
	}
	if len(recs) != 1 {
		return nil, dmarc.ErrNoPolicy
	}
	return dmarc.Parse(recs[0])
}

// orgDomain is the organizational domain (RFC 7489 3.2): the public
// suffix plus one label; a name that is itself a public suffix is its own.
func orgDomain(d string) string {
	o, err := publicsuffix.EffectiveTLDPlusOne(d)
	if err != nil {
		return d
	}
	return o
}
