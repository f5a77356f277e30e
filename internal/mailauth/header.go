package mailauth

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"mime"
	"net/mail"
	"strings"
)

// MaxHeader bounds the header section read for DMARC and for removing
// forged Authentication-Results fields. RFC 5322 sets no limit, but a
// field past the bound could be neither judged nor removed, so Finish
// refuses such a message (ErrHeaderTooLong); no real message comes close.
const MaxHeader = 1 << 20

// ErrHeaderTooLong: the message's header section exceeds MaxHeader.
var ErrHeaderTooLong = errors.New("mailauth: header section too long")

// field is one header field: its name and unfolded value, and where its
// bytes (folded lines included) start and end in the message.
type field struct {
	name       string
	value      string
	start, end int64
}

// readHeader reads the header section of msg (RFC 5322 2.2): every field
// with its offsets, up to the empty line or the end of the message.
func readHeader(msg io.ReaderAt, size int64) ([]field, error) {
	br := bufio.NewReaderSize(io.NewSectionReader(msg, 0, min(size, MaxHeader+1)), 4096)
	var fields []field
	var off int64
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A line longer than the buffer: keep reading it whole.
			rest := append([]byte(nil), line...)
			for err == bufio.ErrBufferFull {
				line, err = br.ReadSlice('\n')
				rest = append(rest, line...)
			}
			line = rest
		}
		if len(line) == 0 && err != nil {
			break // end of message without a body
		}
		start := off
		off += int64(len(line))
		if off > MaxHeader {
			return nil, ErrHeaderTooLong
		}
		trimmed := bytes.TrimRight(line, "\r\n")
		if len(trimmed) == 0 {
			break // the empty line ending the header section
		}
		if (trimmed[0] == ' ' || trimmed[0] == '\t') && len(fields) > 0 {
			// RFC 5322 2.2.3: a folded continuation line.
			f := &fields[len(fields)-1]
			f.value += string(trimmed)
			f.end = off
		} else if name, value, ok := bytes.Cut(trimmed, []byte(":")); ok {
			fields = append(fields, field{
				name:  string(bytes.TrimRight(name, " \t")),
				value: string(value),
				start: start, end: off,
			})
		}
		if err != nil {
			break
		}
	}
	return fields, nil
}

// fromDomains returns the domains of the author addresses in the From
// fields (RFC 7489 3.1: the RFC5322.From domain is what DMARC protects),
// lower-case and each once. A From field the address parser refuses (an
// unknown charset in the display name, sloppy syntax a mail reader still
// shows) still yields the domain of its last "@", so unusual syntax is no
// way around the policy.
func fromDomains(fields []field) (domains []string, nFrom int) {
	seen := map[string]bool{}
	add := func(addr string) {
		_, d, ok := cutLast(addr, "@")
		d = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), "."))
		if ok && d != "" && !seen[d] {
			seen[d] = true
			domains = append(domains, d)
		}
	}
	p := mail.AddressParser{WordDecoder: &mime.WordDecoder{CharsetReader: func(_ string, r io.Reader) (io.Reader, error) {
		return r, nil // the display name does not matter here
	}}}
	for _, f := range fields {
		if !strings.EqualFold(f.name, "From") {
			continue
		}
		nFrom++
		list, err := p.ParseList(f.value)
		if err != nil || len(list) == 0 {
			v := f.value
			if i := strings.LastIndexByte(v, '<'); i >= 0 {
				v = v[i+1:]
			}
			v, _, _ = strings.Cut(v, ">")
			add(v)
			continue
		}
		for _, a := range list {
			add(a.Address)
		}
	}
	return domains, nFrom
}

func cutLast(s, sep string) (before, after string, found bool) {
	if i := strings.LastIndex(s, sep); i >= 0 {
		return s[:i], s[i+len(sep):], true
	}
	return s, "", false
}

// authservID returns the authserv-id of an Authentication-Results value
// (RFC 8601 2.2: the first token, before any version and the first ';'),
// with comments removed.
func authservID(value string) string {
	v, _, _ := strings.Cut(stripComments(value), ";")
	id, _, _ := strings.Cut(strings.TrimSpace(v), " ")
	id, _, _ = strings.Cut(id, "\t")
	return strings.Trim(id, "\"")
}

// stripComments removes RFC 5322 3.2.2 comments (nested parentheses,
// quoted pairs) from s.
func stripComments(s string) string {
	var b strings.Builder
	depth := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && depth > 0:
			i++
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case depth == 0:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// forged returns the Authentication-Results fields that claim to come from
// authserv-id id: RFC 8601 5 has a border MTA remove them, since only this
// server may speak for its own id and a sender could add one saying
// "dmarc=pass".
func forged(fields []field, id string) []field {
	var out []field
	for _, f := range fields {
		if strings.EqualFold(f.name, "Authentication-Results") && strings.EqualFold(authservID(f.value), id) {
			out = append(out, f)
		}
	}
	return out
}

// splice is a message rewritten without copying it: a new header field in
// front, and some byte ranges of the original left out.
type splice struct {
	parts []part
	size  int64
}

type part struct {
	off  int64 // where this part starts in the spliced message
	data []byte
	src  io.ReaderAt // or a section of the original
	at   int64
	n    int64
}

// newSplice returns prefix followed by msg without the ranges of drop
// (sorted, not overlapping).
func newSplice(prefix []byte, msg io.ReaderAt, size int64, drop []field) *splice {
	s := &splice{}
	s.add(part{data: prefix, n: int64(len(prefix))})
	var pos int64
	for _, d := range drop {
		if d.start > pos {
			s.add(part{src: msg, at: pos, n: d.start - pos})
		}
		pos = d.end
	}
	if size > pos {
		s.add(part{src: msg, at: pos, n: size - pos})
	}
	return s
}

func (s *splice) add(p part) {
	if p.n == 0 {
		return
	}
	p.off = s.size
	s.parts = append(s.parts, p)
	s.size += p.n
}

// Size is the spliced message's length.
func (s *splice) Size() int64 { return s.size }

// ReadAt implements io.ReaderAt.
func (s *splice) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("mailauth: negative offset")
	}
	n := 0
	for _, pt := range s.parts {
		if len(p) == 0 {
			break
		}
		if off >= pt.off+pt.n { // parts are contiguous: off is never before one
			continue
		}
		in := off - pt.off // offset inside the part
		want := min(int64(len(p)), pt.n-in)
		var m int
		var err error
		if pt.src == nil {
			m = copy(p[:want], pt.data[in:])
		} else {
			m, err = pt.src.ReadAt(p[:want], pt.at+in)
			if err == io.EOF && int64(m) == want {
				err = nil
			}
		}
		n += m
		p = p[m:]
		off += int64(m)
		if err != nil {
			return n, err
		}
	}
	if len(p) > 0 {
		return n, io.EOF
	}
	return n, nil
}
