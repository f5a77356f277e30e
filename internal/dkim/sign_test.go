package dkim

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"testing"
)

const plainMsg = "From: Ann <ann@example.org>\r\n" +
	"To: Bob <bob@remote.test>\r\n" +
	"Subject: Lunch\r\n" +
	"Date: Sat, 05 Dec 2026 12:00:00 +0000\r\n" +
	"Message-ID: <1@example.org>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=us-ascii\r\n" +
	"\r\n" +
	"Hello Bob,\r\nsee you at noon.\r\n"

// testMessages are the shapes a signer gets wrong: 8-bit bodies, long and
// folded headers, lines starting with a dot, LF-only and mixed line ends,
// no final line end, no body at all.
func testMessages() map[string]string {
	longSubject := "Subject: " + strings.Repeat("a rather long subject word ", 15)
	var refs []string
	for i := range 25 {
		refs = append(refs, fmt.Sprintf("<thread-%d-%s@lists.remote.test>", i, strings.Repeat("x", 20)))
	}
	return map[string]string{
		"plain": plainMsg,
		"8bit": "From: =?UTF-8?Q?Ann_M=C3=BCller?= <ann@example.org>\r\nTo: bob@remote.test\r\n" +
			"Subject: =?UTF-8?B?R3LDvMOfZQ==?=\r\nMIME-Version: 1.0\r\n" +
			"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" +
			"Grüße aus Köln, ñandú, 日本語のテキスト\r\nraw latin-1: \xe9\xe8\xff\x80\r\n",
		"longheaders": "From: Ann <ann@example.org>\r\nTo: " + strings.Repeat("someone@remote.test, ", 30) + "last@remote.test\r\n" +
			longSubject[:80] + "\r\n\t" + longSubject[80:200] + "\r\n   " + longSubject[200:] + "\r\n" +
			"References: " + strings.Join(refs, "\r\n ") + "\r\n" +
			"X-Unfolded: " + strings.Repeat("y", 900) + "\r\n\r\nbody\r\n",
		"dotlines": "From: ann@example.org\r\nTo: bob@remote.test\r\nSubject: dots\r\n\r\n" +
			".\r\n..\r\n.leading dot\r\n ..\r\nmiddle . dot\r\n.\r\n",
		"lfonly": strings.ReplaceAll(plainMsg, "\r\n", "\n") + ".dot line\n\n\n",
		"mixed":  "From: ann@example.org\nTo: bob@remote.test\r\nSubject: mixed\n\r\nline one\r\nline two\nbare\rcr\r\nno final newline",
		"blanks": "From: ann@example.org\r\nSubject:   spaced   out  \r\n\r\ntrailing spaces   \r\n\ttabs\t\r\n\r\n\r\n\r\n",
		// A CR before CRLF goes out as CR CR CRLF (DotWriter). Not at the end
		// of the body: there go-msgauth's relaxed body drops bare CRs that
		// dkimpy (rightly, RFC 6376 3.4.4) keeps. agua's SMTP server refuses
		// bare CR and LF (RFC 5321 2.3.8), so only mail made by agua itself
		// could carry one.
		"crcrlf": "From: ann@example.org\r\nSubject: bare CR before CRLF\r\n\r\nline\r\r\nend\r\n",
		"nobody": "From: ann@example.org\r\nTo: bob@remote.test\r\nSubject: only a header\r\n",
		"empty":  "From: ann@example.org\r\nSubject: empty body\r\n\r\n",
	}
}

// TestSignVerifiesIndependently signs every test message for a domain with
// both key types and verifies both signatures with go-msgauth and with
// dkimpy (python3-dkim), which serves the test's records as DNS.
func TestSignVerifiesIndependently(t *testing.T) {
	fx := testFixture(t)
	s := NewSigner(Options{DataDir: fx.data})
	msgs := map[string][]byte{}
	for name, m := range testMessages() {
		msgs[name] = signed(t, s, "ann@example.org", []byte(m))
		// go-msgauth parses what goes on the wire.
		got := goVerify(t, fx.records, msgs[name])
		if len(got) != 2 || got[0] != "pass d=example.org" || got[1] != "pass d=example.org" {
			t.Errorf("%s: go-msgauth: %q\n%s", name, got, msgs[name])
		}
	}
	// dkimpy also gets the LF-only input as the user agent wrote it (it
	// normalises line ends like any MTA would).
	lfSig, _ := s.Sign("", []byte(testMessages()["lfonly"]))
	msgs["lfraw"] = append(bytes.ReplaceAll(lfSig, []byte("\r\n"), []byte("\n")), testMessages()["lfonly"]...)

	res := pyVerify(t, fx.records, msgs)
	want := regexp.MustCompile(`^0 pass d=example\.org s=agua\d{8}e a=ed25519-sha256$`)
	wantRSA := regexp.MustCompile(`^1 pass d=example\.org s=agua\d{8}r a=rsa-sha256$`)
	for name := range msgs {
		got := res[name]
		if len(got) != 2 || !want.MatchString(got[0]) || !wantRSA.MatchString(got[1]) {
			t.Errorf("%s: dkimpy: %q\n%s", name, got, msgs[name])
		}
	}
}

// TestTamperedFails: a changed body, a changed From, an added From (the
// oversigned field) or an added Reply-To fail both verifiers; an added
// trace field and re-folded whitespace (relaxed canonicalization) pass.
func TestTamperedFails(t *testing.T) {
	fx := testFixture(t)
	s := NewSigner(Options{DataDir: fx.data})
	orig := signed(t, s, "ann@example.org", []byte(plainMsg))
	split := bytes.Index(orig, []byte("From: Ann"))
	hdrSig, rest := orig[:split], orig[split:]
	cases := map[string]struct {
		msg  []byte
		pass bool
	}{
		"body":        {bytes.Replace(orig, []byte("Hello Bob"), []byte("Hallo Bob"), 1), false},
		"from":        {bytes.Replace(orig, []byte("ann@example.org>"), []byte("ceo@example.org>"), 1), false},
		"added-from":  {concat(hdrSig, "From: CEO <ceo@example.org>\r\n", rest), false},
		"added-reply": {concat(hdrSig, "Reply-To: thief@evil.test\r\n", rest), false},
		"trace":       {concat("Received: from a by b; Sat, 05 Dec 2026 12:00:01 +0000\r\n", orig), true},
		"refolded":    {bytes.Replace(orig, []byte("Subject: Lunch"), []byte("Subject:   \r\n\tLunch"), 1), true},
	}
	msgs := map[string][]byte{}
	for name, c := range cases {
		msgs[name] = c.msg
		for i, r := range goVerify(t, fx.records, c.msg) {
			if strings.HasPrefix(r, "pass") != c.pass {
				t.Errorf("%s: go-msgauth signature %d: %s (want pass=%v)", name, i, r, c.pass)
			}
		}
	}
	res := pyVerify(t, fx.records, msgs)
	for name, c := range cases {
		if len(res[name]) != 2 {
			t.Errorf("%s: dkimpy: %q", name, res[name])
		}
		for _, r := range res[name] {
			if strings.Contains(r, " pass ") != c.pass {
				t.Errorf("%s: dkimpy: %s (want pass=%v)", name, r, c.pass)
			}
		}
	}
}

func concat(parts ...any) []byte {
	var b []byte
	for _, p := range parts {
		switch v := p.(type) {
		case string:
			b = append(b, v...)
		case []byte:
			b = append(b, v...)
		}
	}
	return b
}

// TestSigningDomain: the From domain signs when it has a key, else the
// envelope sender's; with neither there is no signature and no error.
func TestSigningDomain(t *testing.T) {
	fx := testFixture(t)
	s := NewSigner(Options{DataDir: fx.data})
	for _, c := range []struct {
		from, env string
		want      string // d= of each signature, "" for none
	}{
		{"Ann <ann@example.org>", "bob@other.test", "example.org example.org"},
		{"Ann <ANN@Example.ORG>", "", "example.org example.org"},
		{"=?ISO-2022-JP?B?GyRCJUYlOSVIGyhC?= <x@ed.example>", "", "ed.example"}, // net/mail cannot decode: fallback
		{"list@outside.test", "bounces+x=y@rsa.example", "rsa.example"},
		{"a@outside.test, b@ed.example", "", "ed.example"},
		{"x@outside.test", "", ""},
		{"x@outside.test", "y@nokey.test", ""},
		{"not an address", "z@ed.example", "ed.example"},
		{"Jörg <jörg@bücher.example>", "", "xn--bcher-kva.example"}, // SMTPUTF8: d= in A-labels (RFC 8616 4)
		{"x@outside.test", "jörg@BÜCHER.example", "xn--bcher-kva.example"},
	} {
		msg := "From: " + c.from + "\r\nSubject: s\r\n\r\nbody\r\n"
		h, err := s.Sign(c.env, []byte(msg))
		if err != nil {
			t.Fatalf("%q/%q: %v", c.from, c.env, err)
		}
		var ds []string
		for _, m := range regexp.MustCompile(`d=([^;]+);`).FindAllStringSubmatch(string(h), -1) {
			ds = append(ds, m[1])
		}
		if got := strings.Join(ds, " "); got != c.want {
			t.Errorf("From %q env %q: signed by %q, want %q", c.from, c.env, got, c.want)
		}
		if h != nil {
			if got := goVerify(t, fx.records, append(h, msg...)); !strings.HasPrefix(got[0], "pass") {
				t.Errorf("From %q: %q", c.from, got)
			}
		}
	}
	// No From field at all: the envelope decides.
	h, _ := s.Sign("a@rsa.example", []byte("Subject: no from\r\n\r\nx\r\n"))
	if !bytes.Contains(h, []byte("d=rsa.example;")) {
		t.Errorf("no From: %q", h)
	}
	// A nil Signer signs nothing.
	var none *Signer
	if h, err := none.Sign("a@example.org", []byte(plainMsg)); h != nil || err != nil {
		t.Errorf("nil signer: %q %v", h, err)
	}
}

// TestHeaderSet: present fields are signed as often as they occur, From
// and the other oversigned fields once more; fields not in the set are not
// signed.
func TestHeaderSet(t *testing.T) {
	fx := testFixture(t)
	s := NewSigner(Options{DataDir: fx.data})
	msg := "From: ann@example.org\r\nTo: b@r.test\r\nSubject: s\r\nList-Id: <l.example.org>\r\n" +
		"Received: x\r\nX-Mailer: y\r\nComments: a\r\nComments: b\r\n\r\nbody\r\n"
	h, err := s.Sign("", []byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`;h=([^;]+);`).FindStringSubmatch(strings.NewReplacer("\r\n", "", " ", "").Replace(string(h)))
	if m == nil {
		t.Fatalf("no h= in %q", h)
	}
	want := "From:From:Reply-To:Subject:Subject:Date:To:To:Cc:Message-ID:MIME-Version:Content-Type:Content-Transfer-Encoding:List-Id"
	if m[1] != want {
		t.Errorf("h=%s\nwant %s", m[1], want)
	}
	if c := bytes.Count(h, []byte("DKIM-Signature:")); c != 2 {
		t.Errorf("%d signatures, want 2 (RFC 8463 dual signing)", c)
	}
	if !bytes.Contains(h, []byte("c=relaxed/relaxed")) {
		t.Errorf("canonicalization: %q", h)
	}
}
