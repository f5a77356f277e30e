package dkim

import (
	"strings"
	"testing"
	"time"
)

// BenchmarkSign2KiB is the signing cost of one 2 KiB message (issue 12's
// benchmark size): ed25519 alone, RSA-2048 alone, and both (two signatures,
// what a domain with both keys pays).
//
//	go test -run '^$' -bench Sign2KiB -benchmem ./internal/dkim/
func BenchmarkSign2KiB(b *testing.B) {
	data := b.TempDir()
	for _, k := range []struct {
		domain string
		algo   Algo
	}{{"ed.example", Ed25519}, {"rsa.example", RSA}, {"both.example", Ed25519}, {"both.example", RSA}} {
		if _, err := Keygen(data, k.domain, k.algo, "", time.Time{}); err != nil {
			b.Fatal(err)
		}
	}
	s := NewSigner(Options{DataDir: data})
	for _, domain := range []string{"ed.example", "rsa.example", "both.example"} {
		hdr := "From: Ann <ann@" + domain + ">\r\nTo: bob@remote.test\r\nSubject: benchmark\r\n" +
			"Date: Sat, 05 Dec 2026 12:00:00 +0000\r\nMessage-ID: <b@" + domain + ">\r\n\r\n"
		line := strings.Repeat("0123456789abcdef", 4) + "\r\n"
		msg := []byte(hdr + strings.Repeat(line, (2048-len(hdr))/len(line)))
		b.Run(strings.TrimSuffix(domain, ".example"), func(b *testing.B) {
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				if h, err := s.Sign("", msg); err != nil || h == nil {
					b.Fatal(h, err)
				}
			}
		})
	}
}
