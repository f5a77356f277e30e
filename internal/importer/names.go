package importer

import (
	"encoding/base64"
	"errors"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// Special-use folders (RFC 6154) are imported into agua's folders of the
// same use, which imapd marks with the attribute: a source's "Sent
// Messages" marked \Sent becomes "Sent".
var specialUseTarget = map[string]string{
	`\sent`:    "Sent",
	`\drafts`:  "Drafts",
	`\trash`:   "Trash",
	`\junk`:    "Junk",
	`\archive`: "Archive",
}

// skippedUse are the RFC 6154 uses of virtual folders that hold copies of
// messages stored elsewhere (Gmail's "All Mail", "Starred"): importing
// them would duplicate every message.
var skippedUse = map[string]bool{`\all`: true, `\flagged`: true}

// wellKnown maps the top-level names other servers and clients give their
// special folders when the server does not mark them (no SPECIAL-USE, or a
// Maildir on disk), compared case-insensitively.
var wellKnown = map[string]string{
	"sent": "Sent", "sent items": "Sent", "sent messages": "Sent", "sent mail": "Sent",
	"drafts": "Drafts", "draft": "Drafts",
	"trash": "Trash", "deleted items": "Trash", "deleted messages": "Trash", "bin": "Trash",
	"junk": "Junk", "spam": "Junk", "junk e-mail": "Junk", "junk email": "Junk", "bulk mail": "Junk",
	"archive": "Archive", "archives": "Archive",
}

// targetName maps a source folder, given as its levels (already decoded to
// UTF-8) and its RFC 6154 attributes, to an agua folder name ("" is
// INBOX). skip is true for virtual folders. Levels below INBOX move up
// one level (Courier's and Dovecot's "INBOX." namespace: INBOX.Sent is
// Sent); in a level, characters agua's names cannot hold ("." between
// levels, "/", "\", controls, "*", "%", invalid UTF-8) become "_"; a
// name is cut to maxName bytes.
func targetName(levels []string, attrs []string) (name string, skip bool) {
	for _, a := range attrs {
		a = strings.ToLower(a)
		if skippedUse[a] {
			return "", true
		}
		if t, ok := specialUseTarget[a]; ok {
			return t, false
		}
	}
	if len(levels) > 0 && strings.EqualFold(levels[0], "INBOX") {
		levels = levels[1:]
		if len(levels) == 0 {
			return "", false
		}
	}
	if len(levels) == 1 && attrs == nil {
		if t, ok := wellKnown[strings.ToLower(strings.TrimSpace(levels[0]))]; ok {
			return t, false
		}
	}
	out := make([]string, len(levels))
	for i, l := range levels {
		l = strings.ToValidUTF8(l, "_")
		l = strings.Map(func(r rune) rune {
			if r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 || strings.ContainsRune(`./\*%`, r) {
				return '_'
			}
			return r
		}, l)
		if strings.TrimSpace(l) == "" {
			l = "_"
		}
		if i == 0 && strings.EqualFold(l, "INBOX") {
			l = "INBOX_"
		}
		out[i] = l
	}
	name = strings.Join(out, ".")
	if len(name) > maxName {
		// Cut on a character boundary; no empty last level.
		cut := maxName
		for cut > 0 && !utf8.RuneStart(name[cut]) {
			cut--
		}
		name = strings.TrimRight(name[:cut], ". ")
	}
	return name, false
}

// maxName is the longest folder name imported, in bytes: what agua's IMAP
// server accepts from a client (imapd's maxNameLength).
const maxName = 200

// errUTF7 is a malformed modified UTF-7 name.
var errUTF7 = errors.New("invalid modified UTF-7")

// decodeMUTF7 decodes a mailbox name in IMAP's modified UTF-7 (RFC 3501
// 5.1.3), the form Dovecot and Courier give Maildir++ folder names on disk.
func decodeMUTF7(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x80 {
			return "", errUTF7
		}
		if c != '&' {
			b.WriteByte(c)
			continue
		}
		end := strings.IndexByte(s[i+1:], '-')
		if end < 0 {
			return "", errUTF7
		}
		enc := s[i+1 : i+1+end]
		i += end + 1
		if enc == "" {
			b.WriteByte('&')
			continue
		}
		raw, err := base64.RawStdEncoding.DecodeString(strings.ReplaceAll(enc, ",", "/"))
		if err != nil || len(raw)%2 != 0 {
			return "", errUTF7
		}
		units := make([]uint16, len(raw)/2)
		for j := range units {
			units[j] = uint16(raw[2*j])<<8 | uint16(raw[2*j+1])
		}
		for _, r := range utf16.Decode(units) {
			if r == utf8.RuneError {
				return "", errUTF7
			}
			b.WriteRune(r)
		}
	}
	return b.String(), nil
}
