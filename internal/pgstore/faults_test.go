package pgstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/mailstore"
)

// terminate ends the database sessions that match where (a condition on
// pg_stat_activity or pg_locks), as a node's death or a network cut ends
// them, and returns how many it ended.
func terminate(t *testing.T, url, query string) int {
	t.Helper()
	pool := openPool(t, url)
	defer pool.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM (`+query+`) AS p`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func twoNodes(t *testing.T) (url string, a, b *Store) {
	t.Helper()
	url = newDB(t)
	open := func() *Store {
		pool := openPool(t, url)
		s := Open(pool, Options{})
		t.Cleanup(func() { s.Close(); pool.Close() })
		return s
	}
	return url, open(), open()
}

// The maildrop lock of a node whose connection ends (the node died, or
// was cut off) is released by PostgreSQL: another node's POP3 session
// gets the maildrop, no lock is left forever.
func TestLockReleasedWhenHolderGone(t *testing.T) {
	url, a, b := twoNodes(t)
	ctx := context.Background()
	fa, err := a.Folder(ctx, "alice@example.test", "")
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	if _, err := fa.Lock(); err != nil {
		t.Fatal(err)
	}
	fb, err := b.Folder(ctx, "alice@example.test", "")
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	if _, err := fb.Lock(); !errors.Is(err, mailstore.ErrLocked) {
		t.Fatalf("Lock while node A holds it: %v, want ErrLocked", err)
	}
	if n := terminate(t, url, `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted`); n != 1 {
		t.Fatalf("%d sessions held an advisory lock, want 1", n)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		unlock, err := fb.Lock()
		if err == nil {
			unlock()
			break
		}
		if !errors.Is(err, mailstore.ErrLocked) || time.Now().After(deadline) {
			t.Fatalf("Lock after the holder's session ended: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The change listener's connection ends: a delivery made before it is
// back is still seen by a folder open on that node (the listener, once
// connected again, marks every open folder changed), and Stamp answers
// throughout: from the database, unsettled, while the listener is down.
func TestStampAfterListenerLost(t *testing.T) {
	url, a, b := twoNodes(t)
	const user = "alice@example.test"
	fb, err := b.Folder(context.Background(), user, "")
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	var before mailstore.Stamp
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		st, settled, err := fb.Stamp()
		if err != nil {
			t.Fatal(err)
		}
		if settled {
			before = st
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("stamp not settled after 30 s")
		}
	}
	if n := terminate(t, url, `SELECT pid FROM pg_stat_activity WHERE query = 'LISTEN `+notifyChannel+`'`); n != 2 {
		t.Fatalf("%d listening sessions ended, want 2 (one per node)", n)
	}
	deliver(t, a, user, "Subject: while the listener was gone\r\n\r\nx\r\n")
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		st, _, err := fb.Stamp()
		if err != nil {
			t.Fatal(err)
		}
		if st != before {
			if l, err := fb.List(); err != nil || len(l.Messages) != 1 {
				t.Fatalf("listing after the change: %+v %v", l, err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a delivery made while the listener was gone is not seen after 30 s")
		}
	}
}
