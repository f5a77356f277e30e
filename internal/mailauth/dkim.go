package mailauth

import (
	"context"
	"errors"
	"io"
	"strings"

	"github.com/emersion/go-msgauth/dkim"
)

// DKIMResult is the verification of one DKIM-Signature field.
type DKIMResult struct {
	// Result is pass, fail, policy, neutral, temperror or permerror
	// (RFC 8601 2.7.1).
	Result   string
	Domain   string // d=, the signing domain (SDID)
	Selector string // s=
	Identity string // i=, the AUID
	BPrefix  string // the start of b=, to tell signatures apart (RFC 6008)
	Reason   string // why it did not pass
}

// verifyDKIM verifies every DKIM signature (up to maxSignatures). A
// signature with a body length tag (l=) is never a pass, whether or not
// content follows the signed length: RFC 6376 8.2 warns that anyone can
// append content to such a message (a second MIME part shown instead of
// the signed one) and keep the signature valid. It is reported as
// "policy" (RFC 8601 2.7.1: signed, but not acceptable to this ADMD) and
// counts for nothing in DMARC.
func (c *Checker) verifyDKIM(ctx context.Context, msg io.ReaderAt, size int64, fields []field) []DKIMResult {
	verifs, err := dkim.VerifyWithOptions(io.NewSectionReader(msg, 0, size), &dkim.VerifyOptions{
		LookupTXT:        txtLookup(ctx, c.cfg.Resolver),
		MaxVerifications: maxSignatures,
	})
	if err != nil && !errors.Is(err, dkim.ErrTooManySignatures) {
		if len(verifs) == 0 {
			// The header section cannot be parsed: no signature can
			// be judged.
			return []DKIMResult{{Result: "permerror", Reason: "malformed message: " + err.Error()}}
		}
	}
	var sigs []map[string]string
	for _, f := range fields {
		if strings.EqualFold(f.name, "DKIM-Signature") {
			sigs = append(sigs, tags(f.value))
		}
	}
	out := make([]DKIMResult, 0, len(verifs))
	for i, v := range verifs {
		r := DKIMResult{Domain: strings.ToLower(v.Domain), Identity: v.Identifier}
		var t map[string]string
		if i < len(sigs) {
			t = sigs[i]
			r.Selector = t["s"]
			r.BPrefix = t["b"][:min(len(t["b"]), 8)]
			if r.Domain == "" {
				r.Domain = strings.ToLower(t["d"])
			}
		}
		_, hasL := t["l"]
		switch {
		case hasL:
			r.Result, r.Reason = "policy", "body length tag l= not accepted"
		case v.Err == nil:
			r.Result = "pass"
		case dkim.IsTempFail(v.Err):
			r.Result, r.Reason = "temperror", v.Err.Error()
		case dkim.IsPermFail(v.Err):
			r.Result, r.Reason = "permerror", v.Err.Error()
		default:
			r.Result, r.Reason = "fail", v.Err.Error()
		}
		out = append(out, r)
	}
	return out
}

// tags parses a DKIM tag list (RFC 6376 3.2), with whitespace removed from
// the values (folding inside b= and bh=).
func tags(v string) map[string]string {
	m := map[string]string{}
	for _, kv := range strings.Split(v, ";") {
		k, val, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		m[strings.TrimSpace(k)] = strings.Join(strings.Fields(val), "")
	}
	return m
}
