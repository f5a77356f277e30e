package maildir

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// fillFolder writes n messages of about 2 KiB straight into the cur/ folder
// of mailbox, named as Deliver names them: quicker than delivering.
func fillFolder(tb testing.TB, s *Store, mailbox string, n int) {
	tb.Helper()
	f, err := s.Folder(mailbox, "")
	if err != nil {
		tb.Fatal(err)
	}
	f.Close()
	body := []byte(benchBody)
	dir := filepath.Join(s.MaildirPath(mailbox), "cur")
	for i := range n {
		name := fmt.Sprintf("%d.M%dP1Q%d.bench,S=%d:2,S", 1700000000+i/100, i%100, i, len(body))
		if err := os.WriteFile(filepath.Join(dir, name), body, 0o600); err != nil {
			tb.Fatal(err)
		}
	}
}

const benchBody = "From: a@example.net\r\nSubject: bench\r\n\r\nhello\r\n"

// BenchmarkList10kCold measures what a POP3 login on a 10,000-message
// mailbox costs after a restart: read agua-uidlist, list new/ and cur/
// (names only, no stat), match.
func BenchmarkList10kCold(b *testing.B) {
	s := openTest(b)
	fillFolder(b, s, box, 10000)
	f := openFolder(b, s, box, "")
	if l := list(b, f); len(l.Messages) != 10000 {
		b.Fatalf("%d messages", len(l.Messages))
	}
	f.Close()
	b.ResetTimer()
	for b.Loop() {
		f, err := s.Folder(box, "")
		if err != nil {
			b.Fatal(err)
		}
		if l, err := f.List(); err != nil || len(l.Messages) != 10000 {
			b.Fatalf("%d messages, %v", len(l.Messages), err)
		}
		f.Close() // the last Folder closed drops the index
	}
}

// BenchmarkList10kWarm measures a listing of the same mailbox while the
// index is in memory and nothing changed (two stat calls).
func BenchmarkList10kWarm(b *testing.B) {
	s := openTest(b)
	fillFolder(b, s, box, 10000)
	f := openFolder(b, s, box, "")
	list(b, f)
	// Let the folders' times age past the racy window, as they do between
	// real sessions, so the index trusts them.
	f.ix.mu.Lock()
	for i := range f.ix.stamps {
		f.ix.stamps[i].ok = true
	}
	f.ix.mu.Unlock()
	b.ResetTimer()
	for b.Loop() {
		if l, err := f.List(); err != nil || len(l.Messages) != 10000 {
			b.Fatalf("%d messages, %v", len(l.Messages), err)
		}
	}
}

// BenchmarkList10kNewMail measures a listing after one new delivery: new/
// is listed again, cur/ is not, and the uidlist is rewritten (fsync).
func BenchmarkList10kNewMail(b *testing.B) {
	s := openTest(b)
	fillFolder(b, s, box, 10000)
	f := openFolder(b, s, box, "")
	list(b, f)
	msg := message(benchBody)
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		if err := s.Deliver(b.Context(), msg, []Recipient{rcpt(box, 1<<40)}); err != nil {
			b.Fatal(err)
		}
		f.ix.mu.Lock()
		f.ix.stamps[subCur].ok = true
		f.ix.mu.Unlock()
		b.StartTimer()
		if _, err := f.List(); err != nil {
			b.Fatal(err)
		}
	}
}
