package dkim

import (
	"bytes"
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
