package imapd

import "testing"

// The framer's reading of a line agrees with the engine's grammar: a
// literal is "{n}" or "{n+}" at the very end, before CRLF, a lone LF, or
// a space and either (imapwire.Decoder.CRLF).
func TestAnnounced(t *testing.T) {
	for _, c := range []struct {
		line    string
		n       int64
		nonSync bool
		ok      bool
	}{
		{"a LOGIN {5}\r\n", 5, false, true},
		{"a LOGIN {5+}\r\n", 5, true, true},
		{"a LOGIN {5}\n", 5, false, true},
		{"a LOGIN {5} \r\n", 5, false, true},
		{"a APPEND INBOX {0}\r\n", 0, false, true},
		{"a LOGIN {05}\r\n", 5, false, true},
		{"a LOGIN {}\r\n", 0, false, false},
		{"a LOGIN {+}\r\n", 0, false, false},
		{"a LOGIN {+5}\r\n", 0, false, false},
		{"a LOGIN {-5}\r\n", 0, false, false},
		{"a LOGIN {5}x\r\n", 0, false, false},
		{"a LOGIN {99999999999999999999}\r\n", 0, false, false},
		{"a NOOP\r\n", 0, false, false},
	} {
		n, nonSync, ok := announced([]byte(c.line))
		if n != c.n || nonSync != c.nonSync || ok != c.ok {
			t.Errorf("announced(%q) = %d, %v, %v", c.line, n, nonSync, ok)
		}
	}
}

func TestLineChecks(t *testing.T) {
	for line, want := range map[string]bool{
		`a LOGIN "x y" z` + "\r\n":   false,
		`a LOGIN "x \"y" z` + "\r\n": false,
		`a LOGIN "x {5}` + "\r\n":    true,
		`a LOGIN "x\\" {5}` + "\r\n": false,
		`a SELECT "a\"` + "\r\n":     true,
	} {
		if got := openQuote([]byte(line)); got != want {
			t.Errorf("openQuote(%q) = %v", line, got)
		}
	}
	for line, want := range map[string][2]string{
		"a1 noop\r\n":          {"a1", "NOOP"},
		"a1 uid fetch 1\r\n":   {"a1", "UID FETCH"},
		"\x00x NOOP\r\n":       {"*", "NOOP"},
		"a1\r\n":               {"a1", ""},
		"+ APPEND x {1}\r\n":   {"*", "APPEND"},
		"a{1} APPEND x\r\n":    {"*", "APPEND"},
		"a1 APPEND {10}\r\n":   {"a1", "APPEND"},
		"a1 STARTTLS \r\n":     {"a1", "STARTTLS"},
		"a1 STARTTLS x\r\n":    {"a1", "STARTTLS"},
		"a1 LOGIN \"a b\"\r\n": {"a1", "LOGIN"},
	} {
		if tag, name := commandName([]byte(line)); tag != want[0] || name != want[1] {
			t.Errorf("commandName(%q) = %q, %q", line, tag, name)
		}
	}
	if !isAppendMailbox([]byte("a APPEND {10}\r\n")) || isAppendMailbox([]byte("a APPEND INBOX {10}\r\n")) {
		t.Error("isAppendMailbox")
	}
	if !bareCommand([]byte("a STARTTLS \r\n")) || bareCommand([]byte("a STARTTLS x\r\n")) {
		t.Error("bareCommand")
	}
}
