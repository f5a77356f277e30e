package smtpd

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/smtptest"
)

// waitOpen waits, with a bounded deadline, until the backend has no open
// transaction, and returns its record.
func waitOpen(t *testing.T, b *memBackend) (delivered []memMessage, aborted int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		d, a, open := b.snapshot()
		if open == 0 {
			return d, a
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d transactions still open", open)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestTransactionLifecycle: every transaction the session starts ends
// exactly once (memTx panics on a second end, and a panic fails the test
// through Panics): Commit after a good DATA, Abort on RSET, a new EHLO, a
// refused message, a failed Body and a client that goes away.
func TestTransactionLifecycle(t *testing.T) {
	b := &memBackend{users: map[string]bool{"alice": true, "bob": true}}
	ts := startServers(t, b, nil)
	c := smtptest.Dial(t, ts.addrs["smtp"])
	c.Expect("220 ")
	c.Cmd("EHLO client.example", "250")
	begin := func() {
		c.Cmd("MAIL FROM:<s@elsewhere.example>", "250 2.1.0")
		c.Cmd("RCPT TO:<alice@example.test>", "250 2.1.5")
	}

	begin()
	c.Cmd("RSET", "250")
	begin()
	c.Cmd("EHLO again.example", "250")
	begin()
	c.Cmd("DATA", "354")
	c.Raw("bare\nLF\r\n.\r\n")
	c.Expect("554 5.6.0")
	if _, aborted := waitOpen(t, b); aborted != 3 {
		t.Errorf("after RSET, EHLO and a refused message: %d aborts, want 3", aborted)
	}

	begin()
	c.Cmd("RCPT TO:<bob@example.test>", "250")
	c.Cmd("DATA", "354")
	c.Raw("Subject: hi\r\n\r\n..dot\r\n.\r\n")
	c.Expect("250 2.0.0 OK queued as")
	delivered, aborted := waitOpen(t, b)
	if len(delivered) != 1 || aborted != 3 {
		t.Fatalf("after a delivery: %d delivered, %d aborted", len(delivered), aborted)
	}
	m := delivered[0]
	if m.From != "s@elsewhere.example" || strings.Join(m.Rcpts, ",") != "alice@example.test,bob@example.test" {
		t.Errorf("delivered envelope %+v", m)
	}
	if !strings.HasPrefix(m.Data, "Received: from again.example ([127.0.0.1])\r\n\tby mx.example.test (agua) with ESMTP id ") ||
		!strings.HasSuffix(m.Data, "\r\nSubject: hi\r\n\r\n.dot\r\n") {
		t.Errorf("delivered data %q", m.Data)
	}

	// A client that leaves mid-transaction.
	begin()
	c.Conn.Close()
	if _, aborted := waitOpen(t, b); aborted != 4 {
		t.Errorf("after the client left: %d aborts, want 4", aborted)
	}
	for _, srv := range ts.servers {
		if srv.Panics() > 0 {
			t.Fatal("a session panicked (a transaction ended twice?)")
		}
	}
}

// TestBodyRefused: a backend that refuses the message at the end of DATA
// (where DKIM will) gets its reply sent and the transaction aborted.
func TestBodyRefused(t *testing.T) {
	b := &memBackend{failBody: Errorf(550, "5.7.1", "Signature did not verify")}
	ts := startServers(t, b, nil)
	c := smtptest.Dial(t, ts.addrs["smtp"])
	c.Expect("220 ")
	c.Cmd("EHLO client.example", "250")
	c.Cmd("MAIL FROM:<s@elsewhere.example>", "250")
	c.Cmd("RCPT TO:<alice@example.test>", "250")
	c.Cmd("DATA", "354")
	c.Raw("Subject: hi\r\n\r\nx\r\n.\r\n")
	c.Expect("550 5.7.1 Signature did not verify")
	c.Cmd("RCPT TO:<alice@example.test>", "503 5.5.1") // the transaction is over
	if delivered, aborted := waitOpen(t, b); len(delivered) != 0 || aborted != 1 {
		t.Errorf("%d delivered, %d aborted; want 0, 1", len(delivered), aborted)
	}
}

// TestSentinels: replies made from a sentinel still match it; different
// sentinels with the same code do not match each other.
func TestSentinels(t *testing.T) {
	cause := errors.New("disk on fire")
	e := ErrTempLocal.WithCause(cause)
	if !errors.Is(e, ErrTempLocal) || !errors.Is(e, cause) || e.Code != 451 || e.Enhanced != "4.3.0" {
		t.Errorf("WithCause: %v", e)
	}
	if errors.Is(e.WithCause(nil), ErrTempAuth) || !errors.Is(e.WithCause(nil), ErrTempLocal) {
		t.Error("a copy of a copy lost its sentinel")
	}
	if errors.Is(ErrRelayDenied, ErrUnknownRecipient) {
		t.Error("550 5.7.1 matches the unknown-recipient sentinel")
	}
	if errors.Is(Errorf(550, "5.1.1", "No such user here"), ErrUnknownRecipient) {
		t.Error("an equal reply that is not the sentinel matches it: matching is by text")
	}
	if a := AsError(cause); !errors.Is(a, ErrTempLocal) || !errors.Is(a, cause) {
		t.Errorf("AsError(plain) = %v", a)
	}
}
