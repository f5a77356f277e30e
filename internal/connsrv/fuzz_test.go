package connsrv

import (
	"bufio"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

// FuzzDecodeSASL: any client response decodes, cancels or is refused as
// not base64; never a panic, and never more bytes than base64 can carry.
func FuzzDecodeSASL(f *testing.F) {
	for _, seed := range []string{
		"", "*", "=", " = ", "AGFsaWNlAHNlY3JldA==", "dXNlcg", "!!!notbase64",
		"AGFs\r\naWNl", "YQ==YQ==", "RSET", strings.Repeat("A", 4096),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := DecodeSASL(s)
		switch {
		case errors.Is(err, ErrSASLCancelled):
			if strings.TrimSpace(s) != "*" {
				t.Fatalf("%q cancelled", s)
			}
		case errors.Is(err, ErrSASLBase64):
		case err != nil:
			t.Fatalf("untyped error %v", err)
		case b == nil:
			t.Fatalf("%q: nil response without error", s)
		case len(b) > base64.StdEncoding.DecodedLen(len(s)):
			t.Fatalf("%q decoded to %d bytes", s, len(b))
		}
	})
}

// FuzzReadLine: whatever the client sends, ReadLine returns lines without
// an LF and never longer than the limit, consumes overlong lines whole, and
// so stays in step: the lines it returns are exactly the input's short
// lines, in order.
func FuzzReadLine(f *testing.F) {
	for _, seed := range []string{
		"NOOP\r\nQUIT\r\n", "a\nb\r\nc", strings.Repeat("x", 5000) + "\r\nNOOP\r\n",
		"\r\n\n\r\r\n", "NOOP\rQUIT\r\n", strings.Repeat("y", 4095) + "\nz\n",
	} {
		f.Add(seed, 64)
	}
	f.Fuzz(func(t *testing.T, in string, max int) {
		if max < 1 || max > 1<<16 {
			return
		}
		r := bufio.NewReaderSize(strings.NewReader(in), 16)
		var want []string
		rest := in
		for {
			line, tail, ok := strings.Cut(rest, "\n")
			if !ok {
				break
			}
			rest = tail
			if len(line)+1 > max {
				want = append(want, "\x00too long")
				continue
			}
			want = append(want, strings.TrimSuffix(line, "\r"))
		}
		for i := 0; ; i++ {
			line, err := ReadLine(r, max)
			switch {
			case errors.Is(err, ErrLineTooLong):
				line = "\x00too long"
			case err != nil:
				if i != len(want) {
					t.Fatalf("%d lines, want %d", i, len(want))
				}
				return
			case strings.Contains(line, "\n") || len(line) >= max:
				t.Fatalf("line %q over limit %d", line, max)
			}
			if i >= len(want) || line != want[i] {
				t.Fatalf("line %d: %q, want %q", i, line, want)
			}
		}
	})
}
