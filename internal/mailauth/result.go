package mailauth

import (
	"fmt"
	"io"
	"strings"

	"blitiri.com.ar/go/spf"
	"github.com/emersion/go-msgauth/dmarc"
)

// Result is the authentication of one message.
type Result struct {
	SPF SPFResult // of the MAIL FROM identity (of HELO for the null reverse-path): what DMARC uses
	// HELO is the separate check of the HELO identity (RFC 7208 2.3),
	// recorded in Authentication-Results only; nil when not checked.
	HELO  *SPFResult
	DKIM  []DKIMResult // one per signature, in header order; none if unsigned
	DMARC DMARCResult

	authservID string
	fields     []field
}

// Header returns the Authentication-Results field (RFC 8601 2.2), folded,
// CRLF-terminated. Values taken from the message or the envelope are
// written as RFC 2045 tokens or quoted strings, so no sender can end a
// result early or add a line.
func (r *Result) Header() string {
	var b strings.Builder
	b.WriteString("Authentication-Results: ")
	b.WriteString(r.authservID)
	// RFC 7208 9.1 / RFC 8601 2.7.2: the identity checked.
	for _, sr := range []*SPFResult{&r.SPF, r.HELO} {
		if sr == nil {
			continue
		}
		b.WriteString(";\r\n\tspf=")
		b.WriteString(string(sr.Result))
		if sr.Err != nil && sr.Result != spf.Pass && sr.Result != spf.None {
			b.WriteString(comment(sr.Err.Error()))
		}
		if sr.Identity == "helo" {
			b.WriteString(" smtp.helo=" + value(sr.Sender))
		} else {
			b.WriteString(" smtp.mailfrom=" + value(sr.Sender))
		}
	}
	if len(r.DKIM) == 0 {
		b.WriteString(";\r\n\tdkim=none")
	}
	for _, d := range r.DKIM {
		b.WriteString(";\r\n\tdkim=" + d.Result)
		if d.Reason != "" {
			b.WriteString(comment(d.Reason))
		}
		if d.Domain != "" {
			b.WriteString(" header.d=" + value(d.Domain))
		}
		if d.Selector != "" {
			b.WriteString(" header.s=" + value(d.Selector))
		}
		if d.Identity != "" && d.Identity != "@"+d.Domain {
			b.WriteString(" header.i=" + value(d.Identity))
		}
		if d.BPrefix != "" {
			b.WriteString(" header.b=" + value(d.BPrefix))
		}
	}
	b.WriteString(";\r\n\tdmarc=" + r.DMARC.Result)
	switch {
	case r.DMARC.Policy != "":
		b.WriteString(comment(fmt.Sprintf("p=%s dis=%s", r.DMARC.Policy, r.DMARC.Disposition)))
	case r.DMARC.Reason != "":
		b.WriteString(comment(r.DMARC.Reason))
	}
	if r.DMARC.Domain != "" {
		b.WriteString(" header.from=" + value(r.DMARC.Domain))
	}
	b.WriteString("\r\n")
	return b.String()
}

// Message returns the message to deliver: the Authentication-Results
// field first, then msg without any Authentication-Results field that
// claims this server's authserv-id (RFC 8601 5: such a field did not come
// from here, and a reader that trusts this server must not be misled by
// it). Nothing is copied; the result reads from msg.
func (r *Result) Message(msg io.ReaderAt, size int64) (io.ReaderAt, int64) {
	s := newSplice([]byte(r.Header()), msg, size, forged(r.fields, r.authservID))
	return s, s.Size()
}

// Forged returns how many forged Authentication-Results fields Message
// removes.
func (r *Result) Forged() int { return len(forged(r.fields, r.authservID)) }

// value writes v as an RFC 2045 token when it is one, else as a quoted
// string (RFC 8601 2.2's "value"); control characters are dropped.
func value(v string) string {
	tok := v != ""
	for _, c := range []byte(v) {
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`()<>,;:\"/[]?=`, c) >= 0 && c != '@' {
			tok = false
		}
	}
	if tok {
		return v
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, c := range []byte(v) {
		switch {
		case c < ' ' || c == 0x7f:
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// comment writes s as a " (comment)", bounded, with parentheses and
// control characters dropped.
func comment(s string) string {
	if len(s) > 120 {
		s = s[:120]
	}
	var b strings.Builder
	b.WriteString(" (")
	for _, c := range []byte(s) {
		if c >= ' ' && c < 0x7f && c != '(' && c != ')' && c != '\\' {
			b.WriteByte(c)
		}
	}
	b.WriteByte(')')
	return b.String()
}

// Policy is what the operator lets the results decide ([auth] config).
type Policy struct {
	// DMARCReject refuses failing mail from p=reject domains; off, it
	// goes to Junk (when DMARCQuarantine) or the inbox.
	DMARCReject bool
	// DMARCQuarantine delivers failing mail from p=quarantine domains
	// (and p=reject ones not refused) to the Junk folder.
	DMARCQuarantine bool
	// SPFFailReject refuses mail whose SPF result is fail ("-all")
	// unless DMARC passes (RFC 7489 10.1: a DKIM-aligned forward is not
	// refused for its SPF).
	SPFFailReject bool
	// DeferTempError answers 451 when a temperror kept DMARC (or, with
	// SPFFailReject, SPF) from deciding; off, such mail is accepted.
	DeferTempError bool
}

// Action is what happens to a message.
type Action int

// Actions.
const (
	Accept Action = iota
	Junk          // deliver to the recipients' Junk folder
	Reject        // refuse at the end of DATA (550)
	Defer         // refuse for now (451)
)

func (a Action) String() string {
	return [...]string{"accept", "junk", "reject", "defer"}[a]
}

// Verdict is the decision on a message and its client-safe reason.
type Verdict struct {
	Action Action
	Code   string // enhanced status code for Reject and Defer (RFC 3463)
	Reason string
	// DMARCFail is a DMARC failure against an enforcing policy
	// (quarantine or reject, before sampling): the behaviour the shield
	// counts per network. p=none failures are not counted: mailing lists
	// produce them every day.
	DMARCFail bool
}

// Decide applies p to the results.
func (r *Result) Decide(p Policy) Verdict {
	d := r.DMARC
	v := Verdict{DMARCFail: d.Result == "fail" && (d.Policy == dmarc.PolicyReject || d.Policy == dmarc.PolicyQuarantine)}
	dmarcPass := d.Result == "pass"
	switch {
	case d.Result == "fail" && d.Disposition == dmarc.PolicyReject && p.DMARCReject:
		v.Action, v.Code = Reject, "5.7.1"
		v.Reason = fmt.Sprintf("Message refused: %s asks receivers to reject mail that fails DMARC (p=reject), and this message has no aligned SPF or DKIM pass", d.Domain)
	case p.SPFFailReject && r.SPF.Result == spf.Fail && !dmarcPass:
		// RFC 7372 3.2: 5.7.23, SPF validation failed.
		v.Action, v.Code = Reject, "5.7.23"
		v.Reason = fmt.Sprintf("Message refused: the SPF record of %s does not allow this host to send its mail", r.SPF.Domain)
	case d.Result == "fail" && (d.Disposition == dmarc.PolicyQuarantine || d.Disposition == dmarc.PolicyReject) && p.DMARCQuarantine:
		v.Action, v.Reason = Junk, "DMARC policy of "+d.Domain+": "+string(d.Disposition)
	case p.DeferTempError && (d.Result == "temperror" || p.SPFFailReject && r.SPF.Result == spf.TempError && !dmarcPass):
		v.Action, v.Code = Defer, "4.7.0"
		v.Reason = "Sender authentication could not be completed (DNS did not answer); try again later"
	}
	return v
}
