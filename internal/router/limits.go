package router

import (
	"errors"
	"time"

	"github.com/agua-mail/agua/internal/sendlimit"
	"github.com/agua-mail/agua/internal/smtpd"
)

// SendLimits are the sending limits of authenticated submission, as the
// router asks them (internal/sendlimit implements them). Begin runs at
// MAIL FROM (a suspended account is refused there), the transaction's Rcpt
// at each RCPT (message and recipient limits), its Commit at the end of
// DATA before anything is delivered (the limits again: other sessions of
// the account may have sent meanwhile). Errors are sendlimit.ErrSuspended or a
// *sendlimit.LimitError; the router turns them into replies.
type SendLimits interface {
	Begin(account string, now time.Time) (SendTx, error)
}

// SendTx is one message as the sending limits see it.
type SendTx interface {
	Rcpt(addr string, external bool, now time.Time) error
	Commit(now time.Time) error
}

// limitReply turns an error of the sending limits into the reply. Every
// one of them matches smtpd.ErrSendLimit or smtpd.ErrSendSuspended, which
// the session reports to the shield (outbound_abuse).
func limitReply(err error) error {
	if errors.Is(err, sendlimit.ErrSuspended) {
		return smtpd.ErrSendSuspended
	}
	var le *sendlimit.LimitError
	if !errors.As(err, &le) {
		return smtpd.ErrTempLocal.WithCause(err)
	}
	lim := smtpd.ErrSendLimit
	switch le.Limit {
	case sendlimit.RcptsPerMessage:
		// RFC 5321 4.5.3.1.10: 452 for the recipients over the limit;
		// the client sends them in another transaction.
		return lim.Withf(452, "4.5.3", "Too many recipients for one message (at most %d); send the rest in another message", le.Max)
	case sendlimit.NewRcptsPerDay:
		return lim.Withf(451, "4.7.1", "Sending limit reached: at most %d new recipients per day from this account; try again later", le.Max)
	case sendlimit.MessagesPerHour:
		return lim.Withf(451, "4.7.1", "Sending limit reached: at most %d messages per hour from this account; try again later", le.Max)
	case sendlimit.MessagesPerDay:
		return lim.Withf(451, "4.7.1", "Sending limit reached: at most %d messages per day from this account; try again later", le.Max)
	case sendlimit.DomainMessagesPerHour:
		return lim.Withf(451, "4.7.1", "Sending limit reached: at most %d messages per hour from your domain; try again later", le.Max)
	case sendlimit.DomainMessagesPerDay:
		return lim.Withf(451, "4.7.1", "Sending limit reached: at most %d messages per day from your domain; try again later", le.Max)
	case sendlimit.BounceRatio:
		return lim.Withf(451, "4.7.1", "Sending limit reached: over %d%% of this account's recent mail bounced; contact the postmaster", le.Max)
	}
	return lim
}
