package dkim

import (
	"bytes"
	"strings"
	"sync"
	"testing"
)

// FuzzToWire: what Sign hashes is exactly what an SMTP client using
// net/textproto's DotWriter puts on the wire (after the server undoes the
// dot-stuffing), for any bytes.
func FuzzToWire(f *testing.F) {
	for _, s := range []string{"", "a", "\n", "\r", "\r\n", "a\nb", "a\r\r\nb", "\r\r\r\n\n", ".\r\n..\n", "x\r", "x\n\r", "no end"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		if got, want := toWire(msg), dotWire(t, msg); !bytes.Equal(got, want) {
			t.Fatalf("toWire(%q) = %q, DotWriter sends %q", msg, got, want)
		}
	})
}

// FuzzSign: whatever follows a From of a domain with a key, Sign does not
// panic, and what it signs verifies (go-msgauth) as it goes on the wire.
func FuzzSign(f *testing.F) {
	for _, m := range testMessages() {
		_, rest, _ := bytes.Cut([]byte(m), []byte("\n"))
		f.Add(rest)
	}
	f.Add([]byte("\r\n"))
	f.Add([]byte(" continuation\r\nX: y\r\n\r\n"))
	f.Add([]byte("no colon line\r\n\r\nbody"))
	f.Fuzz(func(t *testing.T, rest []byte) {
		fx := testFixture(t)
		s := fuzzSigner(fx.data)
		msg := append([]byte("From: a@ed.example\r\n"), rest...)
		h, err := s.Sign("", msg)
		if err != nil || h == nil {
			return // refused as malformed: sent unsigned, never a crash
		}
		for _, r := range goVerify(t, fx.records, append(h, dotWire(t, msg)...)) {
			if !strings.HasPrefix(r, "pass") {
				t.Fatalf("%s for %q", r, msg)
			}
		}
	})
}

var (
	fuzzOnce sync.Once
	fuzzS    *Signer
)

func fuzzSigner(data string) *Signer {
	fuzzOnce.Do(func() { fuzzS = NewSigner(Options{DataDir: data}) })
	return fuzzS
}
