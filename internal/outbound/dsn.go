package outbound

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"strings"
	"time"
)

// maxDSNHeaders bounds the original header section returned in a DSN.
const maxDSNHeaders = 64 << 10

// dsnKind is what a DSN reports (RFC 3464 2.3.3 Action).
type dsnKind uint8

const (
	dsnFailed  dsnKind = iota // the message will not be delivered
	dsnDelayed                // not yet delivered, still being retried
)

// buildDSN writes the notification (RFC 3464 multipart/report, RFC 6522)
// for some recipients of one message, failed or delayed: a human-readable
// part, the machine-readable delivery status with each remote reply, and
// the original header section (text/rfc822-headers).
func (e *Engine) buildDSN(dl *delivery, bounced []outcome, now time.Time, kind dsnKind) ([]byte, error) {
	var hdrs []byte
	if rc, err := e.q.Open(dl.job.ID); err == nil {
		hdrs = headerSection(rc)
		rc.Close()
	}
	env := dl.job.Envelope
	var rb [12]byte
	rand.Read(rb[:])
	boundary := fmt.Sprintf("agua-dsn-%x", rb)
	date := now.Format(time.RFC1123Z)

	var b bytes.Buffer
	line := func(format string, a ...any) { fmt.Fprintf(&b, format+"\r\n", a...) }
	line("From: Mail Delivery System <MAILER-DAEMON@%s>", e.hostname)
	line("To: <%s>", clean(env.From))
	if kind == dsnDelayed {
		line("Subject: Delayed Mail (still being retried)")
	} else {
		line("Subject: Undelivered Mail Returned to Sender")
	}
	line("Date: %s", date)
	line("Message-ID: <%x.dsn@%s>", rb, e.hostname)
	// RFC 3834 5: an automatic reply; nobody should answer it.
	line("Auto-Submitted: auto-replied")
	line("MIME-Version: 1.0")
	line("Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"%s\"", boundary)
	line("")
	line("This is a MIME-encapsulated message.")
	line("")
	line("--%s", boundary)
	line("Content-Type: text/plain; charset=utf-8")
	line("Content-Transfer-Encoding: 8bit")
	line("")
	line("This is the mail system at %s.", e.hostname)
	line("")
	retryUntil := env.Received.Add(e.opts.Lifetime)
	if kind == dsnDelayed {
		line("Your message could not be delivered to one or more recipients yet.")
		line("This is only a warning: you do not need to send it again.")
		line("Delivery will be tried until %s.", retryUntil.Format(time.RFC1123Z))
		line("Its headers are attached below.")
	} else {
		line("Your message could not be delivered to one or more recipients.")
		line("It is attached below (headers only).")
	}
	line("")
	for _, o := range bounced {
		line("<%s>: %s", clean(o.rcpt.Addr), clean(o.reply))
	}
	line("")
	line("--%s", boundary)
	line("Content-Type: message/delivery-status")
	line("")
	// RFC 3464 2.2: per-message fields.
	line("Reporting-MTA: dns; %s", e.hostname)
	line("Arrival-Date: %s", env.Received.Format(time.RFC1123Z))
	for _, o := range bounced {
		// RFC 3464 2.3: per-recipient fields.
		line("")
		addrType := "rfc822"
		if !isASCII(o.rcpt.Addr) {
			addrType = "utf-8" // RFC 6533 3
		}
		line("Final-Recipient: %s; %s", addrType, clean(o.rcpt.Addr))
		if kind == dsnDelayed {
			line("Action: delayed")
		} else {
			line("Action: failed")
		}
		line("Status: %s", statusCode(o.reply))
		if o.remoteMTA != "" {
			line("Remote-MTA: dns; %s", clean(o.remoteMTA))
		}
		line("Diagnostic-Code: smtp; %s", clean(o.reply))
		line("Last-Attempt-Date: %s", date)
		if kind == dsnDelayed {
			// RFC 3464 2.3.9.
			line("Will-Retry-Until: %s", retryUntil.Format(time.RFC1123Z))
		}
	}
	line("")
	line("--%s", boundary)
	line("Content-Type: text/rfc822-headers")
	line("")
	b.Write(hdrs)
	line("")
	line("--%s--", boundary)
	return b.Bytes(), nil
}

// headerSection reads a message's header section with CRLF line endings.
func headerSection(r io.Reader) []byte {
	var out bytes.Buffer
	br := bufio.NewReader(io.LimitReader(r, maxDSNHeaders))
	for {
		line, err := br.ReadString('\n')
		l := strings.TrimRight(line, "\r\n")
		if l == "" {
			return out.Bytes()
		}
		out.WriteString(l + "\r\n")
		if err != nil {
			return out.Bytes()
		}
	}
}

// clean makes text safe for one header-like line of bounded length.
func clean(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r == 0 {
			return ' '
		}
		return r
	}, s)
	if len(s) > 900 {
		s = s[:900]
	}
	return s
}

// statusCode finds the RFC 3463 code in a reply ("550 5.1.1 ...") or
// derives one from the reply code (RFC 3464 2.3.4).
func statusCode(reply string) string {
	for _, f := range strings.Fields(reply) {
		if len(f) >= 5 && (f[0] == '4' || f[0] == '5') && f[1] == '.' && isEnhanced(f, int(f[0]-'0')*100) {
			return f
		}
	}
	if strings.HasPrefix(reply, "4") {
		return "4.0.0"
	}
	return "5.0.0"
}
