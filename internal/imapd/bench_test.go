package imapd

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
)

// fillInbox writes n small messages straight into alice's new/ (as a
// delivery would leave them), without the cost of durable deliveries.
func fillInbox(b testing.TB, ts *testServer, n int) {
	b.Helper()
	dir := ts.store.MaildirPath(testUser)
	for _, sub := range []string{"tmp", "new", "cur"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			b.Fatal(err)
		}
	}
	for i := range n {
		msg := fmt.Sprintf("Subject: message %d\r\nFrom: bob@example.net\r\n\r\nbody %d\r\n", i, i)
		name := fmt.Sprintf("%d.M%dP1Q%d.test,S=%d", 1700000000+i, i, i, len(msg))
		if err := os.WriteFile(filepath.Join(dir, "new", name), []byte(msg), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	// As if delivered a while ago: listings are then trusted by time.
	old := time.Now().Add(-time.Hour)
	for _, sub := range []string{"new", "cur"} {
		if err := os.Chtimes(filepath.Join(dir, sub), old, old); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSelectFetch10k: SELECT a 10,000-message INBOX and FETCH the
// UID, FLAGS and size of every message, as a client's first sync does.
func BenchmarkSelectFetch10k(b *testing.B) {
	ts := startTest(b, nil)
	fillInbox(b, ts, 10000)
	c := ts.login(b)
	for b.Loop() {
		if _, err := c.Select("INBOX", nil).Wait(); err != nil {
			b.Fatal(err)
		}
		msgs, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Flags: true, RFC822Size: true}).Collect()
		if err != nil || len(msgs) != 10000 {
			b.Fatalf("%d messages, %v", len(msgs), err)
		}
	}
}

// BenchmarkFetchEnvelope: ENVELOPE of 100 messages (headers parsed).
func BenchmarkFetchEnvelope100(b *testing.B) {
	ts := startTest(b, nil)
	fillInbox(b, ts, 100)
	c := ts.login(b)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		msgs, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{Envelope: true}).Collect()
		if err != nil || len(msgs) != 100 {
			b.Fatalf("%d messages, %v", len(msgs), err)
		}
	}
}

// BenchmarkIdlePoll: one IDLE poll of an unchanged 10,000-message folder
// (what every idling session costs per IdlePoll).
func BenchmarkIdlePoll10k(b *testing.B) {
	ts := startTest(b, nil)
	fillInbox(b, ts, 10000)
	f, err := ts.store.MailStore().Folder(context.Background(), testUser, "")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	l, err := f.List()
	if err != nil {
		b.Fatal(err)
	}
	stamp, settled, err := f.Stamp()
	if err != nil || !settled {
		b.Fatalf("stamp: settled %v, %v", settled, err)
	}
	sel := &selected{f: f, validity: l.UIDValidity, flags: map[uint32]string{}, sizes: map[uint32]int64{}, stamp: stamp, settled: settled}
	for _, m := range l.Messages {
		sel.uids = append(sel.uids, m.UID)
		sel.flags[m.UID] = m.Flags
	}
	s := &session{srv: ts.srv, user: testUser, sel: sel}
	for b.Loop() {
		if err := s.Poll(nil, true); err != nil {
			b.Fatal(err)
		}
	}
}
