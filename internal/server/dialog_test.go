package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDialogs replays the protocol dialogs in testdata/dialogs, one file per
// case, so a new abuse or edge case is one small file (chasquid's .cmy
// style). Format, one step per line:
//
//	# listener: submission      which listener to dial (default smtp)
//	c: EHLO x                   send a line (CRLF added)
//	raw: text\r\n               send bytes; \r \n \t \\ \xHH are unescaped
//	s: 250 2.1.0                read a reply whose last line starts with this
//	s: 250 | SIZE | AUTH PLAIN  ... and which contains each of these
//	closed                      the server has closed the connection
//
// The user alice@example.test (password "correct horse battery") exists.
func TestDialogs(t *testing.T) {
	files, err := filepath.Glob("testdata/dialogs/*.dlg")
	if err != nil || len(files) == 0 {
		t.Fatalf("no dialogs: %v", err)
	}
	ts := startServer(t, nil)
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".dlg"), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			runDialog(t, ts, string(data))
		})
	}
}

func runDialog(t *testing.T, ts *testServer, script string) {
	listener := "smtp"
	for _, line := range strings.Split(script, "\n") {
		if v, ok := strings.CutPrefix(line, "# listener:"); ok {
			listener = strings.TrimSpace(v)
		}
	}
	c := dial(t, ts.srv.Addr(listener))
	c.expect("220 ")
	runCase(t, c, script)
}
