package outbound

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/agua-mail/agua/internal/queue"
)

// traits are what a delivery must know about a message's bytes.
type traits struct {
	eightBit    bool // a byte above 127 anywhere
	header8bit  bool // ... in the header section
	hasNonASCII bool // non-ASCII envelope address
}

// scan reads the message once to find 8-bit bytes.
func scan(r io.Reader) (t traits, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	inHeader := true
	atLineStart := true
	for {
		line, err := br.ReadSlice('\n')
		if inHeader && atLineStart && (string(line) == "\r\n" || string(line) == "\n") {
			inHeader = false
		}
		for _, c := range line {
			if c >= 0x80 {
				t.eightBit = true
				if inHeader {
					t.header8bit = true
				}
				break
			}
		}
		atLineStart = len(line) > 0 && line[len(line)-1] == '\n'
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			return t, nil
		}
		if err != nil {
			return t, err
		}
		if t.header8bit || (!inHeader && t.eightBit) {
			return t, nil // nothing more to learn
		}
	}
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// deliver sends one message to its recipients at this destination over s.
// It reports whether the peer asked to slow down (421 or 451).
func (e *Engine) deliver(ctx context.Context, s *session, dl *delivery) ([]outcome, bool) {
	env := dl.job.Envelope
	outs := make([]outcome, len(dl.rcpts))
	for i, r := range dl.rcpts {
		outs[i] = outcome{rcpt: r, remoteMTA: s.host}
	}
	all := func(st queue.Status, reply string) []outcome {
		for i := range outs {
			outs[i].status, outs[i].reply = st, reply
		}
		return outs
	}
	local := func(err error) []outcome {
		return all(queue.Deferred, fmt.Sprintf("451 4.3.0 local error: %v", err))
	}

	body, err := e.q.Open(dl.job.ID)
	if err != nil {
		return local(err), false
	}
	t, err := scan(body)
	body.Close()
	if err != nil {
		return local(err), false
	}
	needUTF8 := !isASCII(env.From) || (env.UTF8 && t.header8bit)
	for _, r := range dl.rcpts {
		if !isASCII(r.Addr) {
			needUTF8 = true
		}
	}
	p := mailParams{size: dl.job.Size}
	switch {
	case needUTF8 && !s.has("SMTPUTF8"):
		// RFC 6531 3.2: an internationalized message goes only to a
		// server that announces SMTPUTF8; RFC 6531 3.6.2 / RFC 3463:
		// bounce with 5.6.7.
		return all(queue.Bounced, "553 5.6.7 the message needs SMTPUTF8 (RFC 6531) and "+s.host+" does not support it"), false
	case env.UTF8 && s.has("SMTPUTF8"):
		p.utf8 = true
	}
	// Without SMTPUTF8 needed (ASCII addresses and headers), the message
	// is sent as a plain one: the downgrade RFC 6531 permits.
	switch {
	case t.eightBit && !s.has("8BITMIME"):
		// RFC 6152 3: 8-bit data goes only to a server that announces
		// 8BITMIME; agua does not convert MIME parts, so it bounces
		// (RFC 3463 5.6.3: conversion required but not supported).
		return all(queue.Bounced, "554 5.6.3 the message has 8-bit data and "+s.host+" does not support 8BITMIME (RFC 6152)"), false
	case (t.eightBit || env.EightBit) && s.has("8BITMIME"):
		p.eightBit = true
	}
	if lim := s.sizeLimit(); lim > 0 && dl.job.Size > lim {
		// RFC 1870 6.1: larger than the server's fixed maximum.
		return all(queue.Bounced, fmt.Sprintf("552 5.3.4 message of %d bytes is larger than %s accepts (%d)", dl.job.Size, s.host, lim)), false
	}

	body, err = e.q.Open(dl.job.ID)
	if err != nil {
		return local(err), false
	}
	defer body.Close()
	out := s.send(env.From, addrs(dl.rcpts), p, body)
	return classify(outs, out), out.rateLimited()
}

// rateLimited reports a 421 or 451 anywhere in the transaction.
func (o txOutcome) rateLimited() bool {
	for _, r := range append([]Reply{o.mail, o.data}, o.rcpts...) {
		if r.Code == 421 || r.Code == 451 {
			return true
		}
	}
	return false
}

// classify maps the peer's replies to each recipient's outcome.
func classify(outs []outcome, o txOutcome) []outcome {
	set := func(i int, r Reply) {
		switch {
		case r.Code/100 == 2:
			outs[i].status = queue.Delivered
		case r.Permanent():
			outs[i].status = queue.Bounced
		default:
			outs[i].status = queue.Deferred
		}
		outs[i].reply = r.String()
	}
	for i := range outs {
		switch {
		case o.mail.Code != 0 && o.mail.Code/100 != 2:
			set(i, o.mail)
		case o.rcpts[i].Code != 0 && o.rcpts[i].Code/100 != 2:
			set(i, o.rcpts[i])
		case o.err != nil:
			// The session broke before the final reply: nothing is
			// known to be delivered (RFC 5321 6.1 leaves a duplicate
			// possible if the peer had taken it).
			outs[i].status = queue.Deferred
			outs[i].reply = "451 4.4.2 connection with " + outs[i].remoteMTA + " failed: " + o.err.Error()
		case o.data.Code != 0:
			set(i, o.data)
		default:
			outs[i].status = queue.Deferred
			outs[i].reply = "451 4.4.2 no reply from " + outs[i].remoteMTA
		}
	}
	return outs
}
