package dkim_test

import (
	"log/slog"
	"os"
	"time"

	"github.com/agua-mail/agua/internal/dkim"
)

// The outbound queue signs a message once, when it accepts it, and stores
// the signature fields in front of it: retries then send the same bytes,
// and a key rotated meanwhile does not matter.
func ExampleSigner_Sign() {
	data, _ := os.MkdirTemp("", "agua-example-")
	defer os.RemoveAll(data)
	dkim.Keygen(data, "example.org", dkim.Ed25519, "", time.Time{})

	s := dkim.NewSigner(dkim.Options{DataDir: data, Log: slog.Default()})
	if err := s.Watch(); err != nil { // pick up `agua dkim keygen` while running
		slog.Warn("dkim watch", "err", err)
	}
	defer s.Close()

	msg := []byte("From: ann@example.org\r\nTo: bob@remote.test\r\nSubject: hi\r\n\r\nhello\r\n")
	sig, err := s.Sign("ann@example.org", msg)
	if err != nil {
		slog.Warn("dkim: sending unsigned", "err", err) // never a reason to refuse
	}
	queued := append(sig, msg...) // sig is nil when no key applies
	_ = queued
}
