package importer

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
)

// maxMessageSize bounds one message read from a Maildir into memory.
const maxMessageSize = 1 << 30

// MaildirSource reads a Maildir++ tree on disk (Dovecot's and Courier's
// layout, https://cr.yp.to/proto/maildir.html): the Maildir itself is
// INBOX, and each subfolder ".A.B" (names in modified UTF-7, levels
// separated by ".") is folder A/B. Flags come from the ":2,<flags>" info
// of each file name; the lower-case letters are keywords, named by the
// folder's dovecot-keywords file when there is one. Files are read, never
// changed; line endings become CRLF as IMAP serves them.
type MaildirSource struct {
	root    string
	folders map[string]string // folder name -> directory
}

// OpenMaildir checks that dir is a Maildir (it has cur/).
func OpenMaildir(dir string) (*MaildirSource, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if st, err := os.Stat(filepath.Join(abs, "cur")); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("import: %s is not a Maildir (no cur/ folder)", dir)
	}
	return &MaildirSource{root: abs}, nil
}

// ID is maildir:<absolute path>.
func (s *MaildirSource) ID() string { return "maildir:" + s.root }

// Close does nothing.
func (s *MaildirSource) Close() error { return nil }

// Folders lists INBOX and every ".Name" subfolder that has cur/.
func (s *MaildirSource) Folders(context.Context) ([]Folder, error) {
	entries, err := os.ReadDir(s.root)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	s.folders = map[string]string{"INBOX": s.root}
	out := []Folder{{Name: "INBOX", Target: ""}}
	for _, e := range entries {
		n := e.Name()
		if !strings.HasPrefix(n, ".") || n == "." || n == ".." || strings.HasPrefix(n, "..") {
			continue
		}
		dir := filepath.Join(s.root, n)
		if st, err := os.Stat(filepath.Join(dir, "cur")); err != nil || !st.IsDir() {
			continue
		}
		name, err := decodeMUTF7(n[1:])
		if err != nil {
			name = n[1:] // not modified UTF-7: take it as it is
		}
		levels := strings.Split(name, ".")
		target, _ := targetName(levels, nil)
		display := strings.Join(levels, "/")
		s.folders[display] = dir
		out = append(out, Folder{Name: display, Target: target})
	}
	sortFolders(out)
	return out, nil
}

// Messages lists cur/ and new/. Each file is read once here for its
// Message-ID and its size with CRLF line endings.
func (s *MaildirSource) Messages(_ context.Context, f Folder) (uint32, []Message, error) {
	dir, ok := s.folders[f.Name]
	if !ok {
		return 0, nil, fmt.Errorf("import: no folder %q", f.Name)
	}
	keywords := readKeywords(filepath.Join(dir, "dovecot-keywords"))
	var msgs []Message
	seen := map[string]bool{}
	for _, sub := range []string{"cur", "new"} { // a file caught mid-move: cur/ wins
		entries, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			return 0, nil, fmt.Errorf("import: %w", err)
		}
		for _, e := range entries {
			name := e.Name()
			if e.IsDir() || strings.HasPrefix(name, ".") {
				continue
			}
			key, info, _ := strings.Cut(name, ":")
			if seen[key] {
				continue
			}
			seen[key] = true
			m := Message{Key: key}
			if flags, ok := strings.CutPrefix(info, "2,"); ok {
				m.Flags, m.Deleted, m.Keywords = fromMaildirFlags(flags, keywords)
			}
			path := filepath.Join(dir, sub, name)
			st, err := os.Stat(path)
			if errors.Is(err, os.ErrNotExist) {
				continue // moved or removed since the listing
			}
			if err != nil {
				return 0, nil, fmt.Errorf("import: %w", err)
			}
			m.Date = st.ModTime()
			data, err := readCRLF(path)
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				return 0, nil, err
			}
			m.Size = int64(len(data))
			m.MessageID = messageID(bytes.NewReader(data))
			msgs = append(msgs, m)
		}
	}
	slices.SortFunc(msgs, func(a, b Message) int { return naturalCompare(a.Key, b.Key) })
	return 0, msgs, nil
}

// Fetch reads each file again, with CRLF line endings.
func (s *MaildirSource) Fetch(ctx context.Context, f Folder, msgs []Message, fn func(Message, io.Reader, int64) error) error {
	dir := s.folders[f.Name]
	for _, m := range msgs {
		if err := ctx.Err(); err != nil {
			return err
		}
		path, err := findKey(dir, m.Key)
		if err != nil {
			return err
		}
		data, err := readCRLF(path)
		if err != nil {
			return err
		}
		if err := fn(m, bytes.NewReader(data), int64(len(data))); err != nil {
			return err
		}
	}
	return nil
}

// findKey finds the current file of key (its flags may have changed).
func findKey(dir, key string) (string, error) {
	for _, sub := range []string{"cur", "new"} {
		if _, err := os.Stat(filepath.Join(dir, sub, key)); err == nil {
			return filepath.Join(dir, sub, key), nil
		}
		matches, _ := filepath.Glob(filepath.Join(dir, sub, globEscape(key)+":*"))
		if len(matches) > 0 {
			return matches[0], nil
		}
	}
	return "", fmt.Errorf("import: message %s vanished from %s", key, dir)
}

func globEscape(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `*`, `\*`, `?`, `\?`, `[`, `\[`)
	return r.Replace(s)
}

// readCRLF reads a message file and turns bare LF line endings into CRLF.
func readCRLF(path string) ([]byte, error) {
	fd, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fd.Close()
	data, err := io.ReadAll(io.LimitReader(fd, maxMessageSize+1))
	if err != nil {
		return nil, fmt.Errorf("import: reading %s: %w", path, err)
	}
	if len(data) > maxMessageSize {
		return nil, fmt.Errorf("import: %s is larger than %d bytes", path, maxMessageSize)
	}
	bare := bytes.Count(data, []byte("\n")) - bytes.Count(data, []byte("\r\n"))
	if bare == 0 {
		return data, nil
	}
	out := make([]byte, 0, len(data)+bare)
	for i, c := range data {
		if c == '\n' && (i == 0 || data[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out, nil
}

// fromMaildirFlags maps Maildir info letters: D F P R S are kept, T
// (trashed) is \Deleted, lower-case letters are keywords (index 0 is "a"
// in dovecot-keywords), which agua does not keep, except Dovecot's
// $Forwarded, kept as P.
func fromMaildirFlags(info string, keywords map[byte]string) (letters string, deleted bool, dropped []string) {
	var b []byte
	for i := 0; i < len(info); i++ {
		c := info[i]
		switch {
		case strings.IndexByte("DFPRS", c) >= 0:
			b = append(b, c)
		case c == 'T':
			deleted = true
		case c >= 'a' && c <= 'z':
			if k, ok := keywords[c]; ok && strings.EqualFold(k, "$Forwarded") {
				b = append(b, 'P') // as an IMAP source's $Forwarded
			} else if ok {
				dropped = append(dropped, k)
			} else {
				dropped = append(dropped, "keyword "+string(c))
			}
		}
	}
	slices.Sort(b)
	return string(slices.Compact(b)), deleted, dropped
}

// readKeywords reads Dovecot's dovecot-keywords ("<index> <name>" per
// line); a missing or odd file gives what could be read.
func readKeywords(path string) map[byte]string {
	out := map[byte]string{}
	data, err := os.ReadFile(path)
	if err != nil {
		return out
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		num, name, ok := strings.Cut(strings.TrimSpace(line), " ")
		i, err := strconv.Atoi(num)
		if !ok || err != nil || i < 0 || i >= 26 || name == "" {
			continue
		}
		out[byte('a'+i)] = name
	}
	return out
}

// messageID reads a message's header (or just its Message-ID field) and
// returns the Message-ID without angle brackets, "" if there is none or it
// does not parse: source and target copies go through this one parser.
func messageID(r io.Reader) string {
	h, err := textproto.ReadHeader(bufio.NewReader(io.LimitReader(r, 256<<10)))
	if err != nil {
		return ""
	}
	mh := mail.Header{Header: message.Header{Header: h}}
	id, _ := mh.MessageID()
	return id
}

// naturalCompare orders names with runs of digits compared as numbers
// (Maildir names start with the delivery time).
func naturalCompare(a, b string) int {
	for a != "" && b != "" {
		da, ra := digits(a)
		db, rb := digits(b)
		if da != "" && db != "" {
			if c := len(strings.TrimLeft(da, "0")) - len(strings.TrimLeft(db, "0")); c != 0 {
				return c
			}
			if c := strings.Compare(strings.TrimLeft(da, "0"), strings.TrimLeft(db, "0")); c != 0 {
				return c
			}
			a, b = ra, rb
			continue
		}
		if a[0] != b[0] {
			return int(a[0]) - int(b[0])
		}
		a, b = a[1:], b[1:]
	}
	return len(a) - len(b)
}

func digits(s string) (string, string) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return s[:i], s[i:]
}
