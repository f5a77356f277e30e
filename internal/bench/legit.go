package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
)

// runLegit is one legitimate client: full sessions back to back until ctx
// ends, each from its own source address (sources.go).
func runLegit(ctx context.Context, cfg *Config, i int, st *legitStats) {
	// A "%d" in the login or the recipient is the client's number, so that
	// each client can have a mailbox of its own (POP3 locks the maildrop:
	// RFC 1939 8).
	own := *cfg
	own.User, own.Rcpt = perClient(cfg.User, i), perClient(cfg.Rcpt, i)
	cfg = &own
	rcpt := cfg.Rcpt
	body := message(cfg.From, rcpt, cfg.MsgSize)
	for done := 0; ctx.Err() == nil && (cfg.MaxSessions == 0 || done < cfg.MaxSessions); done++ {
		if cfg.legitTick != nil {
			select {
			case <-ctx.Done():
				return
			case <-cfg.legitTick:
			}
		}
		src := cfg.sources.addr(i, done)
		start := time.Now()
		var n int
		var cause string
		switch cfg.Proto {
		case "pop3":
			n, cause = popSession(ctx, cfg, src)
		case "imap":
			n, cause = imapSession(ctx, cfg, src)
		default:
			n, cause = legitSession(ctx, cfg, src, rcpt, body)
		}
		if cause != "" && endOfRun(ctx) {
			return // cut short by the end of the run: not a failure
		}
		st.record(time.Since(start), n, cause)
		if cause != "" {
			// A refused client backs off a little, as real MTAs do.
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
}

// endOfRun reports whether the run's time is up. A dial or read cut by the
// run's deadline can fail with a timeout a moment before ctx reports it
// (net.Dialer and deadlines use the same instant), so the deadline itself
// is checked too.
func endOfRun(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

// perClient replaces "%d" in s with client number i.
func perClient(s string, i int) string {
	return strings.ReplaceAll(s, "%d", strconv.Itoa(i))
}

// legitSession runs one session and returns how many messages were
// acknowledged and the failure cause ("" on success).
func legitSession(ctx context.Context, cfg *Config, src netip.Addr, rcpt string, body []byte) (int, string) {
	c, err := dialFrom(ctx, src, cfg.Target, 10*time.Second)
	if err != nil {
		return 0, "dial: " + errClass(err)
	}
	defer c.Close()
	s := newSMTPConn(c)
	s.setDeadline(30 * time.Second)
	code, err := s.reply()
	if err != nil {
		return 0, "banner: " + errClass(err)
	}
	if code != 220 {
		return 0, fmt.Sprintf("banner: %d", code)
	}
	if code, err = s.ehlo(cfg.Helo); err != nil || code != 250 {
		return 0, fmt.Sprintf("ehlo: %d %s", code, errClass(err))
	}
	if cfg.Proto == "submission" {
		if err := s.startTLS(); err != nil {
			return 0, "starttls: " + errClass(err)
		}
		if code, err = s.ehlo(cfg.Helo); err != nil || code != 250 {
			return 0, fmt.Sprintf("ehlo: %d %s", code, errClass(err))
		}
		if code, err = s.authPlain(cfg.User, cfg.Pass); err != nil || code != 235 {
			return 0, fmt.Sprintf("auth: %d %s", code, errClass(err))
		}
	}
	n := 0
	for m := 0; m < cfg.PerSession; m++ {
		s.setDeadline(30 * time.Second)
		code, err := s.transaction(cfg.From, rcpt, body)
		if err != nil {
			return n, "transaction: " + errClass(err)
		}
		if code != 250 {
			return n, fmt.Sprintf("transaction: %d", code)
		}
		n++
	}
	s.cmd("QUIT")
	return n, ""
}

// errClass names an error for the failure table without addresses/ports.
func errClass(err error) string {
	if err == nil {
		return ""
	}
	var ne net.Error
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, net.ErrClosed):
		return "closed"
	}
	msg := err.Error()
	for _, k := range []string{"connection refused", "connection reset", "broken pipe", "EOF", "cannot assign requested address", "too many open files"} {
		if contains(msg, k) {
			return k
		}
	}
	return "error"
}

func contains(s, sub string) bool {
	return strings.Contains(s, sub)
}
