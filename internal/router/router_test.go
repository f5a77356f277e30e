package router

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/agua-mail/agua/internal/accounts"
	"github.com/agua-mail/agua/internal/directory"
	"github.com/agua-mail/agua/internal/maildir"
	"github.com/agua-mail/agua/internal/smtpd"
)

// fixture is a router on a real SQLite directory and a real Maildir store:
// example.test with alice, bob (quota 10 bytes) and the aliases team
// (alice, bob's alias al) and postmaster (alice).
type fixture struct {
	dir   accounts.Directory
	store *maildir.Store
	root  string
	queue *fakeQueue
}

// fakeQueue stands in for the outbound queue behind router.Queue.
type fakeQueue struct {
	mu   sync.Mutex
	fail error
	got  []queued
}

type queued struct {
	from  string
	rcpts []string
	data  string
}

func (q *fakeQueue) enqueue(ctx context.Context, from string, rcpts []string, msg io.Reader) error {
	if q.fail != nil {
		return q.fail
	}
	b, err := io.ReadAll(msg)
	if err != nil {
		return err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.got = append(q.got, queued{from, rcpts, string(b)})
	return nil
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	tmp := t.TempDir()
	dir, err := directory.Open(filepath.Join(tmp, "agua.db"), directory.Options{DefaultQuota: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dir.Close() })
	root := filepath.Join(tmp, "mail")
	store, err := maildir.Open(root, maildir.Options{Hostname: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	for _, step := range []error{
		dir.AddDomain(ctx, "example.test"),
		dir.AddUser(ctx, "alice@example.test", "pw", 0),
		dir.AddUser(ctx, "bob@example.test", "pw", 10),
		dir.AddAlias(ctx, "team@example.test", "alice@example.test"),
		dir.AddAlias(ctx, "al@example.test", "alice@example.test"),
		dir.AddAlias(ctx, "team@example.test", "al@example.test"),
		dir.AddAlias(ctx, "postmaster@example.test", "alice@example.test"),
	} {
		if step != nil {
			t.Fatal(step)
		}
	}
	return &fixture{dir: dir, store: store, root: root, queue: &fakeQueue{}}
}

// router returns a router; withQueue adds the fake queue as remote target.
func (f *fixture) router(t *testing.T, hostname string, withQueue bool) *Router {
	t.Helper()
	cfg := Config{Hostname: hostname, Accounts: f.dir, Local: NewLocal(f.store)}
	if withQueue {
		cfg.Remote = Queue(f.queue.enqueue)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (f *fixture) messages(t *testing.T, mailbox string) []string {
	t.Helper()
	local, domain, _ := strings.Cut(mailbox, "@")
	ents, err := os.ReadDir(filepath.Join(f.root, domain, local, "new"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(f.root, domain, local, "new", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

var (
	mx         = &smtpd.Session{ID: "t1", Mode: smtpd.ModeMX, RemoteAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 1}, Helo: "client.example"}
	submission = &smtpd.Session{ID: "t2", Mode: smtpd.ModeSubmission, RemoteAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 3), Port: 1}, Helo: "laptop", TLS: true, User: "alice@example.test"}
)

const body = "Received: from test\r\nSubject: hi\r\n\r\nhello\r\n"

// send runs one transaction through the router's smtpd.Backend side and
// returns the error of each RCPT and of the commit.
func send(t *testing.T, r *Router, s *smtpd.Session, from string, rcpts ...string) (rcptErrs []error, commitErr error) {
	t.Helper()
	ctx := context.Background()
	tx, err := r.NewTransaction(ctx, s, smtpd.Mail{From: from})
	if err != nil {
		t.Fatalf("MAIL FROM:<%s>: %v", from, err)
	}
	for _, rc := range rcpts {
		rcptErrs = append(rcptErrs, tx.AddRcpt(ctx, rc))
	}
	msg := strings.NewReader(body)
	if commitErr = tx.Body(ctx, msg, msg.Size()); commitErr == nil {
		commitErr = tx.Commit(ctx)
	}
	if commitErr != nil {
		tx.Abort()
	}
	return rcptErrs, commitErr
}

// TestRelayPolicy: an MX relays for no one, even with an outbound queue;
// submission without a queue answers 550 5.3.0 (the behaviour before the
// queue); submission with one queues remote recipients and delivers local
// ones in the same transaction.
func TestRelayPolicy(t *testing.T) {
	f := newFixture(t)

	errs, _ := send(t, f.router(t, "mx.example.test", true), mx, "x@elsewhere.example", "someone@elsewhere.example")
	if !errors.Is(errs[0], smtpd.ErrRelayDenied) {
		t.Errorf("MX with a queue, remote rcpt: %v, want relay denied", errs[0])
	}

	errs, _ = send(t, f.router(t, "mx.example.test", false), submission, "alice@example.test", "someone@elsewhere.example")
	if e := smtpd.AsError(errs[0]); e.Code != 550 || e.Enhanced != "5.3.0" {
		t.Errorf("submission without a queue: %v, want 550 5.3.0", errs[0])
	}
	if len(f.queue.got) != 0 {
		t.Fatalf("queued without a queue: %v", f.queue.got)
	}

	errs, err := send(t, f.router(t, "mx.example.test", true), submission, "alice@example.test",
		"someone@elsewhere.example", "team@example.test", "Someone@elsewhere.example", "other@far.example")
	for i, e := range errs {
		if e != nil {
			t.Errorf("rcpt %d: %v", i, e)
		}
	}
	if err != nil {
		t.Fatalf("commit: %v", err)
	}
	if len(f.queue.got) != 1 {
		t.Fatalf("queue got %d messages, want 1", len(f.queue.got))
	}
	q := f.queue.got[0]
	if q.from != "alice@example.test" || !slices.Equal(q.rcpts, []string{"someone@elsewhere.example", "Someone@elsewhere.example", "other@far.example"}) || q.data != body {
		t.Errorf("queued %+v", q)
	}
	if got := f.messages(t, "alice@example.test"); len(got) != 1 {
		t.Errorf("alice got %d messages, want 1", len(got))
	}
}

// TestQueueFailure: a queue that cannot take the message fails the
// transaction with a temporary reply.
func TestQueueFailure(t *testing.T) {
	f := newFixture(t)
	f.queue.fail = errors.New("disk full")
	_, err := send(t, f.router(t, "mx.example.test", true), submission, "alice@example.test", "someone@elsewhere.example")
	if e := smtpd.AsError(err); e.Code != 451 || !errors.Is(err, f.queue.fail) {
		t.Errorf("commit with a failing queue: %v", err)
	}
}

// TestRecipients: unknown users are the typed sentinel, aliases fan out
// with each mailbox once, and every copy carries its trace fields.
func TestRecipients(t *testing.T) {
	f := newFixture(t)
	r := f.router(t, "mx.example.test", false)
	errs, err := send(t, r, mx, "sender@elsewhere.example", "nobody@example.test", "team@example.test", "ALICE@example.test", "bad address@example.test")
	if !errors.Is(errs[0], smtpd.ErrUnknownRecipient) || !errors.Is(errs[3], smtpd.ErrUnknownRecipient) {
		t.Errorf("unknown and malformed rcpts: %v, %v", errs[0], errs[3])
	}
	if errs[1] != nil || errs[2] != nil {
		t.Errorf("known rcpts: %v", errs)
	}
	if err != nil {
		t.Fatal(err)
	}
	got := f.messages(t, "alice@example.test")
	if len(got) != 1 {
		t.Fatalf("alice got %d copies, want 1", len(got))
	}
	want := "Return-Path: <sender@elsewhere.example>\r\nDelivered-To: alice@example.test\r\n" + body
	if got[0] != want {
		t.Errorf("delivered %q, want %q", got[0], want)
	}
}

// TestPostmaster: RFC 5321 4.1.1.3, the bare postmaster is accepted: at the
// host name when it is a local domain, else at the first local domain.
func TestPostmaster(t *testing.T) {
	for _, host := range []string{"example.test", "mx.elsewhere.example"} {
		f := newFixture(t)
		errs, err := send(t, f.router(t, host, false), mx, "", "postmaster", "PostMaster")
		if errs[0] != nil || errs[1] != nil || err != nil {
			t.Fatalf("host %s: %v %v", host, errs, err)
		}
		if got := f.messages(t, "alice@example.test"); len(got) != 1 || !strings.HasPrefix(got[0], "Return-Path: <>\r\n") {
			t.Errorf("host %s: postmaster mail %q", host, got)
		}
	}
}

// TestQuotaPrecheck: a mailbox already over quota is deferred at RCPT, with
// the typed reply; one over quota by this message is refused at commit.
func TestQuotaPrecheck(t *testing.T) {
	f := newFixture(t)
	r := f.router(t, "mx.example.test", false)
	_, err := send(t, r, mx, "s@elsewhere.example", "bob@example.test")
	if e := smtpd.AsError(err); e.Code != 552 || e.Enhanced != "5.2.2" {
		t.Fatalf("message over bob's 10-byte quota: %v", err)
	}
	// Fill bob's mailbox behind the router's back, then try again.
	if err := f.store.Deliver(context.Background(), maildir.Message{R: strings.NewReader("0123456789ab"), Size: 12},
		[]maildir.Recipient{{Mailbox: "bob@example.test", Quota: 1 << 20}}); err != nil {
		t.Fatal(err)
	}
	errs, _ := send(t, r, mx, "s@elsewhere.example", "bob@example.test")
	if !errors.Is(errs[0], smtpd.ErrMailboxFull) {
		t.Errorf("rcpt of a full mailbox: %v", errs[0])
	}
}

// TestSender: submission needs a sender the user owns (RFC 6409 6.1); an
// MX takes any, the null sender included.
func TestSender(t *testing.T) {
	f := newFixture(t)
	r := f.router(t, "mx.example.test", false)
	ctx := context.Background()
	for _, c := range []struct {
		s    *smtpd.Session
		from string
		ok   bool
	}{
		{submission, "alice@example.test", true},
		{submission, "Al@Example.test", true}, // her alias
		{submission, "bob@example.test", false},
		{submission, "", false},
		{submission, "alice@elsewhere.example", false},
		{mx, "bob@example.test", true},
		{mx, "", true},
	} {
		tx, err := r.NewTransaction(ctx, c.s, smtpd.Mail{From: c.from})
		if c.ok != (err == nil) || !c.ok && !errors.Is(err, smtpd.ErrSenderNotOwned) {
			t.Errorf("%s MAIL FROM:<%s>: %v", c.s.Mode, c.from, err)
		}
		if tx != nil {
			tx.Abort()
		}
	}
}

// TestAbort: an aborted transaction delivers nothing.
func TestAbort(t *testing.T) {
	f := newFixture(t)
	r := f.router(t, "mx.example.test", true)
	ctx := context.Background()
	tx, err := r.NewTransaction(ctx, submission, smtpd.Mail{From: "alice@example.test"})
	if err != nil {
		t.Fatal(err)
	}
	for _, rc := range []string{"alice@example.test", "x@elsewhere.example"} {
		if err := tx.AddRcpt(ctx, rc); err != nil {
			t.Fatal(err)
		}
	}
	msg := strings.NewReader(body)
	if err := tx.Body(ctx, msg, msg.Size()); err != nil {
		t.Fatal(err)
	}
	tx.Abort()
	if got := f.messages(t, "alice@example.test"); len(got) != 0 || len(f.queue.got) != 0 {
		t.Errorf("after Abort: %d local, %d queued", len(got), len(f.queue.got))
	}
}

// TestAuthenticate maps the accounts' answers to SMTP's.
func TestAuthenticate(t *testing.T) {
	f := newFixture(t)
	r := f.router(t, "mx.example.test", false)
	ctx := context.Background()
	user, err := r.Authenticate(ctx, submission, "Alice@Example.TEST", "pw")
	if err != nil || user != "alice@example.test" {
		t.Errorf("good credentials: %q, %v", user, err)
	}
	for _, u := range []string{"alice@example.test", "nobody@example.test", "not an address"} {
		if _, err := r.Authenticate(ctx, submission, u, "wrong"); !errors.Is(err, smtpd.ErrAuthFailed) {
			t.Errorf("%s with a wrong password: %v", u, err)
		}
	}
	f.dir.Close() // the accounts fail: a temporary reply, not a refusal
	if _, err := r.Authenticate(ctx, submission, "alice@example.test", "pw"); !errors.Is(err, smtpd.ErrTempAuth) {
		t.Errorf("with the accounts closed: %v", err)
	}
}

// firstRoute admits each address once, whether it scans the recipients
// routed so far (a few) or keeps them in a map (past seenScan), and across
// local, remote and forward recipients.
func TestFirstRoute(t *testing.T) {
	var tx transaction
	for i := range 3 * seenScan {
		a := fmt.Sprintf("user%d@example.test", i)
		if !tx.firstRoute(a) {
			t.Fatalf("%s: not routed yet, but firstRoute said it was", a)
		}
		switch i % 3 {
		case 0:
			tx.local = append(tx.local, Recipient{Address: a})
		case 1:
			tx.remote = append(tx.remote, Recipient{Address: a})
		default:
			tx.forward = append(tx.forward, Recipient{Address: a})
		}
		for j := 0; j <= i; j += 7 { // every earlier one is routed already
			if b := fmt.Sprintf("user%d@example.test", j); tx.firstRoute(b) {
				t.Fatalf("after %d recipients: %s routed twice", i+1, b)
			}
		}
	}
	if tx.seen == nil {
		t.Fatal("no map past seenScan recipients")
	}
}

// cancelledAccounts fails every check as one cut short by its context does
// (passwd.Hasher.Check while it queues for the hasher).
type cancelledAccounts struct{ accounts.Lookup }

func (cancelledAccounts) Authenticate(ctx context.Context, address, password string) (accounts.User, error) {
	return accounts.User{}, fmt.Errorf("verifying a password: %w", context.Canceled)
}

// A check cut short by its context (the client left: connsrv's
// WhileVerifying) stays a temporary failure that still says so, so that
// the session tells it from a refusal and counts no failed login.
func TestAuthenticateCancelled(t *testing.T) {
	f := newFixture(t)
	r, err := New(Config{Hostname: "mx.example.test", Accounts: cancelledAccounts{f.dir}, Local: NewLocal(f.store)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Authenticate(context.Background(), submission, "alice@example.test", "pw")
	if !errors.Is(err, smtpd.ErrTempAuth) || !errors.Is(err, context.Canceled) {
		t.Errorf("a cancelled check: %v, want ErrTempAuth wrapping context.Canceled", err)
	}
}
