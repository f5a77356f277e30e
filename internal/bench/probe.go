package bench

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// WrongServiceError says that the target answered, but not as the
// protocol the legitimate clients would speak: a run against it would only
// count failures.
type WrongServiceError struct {
	Target, Proto string
	Reached       string // what answered, for the operator
}

func (e *WrongServiceError) Error() string {
	hint := ""
	switch e.Proto {
	case "submission":
		hint = " (agua's submission port is 127.0.0.1:2587 by default: add -target 127.0.0.1:2587)"
	case "pop3":
		hint = " (agua's POP3 port is 127.0.0.1:2110 by default)"
	case "imap":
		hint = " (agua's IMAP port is 127.0.0.1:2143 by default)"
	case "smtp":
		hint = " (agua's MX port is 127.0.0.1:2525 by default)"
	}
	return fmt.Sprintf("-target %s does not serve -proto %s: it reached %s%s", e.Target, e.Proto, e.Reached, hint)
}

// probe opens one connection to the target, as a legitimate client would,
// and checks that it speaks cfg.Proto: an SMTP server for smtp, one that
// offers AUTH (after STARTTLS) for submission, a POP3 or IMAP greeting for
// pop3 and imap. It returns a *WrongServiceError when the target answered
// as something else, and nil when it matches or did not answer (the run
// counts that as it goes).
func probe(ctx context.Context, cfg *Config) error {
	// Client 0's first address: a returning one, never a fresh one.
	src := cfg.sources.addr(0, 0)
	c, err := dialFrom(ctx, src, cfg.Target, 10*time.Second)
	if err != nil {
		return nil
	}
	defer c.Close()
	s := newSMTPConn(c)
	s.setDeadline(10 * time.Second)
	code, err := s.reply()
	if err != nil {
		return nil
	}
	greeting := fmt.Sprintf("%q", strings.TrimSpace(s.last))
	kind := "an unknown service, greeting " + greeting
	switch {
	case code != 0:
		kind = "an SMTP server, banner " + greeting
	case strings.HasPrefix(s.last, "+OK") || strings.HasPrefix(s.last, "-ERR"):
		kind = "a POP3 server, greeting " + greeting
	case strings.HasPrefix(s.last, "* "):
		kind = "an IMAP server, greeting " + greeting
	}
	wrong := &WrongServiceError{Target: cfg.Target, Proto: cfg.Proto, Reached: kind}
	switch cfg.Proto {
	case "pop3":
		if !strings.HasPrefix(kind, "a POP3") {
			return wrong
		}
		return nil
	case "imap":
		if !strings.HasPrefix(kind, "an IMAP") {
			return wrong
		}
		return nil
	}
	if code == 0 {
		return wrong
	}
	if cfg.Proto != "submission" || code != 220 {
		return nil // smtp, or a refusal the run will count
	}
	if code, err := s.ehlo(cfg.Helo); err != nil || code != 250 {
		return nil
	}
	if s.has("STARTTLS") {
		if s.startTLS() != nil {
			return nil
		}
		if code, err := s.ehlo(cfg.Helo); err != nil || code != 250 {
			return nil
		}
	}
	if !s.has("AUTH") {
		wrong.Reached += ", which offers no AUTH even after STARTTLS (an MX port, whose AUTH attempts get 502)"
		return wrong
	}
	s.cmd("QUIT")
	return nil
}
