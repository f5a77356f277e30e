package imapd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDialogs runs the raw dialogs of testdata/dialogs: "c: LINE" sends,
// "s: PREFIX" expects the next line to start with PREFIX, "s~ PREFIX"
// skips lines up to one that does, "deliver: SUBJECT" delivers a message,
// "closed" expects the server to close.
func TestDialogs(t *testing.T) {
	files, err := filepath.Glob("testdata/dialogs/*.dlg")
	if err != nil || len(files) == 0 {
		t.Fatalf("no dialogs: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".dlg"), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			ts := startTest(t, func(c *Config) { c.MaxErrors = 5 })
			runDialog(t, ts, string(data))
		})
	}
}

func runDialog(t *testing.T, ts *testServer, script string) {
	c := dial(t, ts.addr)
	c.expect("* OK [CAPABILITY IMAP4rev2 IMAP4rev1")
	for n, line := range strings.Split(script, "\n") {
		line = strings.TrimRight(line, "\r")
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "c: "):
			c.send(line[3:])
		case strings.HasPrefix(line, "s: "):
			c.expect(line[3:])
		case strings.HasPrefix(line, "s~ "):
			c.until(line[3:])
		case strings.HasPrefix(line, "deliver: "):
			ts.deliver(t, "Subject: "+line[9:]+"\r\nFrom: bob@example.net\r\n\r\nHello "+line[9:]+"\r\n")
		case line == "starttls":
			c.startTLS()
		case line == "closed":
			c.expectClosed()
		default:
			t.Fatalf("line %d: bad dialog step %q", n+1, line)
		}
	}
}
