package shield

import (
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/agua-mail/agua/internal/atomicfile"
)

// stateWriter writes one of the shield's JSON state files a record at a
// time, through an atomicfile.Writer (a MiB written and synced at a time,
// renamed into place at the end).
//
// The two big tables, known-good addresses and scores, are appended by
// hand (appendGood, appendRep) rather than by encoding/json: with 100,000
// of each, json.Marshal of the whole table built it twice in memory — 85 MB
// allocated and ~190 ms of CPU per file per save (BenchmarkFlushState100k,
// BenchmarkSaveReputation100k before this writer) — and the garbage
// collection that followed stalled every session in the second of the
// minutely save (issue 13: legitimate p99 162 ms there, 8–30 ms in every
// other second of a 70 s run). The appenders write the same format that
// encoding/json reads back (TestStateFilesDecode); the small tables (bans,
// offenders) still go through json.Marshal, a record at a time.
type stateWriter struct {
	w    *atomicfile.Writer
	b    []byte
	err  error
	what string // error prefix, e.g. "shield state"
}

// stateFlushAt is how much a stateWriter collects before it hands it to the
// file.
const stateFlushAt = 64 << 10

func newStateWriter(dir, name, what string) (*stateWriter, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	w, err := atomicfile.Create(filepath.Join(dir, name), 0o600)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return &stateWriter{w: w, b: make([]byte, 0, stateFlushAt+4<<10), what: what}, nil
}

// raw appends s as it is.
func (sw *stateWriter) raw(s string) { sw.b = append(sw.b, s...); sw.spill() }

// sep appends the comma before every element of an array but the first.
func (sw *stateWriter) sep(i int) {
	if i > 0 {
		sw.b = append(sw.b, ',')
	}
}

// value appends v as encoding/json writes it.
func (sw *stateWriter) value(v any) {
	data, err := json.Marshal(v)
	if err != nil {
		if sw.err == nil {
			sw.err = err
		}
		return
	}
	sw.b = append(sw.b, data...)
	sw.spill()
}

// spill hands what is collected to the file once it is big enough.
func (sw *stateWriter) spill() {
	if len(sw.b) < stateFlushAt {
		return
	}
	if _, err := sw.w.Write(sw.b); err != nil && sw.err == nil {
		sw.err = err
	}
	sw.b = sw.b[:0]
}

// commit writes the rest and puts the file in place; after an error the
// old file stays.
func (sw *stateWriter) commit() error {
	if sw.err == nil {
		_, sw.err = sw.w.Write(sw.b)
	}
	if sw.err != nil {
		sw.w.Abort()
		return fmt.Errorf("%s: %w", sw.what, sw.err)
	}
	if err := sw.w.Commit(); err != nil {
		return fmt.Errorf("%s: %w", sw.what, err)
	}
	return nil
}

// appendJSONTime appends t as encoding/json writes a time.Time (RFC 3339
// with nanoseconds, quoted).
func appendJSONTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

// appendJSONString appends s quoted as a JSON string (RFC 8259 §7: quote,
// backslash and control characters escaped; invalid UTF-8 replaced, as
// encoding/json does).
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+n]...)
		}
		i += n
	}
	return append(b, '"')
}

// appendGood appends a known-good record as persistedGood's JSON.
func appendGood(b []byte, a netip.Addr, until time.Time) []byte {
	b = append(b, `{"addr":"`...)
	b = a.AppendTo(b)
	b = append(b, `","until":`...)
	b = appendJSONTime(b, until)
	return append(b, '}')
}

// appendRep appends a score record as savedRecs' JSON. Parts that are not
// finite numbers (JSON has none) are left out.
func appendRep(b []byte, p netip.Prefix, at int64, parts []repPart) []byte {
	b = append(b, `{"prefix":"`...)
	b = p.AppendTo(b)
	b = append(b, `","at":`...)
	b = strconv.AppendInt(b, at, 10)
	b = append(b, `,"parts":{`...)
	n := 0
	for _, part := range parts {
		if math.IsNaN(part.v) || math.IsInf(part.v, 0) {
			continue
		}
		if n > 0 {
			b = append(b, ',')
		}
		n++
		b = appendJSONString(b, part.in.String())
		b = append(b, ':')
		b = strconv.AppendFloat(b, part.v, 'g', -1, 64)
	}
	return append(b, "}}"...)
}
