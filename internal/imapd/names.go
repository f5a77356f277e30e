package imapd

import (
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-imap/v2"
)

// delim is the hierarchy delimiter: the Maildir++ one, so an IMAP name is
// the folder's name on disk after its leading dot.
const delim = '.'

// maxNameLength bounds a mailbox name in bytes (a file name is at most 255
// bytes, and the folder's is the name plus a leading dot).
const maxNameLength = 200

// maxFolders bounds the folders of one user (CREATE answers NO [LIMIT]).
const maxFolders = 1000

// folderName checks a mailbox name from a client (already decoded from
// modified UTF-7 by the engine) and returns the folder name: "" for INBOX
// (any case, RFC 3501 5.1). Names that could leave the user's Maildir or
// clash with its layout are refused: empty levels ("..", a leading or
// trailing "."), "/" and "\", control characters, wildcards, invalid UTF-8,
// and levels below INBOX (INBOX is the Maildir itself and has no children
// in Maildir++).
func folderName(name string) (string, bool) {
	if strings.EqualFold(name, "INBOX") {
		return "", true
	}
	if name == "" || len(name) > maxNameLength || !utf8.ValidString(name) {
		return "", false
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || r == '/' || r == '\\' || r == '*' || r == '%' {
			return "", false
		}
		if r >= 0x80 && r < 0xa0 { // C1 controls
			return "", false
		}
	}
	first, _, _ := strings.Cut(name, string(delim))
	if strings.EqualFold(first, "INBOX") {
		return "", false
	}
	for _, level := range strings.Split(name, string(delim)) {
		if level == "" || strings.TrimSpace(level) == "" {
			return "", false
		}
	}
	return name, true
}

// specialUse maps the default folder names to their RFC 6154 attribute.
var specialUse = map[string]imap.MailboxAttr{
	"Sent":    imap.MailboxAttrSent,
	"Drafts":  imap.MailboxAttrDrafts,
	"Trash":   imap.MailboxAttrTrash,
	"Junk":    imap.MailboxAttrJunk,
	"Archive": imap.MailboxAttrArchive,
}

// imapFlags maps Maildir info flags to IMAP system flags (RFC 3501 2.3.2);
// lower-case Maildir keyword letters are not shown.
var imapFlags = []struct {
	c    byte
	flag imap.Flag
}{
	{'D', imap.FlagDraft},
	{'F', imap.FlagFlagged},
	{'R', imap.FlagAnswered},
	{'S', imap.FlagSeen},
	{'T', imap.FlagDeleted},
}

// systemFlags are the flags agua keeps (FLAGS and PERMANENTFLAGS).
var systemFlags = []imap.Flag{imap.FlagSeen, imap.FlagAnswered, imap.FlagFlagged, imap.FlagDeleted, imap.FlagDraft}

// managedLetters are the Maildir letters systemFlags map to.
const managedLetters = "DFRST"

func toIMAPFlags(info string) []imap.Flag {
	flags := make([]imap.Flag, 0, len(info))
	for _, f := range imapFlags {
		if strings.IndexByte(info, f.c) >= 0 {
			flags = append(flags, f.flag)
		}
	}
	return flags
}

// toLetters maps IMAP flags to Maildir letters; keywords and \Recent are
// dropped (not kept, as PERMANENTFLAGS says).
func toLetters(flags []imap.Flag) string {
	var b []byte
	for _, fl := range flags {
		for _, f := range imapFlags {
			if strings.EqualFold(string(fl), string(f.flag)) {
				b = append(b, f.c)
			}
		}
	}
	return string(b)
}
