package dnsrecords

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Status is the outcome of checking one record.
type Status string

const (
	OK      Status = "ok"
	Missing Status = "missing"
	Differs Status = "differs"
	Failed  Status = "error" // the query itself failed
)

// Result is one record compared with what DNS answered.
type Result struct {
	Want   Record
	Status Status
	Got    []string // the answers that were compared (Differs)
	Err    error    // Failed
}

// String is the line `agua domain check` prints.
func (r Result) String() string {
	head := fmt.Sprintf("%-8s %s %s", r.Status, r.Want.Name, r.Want.Type)
	switch r.Status {
	case OK:
		return head + " " + quoteTXT(r.Want)
	case Missing:
		return head + ": want " + quoteTXT(r.Want)
	case Differs:
		got := make([]string, len(r.Got))
		for i, g := range r.Got {
			got[i] = quoteTXT(Record{Type: r.Want.Type, Value: g})
		}
		return head + ": want " + quoteTXT(r.Want) + " got " + strings.Join(got, ", ")
	}
	return head + ": " + r.Err.Error()
}

func quoteTXT(r Record) string {
	if r.Type == "TXT" {
		return fmt.Sprintf("%q", r.Value)
	}
	return r.Value
}

// ErrQuery is returned (wrapped) when the resolver gives no usable answer:
// no reply, SERVFAIL, REFUSED.
var ErrQuery = errors.New("DNS query failed")

// Checker asks one DNS server.
type Checker struct {
	Server  string        // host:port of the resolver
	Timeout time.Duration // per query; 0 means 5s
}

// Check queries every record and compares it with the answer.
func (c Checker) Check(ctx context.Context, want []Record) []Result {
	out := make([]Result, 0, len(want))
	for _, w := range want {
		got, err := c.query(ctx, w.Name, dns.StringToType[w.Type])
		r := compare(w, got, err)
		if r.Status == Missing && w.Type == "CNAME" {
			// An address record instead of the CNAME works if it is this
			// server's address; say what is there rather than "missing".
			if addrs, err := c.query(ctx, w.Name, dns.TypeA); err == nil && len(addrs) > 0 {
				for i := range addrs {
					addrs[i] = "A " + addrs[i]
				}
				r.Status, r.Got = Differs, addrs
			}
		}
		out = append(out, r)
	}
	return out
}

// compare decides one record's status from the answers of its type.
func compare(w Record, got []string, err error) Result {
	r := Result{Want: w}
	if err != nil {
		r.Status, r.Err = Failed, err
		return r
	}
	if w.Type == "TXT" {
		// A name carries other TXT records (site verifications, other
		// policies): compare only those of the same kind (v=spf1, v=DMARC1,
		// v=DKIM1, ...).
		tag := txtTag(w.Value)
		got = slices.DeleteFunc(got, func(g string) bool { return txtTag(g) != tag })
	}
	switch {
	case len(got) == 0:
		r.Status = Missing
	case slices.ContainsFunc(got, func(g string) bool { return normalize(w.Type, g) == normalize(w.Type, w.Value) }):
		r.Status = OK
	default:
		r.Status, r.Got = Differs, got
	}
	return r
}

// txtTag is the version tag a TXT record starts with ("v=spf1"), lower-case.
func txtTag(v string) string {
	v = strings.TrimSpace(v)
	if i := strings.IndexAny(v, "; "); i >= 0 {
		v = v[:i]
	}
	return strings.ToLower(v)
}

// normalize makes equivalent values equal: names are case-insensitive (RFC
// 4343) and tag lists ignore whitespace around ";" (RFC 6376 3.2).
func normalize(typ, v string) string {
	if typ != "TXT" {
		return strings.ToLower(strings.Join(strings.Fields(v), " "))
	}
	if !strings.Contains(v, ";") {
		return strings.Join(strings.Fields(v), " ")
	}
	var tags []string
	for _, t := range strings.Split(v, ";") {
		if t = strings.TrimSpace(t); t != "" {
			tags = append(tags, t)
		}
	}
	return strings.Join(tags, "; ")
}

// query asks for name/qtype with recursion desired and returns the
// answers of that type in the form Record.Value uses. NXDOMAIN and an
// empty answer are no answers, not errors.
func (c Checker) query(ctx context.Context, name string, qtype uint16) ([]string, error) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.SetEdns0(4096, false)
	cl := &dns.Client{Timeout: timeout}
	in, _, err := cl.ExchangeContext(ctx, m, c.Server)
	if err == nil && in.Truncated {
		// RFC 7766 5: retry over TCP when the UDP answer was truncated.
		cl.Net = "tcp"
		in, _, err = cl.ExchangeContext(ctx, m, c.Server)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s %s: %v", ErrQuery, name, dns.TypeToString[qtype], err)
	}
	switch in.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
	default:
		return nil, fmt.Errorf("%w: %s %s: %s", ErrQuery, name, dns.TypeToString[qtype], dns.RcodeToString[in.Rcode])
	}
	var out []string
	for _, rr := range in.Answer {
		if rr.Header().Rrtype != qtype || !strings.EqualFold(rr.Header().Name, dns.Fqdn(name)) {
			continue
		}
		switch v := rr.(type) {
		case *dns.MX:
			out = append(out, fmt.Sprintf("%d %s", v.Preference, v.Mx))
		case *dns.TXT:
			out = append(out, strings.Join(v.Txt, ""))
		case *dns.SRV:
			out = append(out, fmt.Sprintf("%d %d %d %s", v.Priority, v.Weight, v.Port, v.Target))
		case *dns.CNAME:
			out = append(out, v.Target)
		case *dns.A:
			out = append(out, v.A.String())
		}
	}
	return out, nil
}
