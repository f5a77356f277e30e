package server

import (
	"testing"

	"github.com/agua-mail/agua/internal/smtptest"
)

// TestDialogs replays the SMTP dialogs in testdata/dialogs against the whole
// server: the mail rules end to end (delivery, unknown users, relay policy,
// postmaster, submission sender ownership). Dialogs of the protocol alone
// live in internal/smtpd/testdata/dialogs, run against an in-memory
// backend. Format: see smtptest.RunDir.
//
// The user alice@example.test (password "correct horse battery") exists.
func TestDialogs(t *testing.T) {
	ts := startServer(t, nil)
	smtptest.RunDir(t, "testdata/dialogs", func(t *testing.T, listener string) string {
		return ts.srv.Addr(listener)
	})
}
