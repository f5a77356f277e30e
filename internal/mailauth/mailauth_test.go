package mailauth

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"blitiri.com.ar/go/spf"
	"github.com/miekg/dns"
)

func TestSPF(t *testing.T) {
	w := newWorld(t)
	m := msg("a@news.example", "hi", "hello\n")
	for _, tc := range []struct {
		name, ip, helo, from string
		want                 spf.Result
		identity             string
	}{
		{"pass", "192.0.2.10", "mx.bank.example", "alice@bank.example", spf.Pass, "mailfrom"},
		{"fail", "198.51.100.7", "evil.example", "alice@bank.example", spf.Fail, "mailfrom"},
		{"softfail", "198.51.100.7", "evil.example", "x@shop.example", spf.SoftFail, "mailfrom"},
		{"none", "198.51.100.7", "evil.example", "x@nospf.example", spf.None, "mailfrom"},
		{"permerror unknown mechanism", "192.0.2.40", "h", "x@broken.example", spf.PermError, "mailfrom"},
		// RFC 7208 4.6.4: the third void lookup is a permerror, even
		// though the address is listed after the void names.
		{"void lookup limit", "192.0.2.50", "h", "x@void.example", spf.PermError, "mailfrom"},
		// RFC 7208 4.6.4: eleven includes exceed the 10 lookups.
		{"lookup limit", "192.0.2.60", "h", "x@many.example", spf.PermError, "mailfrom"},
		{"include within limit", "203.0.113.3", "h", "x@many.example", spf.Pass, "mailfrom"},
		{"mx mechanism", "192.0.2.70", "h", "x@mxa.example", spf.Pass, "mailfrom"},
		// RFC 7208 2.4: the null reverse-path is checked as the HELO name.
		{"null sender uses helo", "192.0.2.10", "bank.example", "", spf.Pass, "helo"},
		{"address literal helo", "192.0.2.10", "[192.0.2.10]", "", spf.None, "helo"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := w.check(t, tc.ip, tc.helo, tc.from, m)
			if r.SPF.Result != tc.want || r.SPF.Identity != tc.identity {
				t.Fatalf("spf = %s (%s, err %v), want %s (%s)", r.SPF.Result, r.SPF.Identity, r.SPF.Err, tc.want, tc.identity)
			}
			hdr := r.Header()
			if !strings.Contains(hdr, "spf="+string(tc.want)) {
				t.Fatalf("header lacks spf=%s:\n%s", tc.want, hdr)
			}
		})
	}
	if n := w.dns.Queries("n3.void.example", dns.TypeA); n != 1 {
		t.Fatalf("the third void name was asked %d times, want 1 (then the evaluation stops)", n)
	}
	if n := w.dns.Queries("i11.many.example", dns.TypeTXT); n != 0 {
		t.Fatalf("the 11th include was looked up (%d queries): the 10-lookup limit was not honoured", n)
	}
}

func TestDKIM(t *testing.T) {
	w := newWorld(t)
	base := msg("Alice <alice@bank.example>", "statement", "Your balance is 10.\n")
	aguaSigned := w.aguaSign(t, "alice@bank.example", base)
	pySigned := w.pySign(t, "bank.example", base, false)
	for _, tc := range []struct {
		name string
		m    []byte
		want []string
	}{
		{"unsigned", base, nil},
		{"agua signer (ed25519 and rsa)", aguaSigned, []string{"pass d=bank.example", "pass d=bank.example"}},
		{"dkimpy", pySigned, []string{"pass d=bank.example"}},
		{"body tampered", bytes.Replace(pySigned, []byte("is 10."), []byte("is 1000."), 1), []string{"fail d=bank.example"}},
		{"agua body tampered", bytes.Replace(aguaSigned, []byte("is 10."), []byte("is 1000."), 1), []string{"fail d=bank.example", "fail d=bank.example"}},
		{"header tampered", bytes.Replace(pySigned, []byte("Subject: statement"), []byte("Subject: urgent"), 1), []string{"fail d=bank.example"}},
		// RFC 6376 8.2: content appended past l= keeps the signature
		// valid; agua takes no l= signature as a pass.
		{"l= with content appended", append(w.pySign(t, "bank.example", base, true), "\r\nClick http://evil.example/\r\n"...), []string{"policy d=bank.example"}},
		{"l= untouched", w.pySign(t, "bank.example", base, true), []string{"policy d=bank.example"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := w.check(t, "192.0.2.10", "h", "alice@bank.example", tc.m)
			got := dkimResults(r)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("dkim = %q, want %q\n%s", got, tc.want, r.Header())
			}
			hdr := r.Header()
			if len(tc.want) == 0 && !strings.Contains(hdr, "dkim=none") {
				t.Fatalf("unsigned message without dkim=none:\n%s", hdr)
			}
			for _, d := range r.DKIM {
				if !strings.Contains(hdr, "dkim="+d.Result) || !strings.Contains(hdr, "header.s=") {
					t.Fatalf("header lacks dkim=%s with its selector:\n%s", d.Result, hdr)
				}
			}
		})
	}
}

func TestDMARC(t *testing.T) {
	w := newWorld(t)
	for _, tc := range []struct {
		name       string
		ip, from   string
		m          []byte
		sign       string // "agua", "py:<domain>" or ""
		want       string
		dis        string
		action     Action
		dmarcFail  bool
		percent    int
		policyText string
	}{
		{name: "legitimate signed", ip: "192.0.2.10", from: "alice@bank.example", m: msg("alice@bank.example", "s", "b\n"), sign: "agua",
			want: "pass", dis: "none", action: Accept},
		{name: "spoofed p=reject", ip: "198.51.100.7", from: "x@evil.example", m: msg("Bank <alice@bank.example>", "s", "b\n"),
			want: "fail", dis: "reject", action: Reject, dmarcFail: true, policyText: "p=reject dis=reject"},
		{name: "spoofed with SPF pass of another domain", ip: "192.0.2.20", from: "x@shop.example", m: msg("alice@bank.example", "s", "b\n"),
			want: "fail", dis: "reject", action: Reject, dmarcFail: true},
		{name: "p=quarantine", ip: "198.51.100.7", from: "x@evil.example", m: msg("deals@shop.example", "s", "b\n"),
			want: "fail", dis: "quarantine", action: Junk, dmarcFail: true},
		{name: "p=none", ip: "198.51.100.7", from: "x@evil.example", m: msg("n@news.example", "s", "b\n"),
			want: "fail", dis: "none", action: Accept},
		{name: "no policy", ip: "198.51.100.7", from: "x@evil.example", m: msg("n@nodmarc.example", "s", "b\n"),
			want: "none", dis: "none", action: Accept},
		// RFC 7489 6.3: a subdomain without its own record takes sp=.
		{name: "subdomain policy", ip: "198.51.100.7", from: "x@evil.example", m: msg("a@mail.bank.example", "s", "b\n"),
			want: "fail", dis: "quarantine", action: Junk, dmarcFail: true, policyText: "p=quarantine dis=quarantine"},
		{name: "subdomain legitimate", ip: "192.0.2.10", from: "a@mail.bank.example", m: msg("a@mail.bank.example", "s", "b\n"),
			want: "pass", dis: "none", action: Accept},
		// RFC 7489 3.1.2: SPF of bounce.<org> aligns with <org> when relaxed only.
		{name: "spf relaxed alignment", ip: "192.0.2.30", from: "b@bounce.relaxed.example", m: msg("a@relaxed.example", "s", "b\n"),
			want: "pass", dis: "none", action: Accept},
		{name: "spf strict alignment", ip: "192.0.2.30", from: "b@bounce.strict.example", m: msg("a@strict.example", "s", "b\n"),
			want: "fail", dis: "reject", action: Reject, dmarcFail: true},
		// RFC 7489 3.1.1: DKIM d=mail.<org> aligns with <org> when relaxed only.
		{name: "dkim relaxed alignment", ip: "198.51.100.7", from: "x@evil.example", m: msg("a@relaxed.example", "s", "b\n"), sign: "py:mail.relaxed.example",
			want: "pass", dis: "none", action: Accept},
		{name: "dkim strict alignment", ip: "198.51.100.7", from: "x@evil.example", m: msg("a@strict.example", "s", "b\n"), sign: "py:mail.strict.example",
			want: "fail", dis: "reject", action: Reject, dmarcFail: true},
		// RFC 7489 6.6.4: outside pct, reject becomes quarantine.
		{name: "pct sampled in", ip: "198.51.100.7", from: "x@evil.example", m: msg("a@sampled.example", "s", "b\n"), percent: 10,
			want: "fail", dis: "reject", action: Reject, dmarcFail: true},
		{name: "pct sampled out", ip: "198.51.100.7", from: "x@evil.example", m: msg("a@sampled.example", "s", "b\n"), percent: 70,
			want: "fail", dis: "quarantine", action: Junk, dmarcFail: true},
		// A second From address cannot lead past the policy.
		{name: "two From addresses", ip: "192.0.2.10", from: "a@bank.example", m: msg("a@nodmarc.example, b@shop.example", "s", "b\n"),
			want: "fail", dis: "quarantine", action: Junk, dmarcFail: true},
		{name: "unparseable From", ip: "198.51.100.7", from: "x@evil.example", m: msg("=?x-unknown?q?Bank?= <<alice@bank.example>", "s", "b\n"),
			want: "fail", dis: "reject", action: Reject, dmarcFail: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w.percent = tc.percent
			m := tc.m
			switch {
			case tc.sign == "agua":
				m = w.aguaSign(t, tc.from, m)
			case strings.HasPrefix(tc.sign, "py:"):
				m = w.pySign(t, strings.TrimPrefix(tc.sign, "py:"), m, false)
			}
			r := w.check(t, tc.ip, "h.example", tc.from, m)
			v := r.Decide(Policy{DMARCReject: true, DMARCQuarantine: true})
			if r.DMARC.Result != tc.want || string(r.DMARC.Disposition) != tc.dis || v.Action != tc.action || v.DMARCFail != tc.dmarcFail {
				t.Fatalf("dmarc = %s dis=%s, verdict %s (dmarc_fail %v); want %s dis=%s, %s (%v)\n%s",
					r.DMARC.Result, r.DMARC.Disposition, v.Action, v.DMARCFail, tc.want, tc.dis, tc.action, tc.dmarcFail, r.Header())
			}
			hdr := r.Header()
			if !strings.Contains(hdr, "dmarc="+tc.want) || tc.policyText != "" && !strings.Contains(hdr, tc.policyText) {
				t.Fatalf("header:\n%s", hdr)
			}
			if v.Action == Reject && (v.Code != "5.7.1" || !strings.Contains(v.Reason, "DMARC")) {
				t.Fatalf("reject verdict %+v", v)
			}
		})
	}
}

func TestLegitimateHeader(t *testing.T) {
	w := newWorld(t)
	m := w.aguaSign(t, "alice@bank.example", msg("Alice <alice@bank.example>", "hello", "hi\n"))
	r := w.check(t, "192.0.2.10", "mx.bank.example", "alice@bank.example", m)
	hdr := r.Header()
	for _, want := range []string{
		"Authentication-Results: " + testHost + ";\r\n",
		"spf=pass smtp.mailfrom=alice@bank.example",
		"dkim=pass header.d=bank.example header.s=",
		"dmarc=pass (p=reject dis=none) header.from=bank.example\r\n",
	} {
		if !strings.Contains(hdr, want) {
			t.Fatalf("header lacks %q:\n%s", want, hdr)
		}
	}
}

func TestSPFFailPolicy(t *testing.T) {
	w := newWorld(t)
	// SPF -all fails, DMARC has no policy (From is elsewhere): refused
	// only when spf_fail_reject is on.
	r := w.check(t, "198.51.100.7", "h", "alice@bank.example", msg("a@nodmarc.example", "s", "b\n"))
	if v := r.Decide(Policy{DMARCReject: true, DMARCQuarantine: true}); v.Action != Accept {
		t.Fatalf("SPF fail refused with spf_fail_reject off: %+v", v)
	}
	v := r.Decide(Policy{SPFFailReject: true})
	if v.Action != Reject || v.Code != "5.7.23" || !strings.Contains(v.Reason, "bank.example") {
		t.Fatalf("SPF fail with spf_fail_reject: %+v", v)
	}
	// RFC 7489 10.1: a forward that breaks SPF but keeps an aligned DKIM
	// signature passes DMARC and is not refused for its SPF.
	m := w.aguaSign(t, "alice@bank.example", msg("alice@bank.example", "s", "b\n"))
	r = w.check(t, "198.51.100.7", "h", "alice@bank.example", m)
	if r.SPF.Result != spf.Fail || r.DMARC.Result != "pass" {
		t.Fatalf("forward: spf %s dmarc %s", r.SPF.Result, r.DMARC.Result)
	}
	if v := r.Decide(Policy{SPFFailReject: true, DMARCReject: true}); v.Action != Accept {
		t.Fatalf("DKIM-aligned forward refused: %+v", v)
	}
}

// A DNS server that does not answer, or answers SERVFAIL, makes the
// results temperror, which never refuses (or defers when configured).
func TestDNSFailuresAreTemporary(t *testing.T) {
	w := newWorld(t)
	full := Policy{DMARCReject: true, DMARCQuarantine: true, SPFFailReject: true}
	cases := []struct {
		name  string
		setup func()
		from  string
		m     func() []byte
		check func(*testing.T, *Result)
	}{
		{"dmarc record timeout", func() { w.dns.Silent("_dmarc.slow.example", dns.TypeTXT, true) }, "x@evil.example",
			func() []byte { return msg("a@slow.example", "s", "b\n") },
			func(t *testing.T, r *Result) {
				if r.DMARC.Result != "temperror" {
					t.Fatalf("dmarc %s", r.DMARC.Result)
				}
			}},
		{"dmarc record servfail", func() { w.dns.Rcode("_dmarc.servfail.example", dns.TypeTXT, dns.RcodeServerFailure) }, "x@evil.example",
			func() []byte { return msg("a@servfail.example", "s", "b\n") },
			func(t *testing.T, r *Result) {
				if r.DMARC.Result != "temperror" {
					t.Fatalf("dmarc %s", r.DMARC.Result)
				}
			}},
		{"spf timeout", func() { w.dns.Silent("slow.example", dns.TypeTXT, true) }, "x@slow.example",
			func() []byte { return msg("a@nodmarc.example", "s", "b\n") },
			func(t *testing.T, r *Result) {
				if r.SPF.Result != spf.TempError {
					t.Fatalf("spf %s", r.SPF.Result)
				}
			}},
		{"dkim key servfail", func() {
			w.dns.Rcode("py._domainkey.servfail.example", dns.TypeTXT, dns.RcodeServerFailure)
			w.dns.Rcode("_dmarc.servfail.example", dns.TypeTXT, dns.RcodeSuccess)
		}, "x@evil.example",
			func() []byte { return w.pySign(t, "servfail.example", msg("a@servfail.example", "s", "b\n"), false) },
			func(t *testing.T, r *Result) {
				if got := dkimResults(r); !slices.Equal(got, []string{"temperror d=servfail.example"}) || r.DMARC.Result != "temperror" {
					t.Fatalf("dkim %q dmarc %s", got, r.DMARC.Result)
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.setup()
			r := w.check(t, "198.51.100.7", "h", tc.from, tc.m())
			tc.check(t, r)
			if v := r.Decide(full); v.Action != Accept {
				t.Fatalf("temporary DNS failure gave %+v; want accept\n%s", v, r.Header())
			}
			deferring := full
			deferring.DeferTempError = true
			if v := r.Decide(deferring); v.Action != Defer || v.Code != "4.7.0" {
				t.Fatalf("with temperror=defer: %+v", v)
			}
		})
	}
}

// A sender's Authentication-Results field claiming this server's
// authserv-id is removed (RFC 8601 5); others' are kept, and ours is on top.
func TestForgedResultsRemoved(t *testing.T) {
	w := newWorld(t)
	m := []byte("Received: from x by " + testHost + "; Sat, 05 Dec 2026 20:00:00 +0000\r\n" +
		"Authentication-Results: MX.AGUA.TEST;\r\n\tdkim=pass header.d=bank.example;\r\n\tdmarc=pass header.from=bank.example\r\n" +
		"Authentication-Results: relay.example; spf=pass smtp.mailfrom=bank.example\r\n" +
		"Authentication-Results: (sneaky) mx.agua.test 1; dmarc=pass\r\n" +
		"From: alice@bank.example\r\nSubject: s\r\n\r\nbody\r\n" +
		"Authentication-Results: mx.agua.test; in the body, not a header\r\n")
	r := w.check(t, "198.51.100.7", "h", "x@evil.example", m)
	if r.Forged() != 2 {
		t.Fatalf("forged = %d, want 2", r.Forged())
	}
	out, size := r.Message(bytes.NewReader(m), int64(len(m)))
	got, err := io.ReadAll(io.NewSectionReader(out, 0, size))
	if err != nil {
		t.Fatal(err)
	}
	s := string(got)
	if !strings.HasPrefix(s, r.Header()+"Received: from x") {
		t.Fatalf("our header is not first:\n%s", s)
	}
	if strings.Contains(s, "MX.AGUA.TEST") || strings.Contains(s, "sneaky") || strings.Count(s, "dmarc=pass") != 0 {
		t.Fatalf("forged field kept:\n%s", s)
	}
	if !strings.Contains(s, "Authentication-Results: relay.example; spf=pass") || !strings.Contains(s, "in the body, not a header") {
		t.Fatalf("another server's field or the body was changed:\n%s", s)
	}
	if r.DMARC.Result != "fail" {
		t.Fatalf("dmarc %s: the forged pass was believed", r.DMARC.Result)
	}
	// Reads at any offset and length agree with the whole.
	for off := int64(0); off < size; off += 37 {
		buf := make([]byte, 53)
		n, _ := out.ReadAt(buf, off)
		if string(buf[:n]) != s[off:min(off+53, size)] {
			t.Fatalf("ReadAt(%d) = %q", off, buf[:n])
		}
	}
}

// Values from the sender cannot break out of their place in the header.
func TestHeaderInjection(t *testing.T) {
	w := newWorld(t)
	r := w.check(t, "198.51.100.7", "h", "a;dmarc=pass\r\nX-Evil: 1@evil.example", msg("a@nodmarc.example", "s", "b\n"))
	hdr := r.Header()
	if strings.Contains(hdr, "X-Evil: 1") && !strings.Contains(hdr, `"a;dmarc=pass`) || strings.Count(hdr, "\r\n") != 4 {
		t.Fatalf("sender text escaped its value:\n%s", hdr)
	}
}

func TestBeginCancelled(t *testing.T) {
	w := newWorld(t)
	w.dns.Silent("slow.example", dns.TypeTXT, true)
	ctx, cancel := context.WithCancel(context.Background())
	ch := w.c.Begin(ctx, Envelope{IP: netip.MustParseAddr("192.0.2.1"), Helo: "h", From: "a@slow.example"})
	cancel()
	m := msg("a@nodmarc.example", "s", "b\n")
	r, err := ch.Finish(context.Background(), bytes.NewReader(m), int64(len(m)))
	if err != nil || r.SPF.Result != spf.TempError {
		t.Fatalf("spf after cancel: %v %v", r.SPF.Result, err)
	}
}

// A From domain in Unicode (SMTPUTF8) is looked up as its A-label: the
// policy of xn--bcher-kva.example applies to bücher.example.
func TestDMARCUnicodeDomain(t *testing.T) {
	w := newWorld(t)
	w.dns.Add(t, `_dmarc.xn--bcher-kva.example. 300 IN TXT "v=DMARC1; p=reject"`)
	r := w.check(t, "198.51.100.7", "h", "x@evil.example", msg("a@bücher.example", "s", "b\n"))
	if r.DMARC.Result != "fail" || r.DMARC.Disposition != "reject" || r.DMARC.Domain != "xn--bcher-kva.example" {
		t.Fatalf("dmarc %+v", r.DMARC)
	}
}

// A header section past MaxHeader is refused as a whole: a forged result
// beyond the bound could be neither judged nor removed.
func TestHeaderTooLong(t *testing.T) {
	w := newWorld(t)
	var b bytes.Buffer
	for b.Len() <= MaxHeader {
		b.WriteString("X-Filler: " + strings.Repeat("x", 990) + "\r\n")
	}
	b.WriteString("Authentication-Results: " + testHost + "; dmarc=pass\r\nFrom: a@bank.example\r\n\r\nbody\r\n")
	ch := w.c.Begin(context.Background(), Envelope{IP: netip.MustParseAddr("198.51.100.7"), Helo: "h", From: "x@evil.example"})
	defer ch.Close()
	if _, err := ch.Finish(context.Background(), bytes.NewReader(b.Bytes()), int64(b.Len())); !errors.Is(err, ErrHeaderTooLong) {
		t.Fatalf("Finish = %v, want ErrHeaderTooLong", err)
	}
}

// The header parsers take any bytes without panicking, and a forged field
// they find is one whose removal leaves a message the parser reads again
// without it.
func FuzzHeader(f *testing.F) {
	f.Add([]byte("Authentication-Results: mx.agua.test; dmarc=pass\r\nFrom: a@b.example\r\n\r\nbody"))
	f.Add([]byte("From: =?x?q?a?= <<a@b>\r\n folded\r\nAuthentication-Results: (c (n)) MX.AGUA.TEST 1; x\r\n"))
	f.Add([]byte("\r\n\r\n"))
	f.Fuzz(func(t *testing.T, m []byte) {
		fields, err := readHeader(bytes.NewReader(m), int64(len(m)))
		if err != nil {
			return
		}
		fromDomains(fields)
		drop := forged(fields, testHost)
		r := &Result{authservID: testHost, fields: fields}
		out, size := r.Message(bytes.NewReader(m), int64(len(m)))
		got, err := io.ReadAll(io.NewSectionReader(out, 0, size))
		if err != nil {
			t.Fatal(err)
		}
		again, err := readHeader(bytes.NewReader(got), int64(len(got)))
		if err != nil {
			return
		}
		if n := len(forged(again, testHost)); n != 1 {
			// Exactly ours is left; every forged one went.
			t.Fatalf("after removing %d forged fields, %d claim our id:\n%q", len(drop), n, got)
		}
	})
}

// RFC 7208 2.3: the HELO identity is checked on its own and recorded; DMARC
// still uses the MAIL FROM identity.
func TestSPFHelo(t *testing.T) {
	w := newWorld(t)
	r := w.check(t, "192.0.2.10", "mail.bank.example", "x@nospf.example", msg("a@nodmarc.example", "s", "b\n"))
	if r.SPF.Result != spf.None || r.HELO == nil || r.HELO.Result != spf.Pass || r.HELO.Domain != "mail.bank.example" {
		t.Fatalf("spf %+v helo %+v", r.SPF, r.HELO)
	}
	if hdr := r.Header(); !strings.Contains(hdr, "spf=none smtp.mailfrom=x@nospf.example;\r\n\tspf=pass smtp.helo=mail.bank.example;") {
		t.Fatalf("header:\n%s", hdr)
	}
	// An address literal or a single label is no HELO identity.
	for _, helo := range []string{"[192.0.2.10]", "localhost"} {
		if r := w.check(t, "192.0.2.10", helo, "x@nospf.example", msg("a@b.example", "s", "b\n")); r.HELO != nil {
			t.Fatalf("HELO %q checked: %+v", helo, r.HELO)
		}
	}
}

// An SPF check still running when the budget ends is a temperror of the
// same identity, so an aligned MAIL FROM domain makes DMARC temperror (the
// message is not refused) rather than fail.
func TestSPFUnfinishedIsAlignedTemperror(t *testing.T) {
	w := newWorld(t)
	env := Envelope{IP: netip.MustParseAddr("198.51.100.7"), Helo: "h", From: "x@bank.example"}
	ch := w.c.Begin(context.Background(), env)
	ch.Close()
	// A check whose SPF result never arrives, as if the lookups hung.
	stuck := &Check{c: w.c, env: env, from: ch.from, spf: make(chan SPFResult, 1), cancel: func() {}}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	m := msg("a@bank.example", "s", "b\n")
	r, err := stuck.Finish(ctx, bytes.NewReader(m), int64(len(m)))
	if err != nil {
		t.Fatal(err)
	}
	if r.SPF.Result != spf.TempError || r.SPF.Domain != "bank.example" || r.SPF.Identity != "mailfrom" {
		t.Fatalf("unfinished SPF: %+v", r.SPF)
	}
	if r.DMARC.Result != "temperror" {
		t.Fatalf("dmarc %s with an aligned SPF check unfinished", r.DMARC.Result)
	}
	if v := r.Decide(Policy{DMARCReject: true, DMARCQuarantine: true}); v.Action != Accept {
		t.Fatalf("verdict %+v", v)
	}
}
