package maildir

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func openTest(t testing.TB) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "mail"), Options{Hostname: "mx/1:test", FsyncEach: testFsyncEach})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	<-s.warmed // nothing to list: no test races the warm-up for s.now
	return s
}

// testFsyncEach selects the durability mode for openTest; the tests run in
// both modes.
var testFsyncEach bool

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if code != 0 || flag.Lookup("test.bench").Value.String() != "" {
		os.Exit(code) // benchmarks choose their mode themselves
	}
	testFsyncEach = true
	os.Exit(m.Run())
}

func message(body string) Message {
	return Message{R: strings.NewReader(body), Size: int64(len(body))}
}

func rcpt(mailbox string, quota int64) Recipient {
	return Recipient{Mailbox: mailbox, Quota: quota, Prefix: []byte("Delivered-To: " + mailbox + "\r\n")}
}

// files returns the names and contents of the files in mailbox's sub folder.
func files(t *testing.T, s *Store, mailbox, sub string) map[string]string {
	t.Helper()
	dir := filepath.Join(s.MaildirPath(mailbox), sub)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = string(b)
	}
	return out
}

const body = "Subject: hi\r\n\r\nHello\r\n"

func TestDeliver(t *testing.T) {
	s := openTest(t)
	err := s.Deliver(context.Background(), message(body), []Recipient{rcpt("alice@example.org", 1<<20)})
	if err != nil {
		t.Fatal(err)
	}
	dir := s.MaildirPath("alice@example.org")
	if want := filepath.Join(s.root, "example.org", "alice"); dir != want {
		t.Errorf("MaildirPath = %s, want %s", dir, want)
	}
	for _, sub := range []string{"tmp", "new", "cur"} {
		if info, err := os.Stat(filepath.Join(dir, sub)); err != nil || !info.IsDir() {
			t.Errorf("%s/: %v", sub, err)
		}
	}
	got := files(t, s, "alice@example.org", "new")
	if len(got) != 1 {
		t.Fatalf("new/ holds %d files", len(got))
	}
	want := "Delivered-To: alice@example.org\r\n" + body
	for name, content := range got {
		if content != want {
			t.Errorf("content = %q, want %q", content, want)
		}
		if size, ok := sizeFromName(name); !ok || size != int64(len(want)) {
			t.Errorf("name %q lacks ,S=%d", name, len(want))
		}
		if _, sum, ok := sealedName(name); !testFsyncEach && (!ok || sum != crc32.Checksum([]byte(want), castagnoli)) {
			t.Errorf("name %q lacks ,C= with the content's CRC-32C", name)
		}
		if !strings.Contains(name, `.mx\0571\072test,`) {
			t.Errorf("name %q lacks the escaped host name", name)
		}
		if !strings.Contains(name, ".M") || !strings.Contains(name, "P") || !strings.Contains(name, "Q") {
			t.Errorf("name %q is not <secs>.M<usec>P<pid>Q<n>.<host>", name)
		}
	}
	if n := len(files(t, s, "alice@example.org", "tmp")); n != 0 {
		t.Errorf("tmp/ holds %d files", n)
	}
	bytes, count, err := s.Usage("alice@example.org")
	if err != nil || bytes != int64(len(want)) || count != 1 {
		t.Errorf("Usage = %d, %d, %v", bytes, count, err)
	}
}

func TestMaildirPathEscapes(t *testing.T) {
	s := openTest(t)
	for _, m := range []string{"../x@example.org", "a/b@example.org", "a@..", "..@example.org", "a@ex/ample"} {
		p := s.MaildirPath(m)
		rel, err := filepath.Rel(s.root, p)
		if err != nil || strings.HasPrefix(rel, "..") || strings.Count(rel, string(filepath.Separator)) != 1 {
			t.Errorf("MaildirPath(%q) = %q escapes or nests", m, p)
		}
	}
}

func TestConcurrentDeliveriesOneMailbox(t *testing.T) {
	s := openTest(t)
	const n = 60
	size := int64(len("Delivered-To: a@example.org\r\n") + len(body))
	quota := size * 40 // room for 40 of the 60
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, full := 0, 0
	delivered := map[int]bool{}
	for i := range n {
		wg.Go(func() {
			msg := message(fmt.Sprintf("Subject: %02d\r\n\r\nHello\r\n", i))
			err := s.Deliver(context.Background(), msg, []Recipient{rcpt("a@example.org", quota)})
			mu.Lock()
			defer mu.Unlock()
			var qe *QuotaError
			switch {
			case err == nil:
				ok++
				delivered[i] = true
			case errors.As(err, &qe) && !qe.Permanent:
				full++
			default:
				t.Errorf("delivery %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if ok != 40 || full != 20 {
		t.Errorf("%d delivered, %d full; want 40 and 20", ok, full)
	}
	got := files(t, s, "a@example.org", "new")
	if len(got) != 40 {
		t.Errorf("new/ holds %d files, want 40", len(got))
	}
	seen := map[string]int{}
	for _, content := range got {
		seen[content]++
	}
	for i := range delivered {
		content := fmt.Sprintf("Delivered-To: a@example.org\r\nSubject: %02d\r\n\r\nHello\r\n", i)
		if seen[content] != 1 {
			t.Errorf("delivery %d is in new/ %d times", i, seen[content])
		}
	}
	if n := len(files(t, s, "a@example.org", "tmp")); n != 0 {
		t.Errorf("tmp/ holds %d files", n)
	}
	s.Forget("a@example.org")
	bytes, count, err := s.Usage("a@example.org")
	if err != nil || bytes != 40*size || count != 40 {
		t.Errorf("Usage after rescan = %d, %d, %v", bytes, count, err)
	}
}

func TestQuota(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	a, b := rcpt("a@example.org", 1000), rcpt("b@example.org", 100)
	size := int64(len(b.Prefix) + len(body))
	b.Quota = size + 10

	// b has room for exactly one message.
	if err := s.Deliver(ctx, message(body), []Recipient{b}); err != nil {
		t.Fatal(err)
	}
	// Now b is full: temporary, and a gets nothing either.
	err := s.Deliver(ctx, message(body), []Recipient{a, b})
	var qe *QuotaError
	if !errors.As(err, &qe) || qe.Permanent || qe.Mailbox != "b@example.org" {
		t.Fatalf("full mailbox: %v", err)
	}
	if n := len(files(t, s, "a@example.org", "new")) + len(files(t, s, "a@example.org", "tmp")); n != 0 {
		t.Errorf("a got %d files from a refused delivery", n)
	}
	// Larger than the whole quota: permanent.
	big := strings.Repeat("x", 2000)
	err = s.Deliver(ctx, message(big), []Recipient{a})
	if !errors.As(err, &qe) || !qe.Permanent {
		t.Fatalf("too big: %v", err)
	}
	if !strings.Contains(qe.Error(), "a@example.org") {
		t.Errorf("error %q does not name the mailbox", qe)
	}
	// Reservations were released: a still takes a message that fits.
	if err := s.Deliver(ctx, message(body), []Recipient{a}); err != nil {
		t.Fatal(err)
	}
	used, _, _ := s.Usage("a@example.org")
	if used != int64(len(a.Prefix)+len(body)) {
		t.Errorf("a uses %d bytes", used)
	}
}

func TestMultiRecipientAllOrNothing(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	rcpts := []Recipient{rcpt("a@example.org", 1<<20), rcpt("b@example.net", 1<<20), rcpt("c@example.org", 1<<20)}
	if err := s.Deliver(ctx, message(body), rcpts); err != nil {
		t.Fatal(err)
	}
	for _, r := range rcpts {
		got := files(t, s, r.Mailbox, "new")
		if len(got) != 1 {
			t.Fatalf("%s has %d files", r.Mailbox, len(got))
		}
		for _, content := range got {
			if content != string(r.Prefix)+body {
				t.Errorf("%s content %q", r.Mailbox, content)
			}
		}
	}

	// Make c's new/ unusable: the rename fails after a and b were renamed
	// in the same commit, and everything is taken back.
	cnew := filepath.Join(s.MaildirPath("c@example.org"), "new")
	if err := os.RemoveAll(cnew); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cnew, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Deliver(ctx, message(body), rcpts); err == nil {
		t.Fatal("delivery with a broken mailbox succeeded")
	}
	for _, r := range rcpts[:2] {
		if n := len(files(t, s, r.Mailbox, "new")); n != 1 {
			t.Errorf("%s has %d files in new/ after a failed delivery, want 1", r.Mailbox, n)
		}
		if n := len(files(t, s, r.Mailbox, "tmp")); n != 0 {
			t.Errorf("%s has %d files in tmp/ after a failed delivery", r.Mailbox, n)
		}
		used, count, _ := s.Usage(r.Mailbox)
		if count != 1 || used != int64(len(r.Prefix)+len(body)) {
			t.Errorf("%s usage %d, %d after a failed delivery", r.Mailbox, used, count)
		}
	}
	if n := len(files(t, s, "c@example.org", "tmp")); n != 0 {
		t.Errorf("c has %d files in tmp/", n)
	}
}

func TestTmpCleanup(t *testing.T) {
	root := filepath.Join(t.TempDir(), "mail")
	tmp := filepath.Join(root, "example.org", "a", "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	old, fresh := filepath.Join(tmp, "old"), filepath.Join(tmp, "fresh")
	for _, p := range []string{old, fresh} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-37 * time.Hour)
	if err := os.Chtimes(old, past, past); err != nil {
		t.Fatal(err)
	}
	s, err := Open(root, Options{Hostname: "h"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := os.Stat(old); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old tmp file still there: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("fresh tmp file removed: %v", err)
	}
}

func TestUsageAfterExternalChanges(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	now := time.Now()
	s.now = func() time.Time { return now }
	r := rcpt("a@example.org", 1<<20)
	for range 3 {
		if err := s.Deliver(ctx, message(body), []Recipient{r}); err != nil {
			t.Fatal(err)
		}
	}
	size := int64(len(r.Prefix) + len(body))
	// Another program (an IMAP server, mutt) moves one to cur/ with flags,
	// deletes one, and drops in a file without ,S=.
	dir := s.MaildirPath("a@example.org")
	names := files(t, s, "a@example.org", "new")
	i := 0
	for name := range names {
		switch i {
		case 0:
			os.Rename(filepath.Join(dir, "new", name), filepath.Join(dir, "cur", name+":2,S"))
		case 1:
			os.Remove(filepath.Join(dir, "new", name))
		}
		i++
	}
	os.WriteFile(filepath.Join(dir, "cur", "123.external:2,"), []byte("12345"), 0o600)

	used, count, _ := s.Usage("a@example.org")
	if used != 3*size || count != 3 {
		t.Errorf("cached usage = %d, %d; want the old figure", used, count)
	}
	s.Forget("a@example.org")
	used, count, _ = s.Usage("a@example.org")
	if used != 2*size+5 || count != 3 {
		t.Errorf("usage after Forget = %d, %d; want %d, 3", used, count, 2*size+5)
	}
	// Without Forget, a figure older than a minute is recomputed, in the
	// background: the stale figure serves until the listing is done.
	os.Remove(filepath.Join(dir, "cur", "123.external:2,"))
	now = now.Add(2 * usageMaxAge)
	used, count, _ = s.Usage("a@example.org")
	if used != 2*size+5 || count != 3 {
		t.Errorf("usage at expiry = %d, %d; want the stale figure %d, 3 while listing", used, count, 2*size+5)
	}
	waitFor(t, func() bool {
		used, count, _ = s.Usage("a@example.org")
		return used == 2*size && count == 2
	})
}

func TestSizeFromName(t *testing.T) {
	for name, want := range map[string]int64{
		"1.M2P3Q4.host,S=123":          123,
		"1.M2P3Q4.host,S=123:2,FS":     123,
		"1.M2P3Q4.host,S=123,W=130:2,": 123,
		"1.M2P3Q4.host:2,S":            -1,
		"1.M2P3Q4.host,S=abc":          -1,
	} {
		got, ok := sizeFromName(name)
		if !ok {
			got = -1
		}
		if got != want {
			t.Errorf("sizeFromName(%q) = %d, want %d", name, got, want)
		}
	}
}

func TestCloseDrains(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "mail"), Options{Hostname: "h"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			errs <- s.Deliver(context.Background(), message(body), []Recipient{rcpt("a@example.org", 1<<20)})
		})
	}
	wg.Wait()
	s.Close()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if err := s.Deliver(context.Background(), message(body), []Recipient{rcpt("a@example.org", 1<<20)}); !errors.Is(err, ErrClosed) {
		t.Errorf("Deliver after Close: %v", err)
	}
	if n := len(files(t, s, "a@example.org", "new")); n != 20 {
		t.Errorf("new/ holds %d files", n)
	}
}

func TestWriteFailureLeavesNothing(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	a, b := rcpt("a@example.org", 1<<20), rcpt("b@example.org", 1<<20)
	if err := s.Deliver(ctx, message(body), []Recipient{b}); err != nil {
		t.Fatal(err)
	}
	// b's tmp/ becomes a file: creating b's copy fails after a's was written.
	btmp := filepath.Join(s.MaildirPath("b@example.org"), "tmp")
	if err := os.Remove(btmp); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(btmp, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Deliver(ctx, message(body), []Recipient{a, b}); err == nil {
		t.Fatal("delivery succeeded")
	}
	if n := len(files(t, s, "a@example.org", "new")) + len(files(t, s, "a@example.org", "tmp")); n != 0 {
		t.Errorf("a has %d files after a failed delivery", n)
	}
	// The reservation was released: a full-quota message still fits in a.
	full := strings.Repeat("x", 1<<20-len(a.Prefix))
	if err := s.Deliver(ctx, message(full), []Recipient{a}); err != nil {
		t.Errorf("reservation leaked: %v", err)
	}

	// A cancelled context stops the delivery before anything is written.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	c := rcpt("c@example.org", 1<<20)
	if err := s.Deliver(cctx, message(body), []Recipient{c}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled delivery: %v", err)
	}
	if n := len(files(t, s, "c@example.org", "new")) + len(files(t, s, "c@example.org", "tmp")); n != 0 {
		t.Errorf("c has %d files after a cancelled delivery", n)
	}
}

// A recipient with a Folder gets the message in that Maildir++ folder,
// made if missing, counted in the mailbox's usage; a bad name delivers
// nothing.
func TestDeliverToFolder(t *testing.T) {
	s := openTest(t)
	junk := rcpt("alice@example.org", 1<<20)
	junk.Folder = "Junk"
	inbox := rcpt("bob@example.org", 1<<20)
	if err := s.Deliver(context.Background(), message(body), []Recipient{junk, inbox}); err != nil {
		t.Fatal(err)
	}
	if n := len(files(t, s, "alice@example.org", ".Junk/new")); n != 1 {
		t.Fatalf(".Junk/new holds %d files, want 1", n)
	}
	if n := len(files(t, s, "alice@example.org", "new")); n != 0 {
		t.Fatalf("INBOX new/ holds %d files, want 0", n)
	}
	if n := len(files(t, s, "bob@example.org", "new")); n != 1 {
		t.Fatalf("bob's INBOX holds %d files, want 1", n)
	}
	if names, err := s.ListFolders("alice@example.org"); err != nil || !slices.Contains(names, "Junk") {
		t.Fatalf("ListFolders = %q, %v", names, err)
	}
	// The folder exists now: a second delivery uses it.
	if err := s.Deliver(context.Background(), message(body), []Recipient{junk}); err != nil {
		t.Fatal(err)
	}
	if n := len(files(t, s, "alice@example.org", ".Junk/new")); n != 2 {
		t.Fatalf(".Junk/new holds %d files, want 2", n)
	}
	if b, _, _ := s.FolderUsage("alice@example.org"); b == 0 {
		t.Fatal("the Junk folder's messages are not in the usage")
	}
	bad := junk
	bad.Folder = "../x"
	if err := s.Deliver(context.Background(), message(body), []Recipient{bad}); !errors.Is(err, ErrBadFolder) {
		t.Fatalf("folder ../x: %v, want ErrBadFolder", err)
	}
}

// In syncfs mode a batch costs one syncfs (doc.go), and a delivery is
// acknowledged only after a syncfs that began once its file was written. A
// first delivery holds its group commit in its syncfs until 20 more have
// queued: two syncfs calls for the two batches, and when each begins, no
// more deliveries have returned than there were files written (in tmp/ or
// new/) when the previous one began.
func TestOneSyncfsPerBatch(t *testing.T) {
	if testFsyncEach {
		t.Skip("syncfs mode only")
	}
	s := openTest(t)
	ctx := context.Background()
	box := s.MaildirPath("box@example.org")
	written := func() int {
		tmp, _ := os.ReadDir(filepath.Join(box, "tmp"))
		nw, _ := os.ReadDir(filepath.Join(box, "new"))
		return len(tmp) + len(nw)
	}
	var returned atomic.Int64
	var atSyncfs []int // files written at the start of each syncfs
	var violations []string
	check := func(when string) {
		if k := len(atSyncfs); k > 0 && returned.Load() > int64(atSyncfs[k-1]) {
			violations = append(violations, fmt.Sprintf("%s: %d deliveries returned, %d files were written at syncfs %d", when, returned.Load(), atSyncfs[k-1], k))
		}
	}
	release := make(chan struct{})
	s.beforeSyncfs = func() { // one group commit at a time: no lock needed
		check(fmt.Sprintf("syncfs %d", len(atSyncfs)+1))
		atSyncfs = append(atSyncfs, written())
		if len(atSyncfs) == 1 {
			<-release
		}
	}
	deliver := func(errs chan<- error) {
		err := s.Deliver(ctx, message("Subject: batch\r\n\r\nbody\r\n"), []Recipient{rcpt("box@example.org", 1<<30)})
		if err == nil {
			returned.Add(1)
		}
		errs <- err
	}
	errs := make(chan error, 21)
	go deliver(errs)
	waitFor(t, func() bool { return s.batches.Load() == 1 }) // the first is in its syncfs
	for range 20 {
		go deliver(errs)
	}
	waitFor(t, func() bool {
		s.cmu.Lock()
		defer s.cmu.Unlock()
		return len(s.pending) == 20
	})
	close(release)
	for range 21 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	check("at the end")
	if len(violations) > 0 {
		t.Fatalf("acknowledged before a syncfs that began after the file was written: %v", violations)
	}
	if len(atSyncfs) != 2 || s.batches.Load() != 2 {
		t.Fatalf("%d syncfs calls for %d batches, want 2 for 2 (files written at each: %v)", len(atSyncfs), s.batches.Load(), atSyncfs)
	}
	if ents, _ := os.ReadDir(filepath.Join(box, "new")); len(ents) != 21 {
		t.Fatalf("%d files in new/, want 21", len(ents))
	}
}

// One sender, one message at a time: each delivery waits for one syncfs,
// not two (the data's and then the rename's, as before the checksummed
// names let a crash's leftovers in tmp/ be recovered).
func TestOneSyncfsPerSerialDelivery(t *testing.T) {
	if testFsyncEach {
		t.Skip("syncfs mode only")
	}
	s := openTest(t)
	var calls atomic.Int64
	s.beforeSyncfs = func() { calls.Add(1) }
	for range 5 {
		if err := s.Deliver(context.Background(), message(body), []Recipient{rcpt("box@example.org", 1<<30)}); err != nil {
			t.Fatal(err)
		}
	}
	if n := calls.Load(); n != 5 {
		t.Fatalf("%d syncfs calls for 5 deliveries one after the other, want 5", n)
	}
}

// waitFor waits, with a bounded deadline, until cond holds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 20 s")
		}
		time.Sleep(time.Millisecond)
	}
}

// A lone delivery commits on its own goroutine (commit.go): the syncfs runs
// inside its Deliver call, with no goroutine woken to do it and to wake it
// again.
func TestLoneDeliveryCommitsItself(t *testing.T) {
	s := openTest(t)
	var stacks []string
	hook := func() {
		buf := make([]byte, 64<<10)
		stacks = append(stacks, string(buf[:runtime.Stack(buf, false)]))
	}
	if testFsyncEach {
		s.beforeFlushEach = hook
	} else {
		s.beforeSyncfs = hook
	}
	for range 3 {
		if err := s.Deliver(context.Background(), message(body), []Recipient{rcpt("box@example.org", 1<<30)}); err != nil {
			t.Fatal(err)
		}
	}
	if len(stacks) != 3 {
		t.Fatalf("%d commits for 3 lone deliveries, want 3", len(stacks))
	}
	for _, st := range stacks {
		if !strings.Contains(st, "maildir.(*Store).Deliver(") {
			t.Fatalf("the commit ran on another goroutine than its delivery:\n%s", st)
		}
	}
}

// A panic inside a group commit ends the process (commit.go, run): the
// leader runs on a session's goroutine, and a session's recover must not
// turn it into deliveries that wait forever. The test runs itself again
// in a child process that panics in its commit.
func TestPanicInCommitEndsProcess(t *testing.T) {
	if os.Getenv("AGUA_MAILDIR_PANIC_CHILD") == "1" {
		s := openTest(t)
		s.beforeSyncfs = func() { panic("boom") }
		s.beforeFlushEach = s.beforeSyncfs
		func() {
			defer func() { recover() }() // what connsrv does for a session
			s.Deliver(context.Background(), message(body), []Recipient{rcpt("box@example.org", 1<<30)})
		}()
		t.Fatal("the commit's panic was recovered and Deliver returned")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestPanicInCommitEndsProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "AGUA_MAILDIR_PANIC_CHILD=1")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !strings.Contains(string(out), "maildir: group commit: boom") {
		t.Fatalf("child: %v, want it to die of the commit's panic; output:\n%s", err, out)
	}
}
