// Package router decides where accepted mail goes and holds the mail rules
// around it: the relay policy (an MX never relays, RFC 5321 3.6.2; an
// authenticated submission may send out, RFC 6409), the postmaster fallback
// (RFC 5321 4.1.1.3), the quota pre-check at RCPT, sender ownership on
// submission (RFC 6409 6.1) and, in the local target, the final-delivery
// trace fields Return-Path and Delivered-To (RFC 5321 4.4).
//
// A Router is the smtpd.Backend: each MAIL FROM starts a transaction that
// resolves every RCPT TO through the accounts (accounts.Lookup) and routes it
// to a Target. Local mailboxes go to the Local target (the Maildir store);
// addresses in domains that are not local go to the Remote target, the
// outbound queue, when one is configured (see Queue), and are refused with
// 550 5.3.0 when none is. An alias to an external address forwards the
// message through the outbound queue with its sender rewritten by SRS, and
// a bounce to such a rewritten address (verified, not expired) goes back to
// the original sender; forged or expired ones get 550 5.1.1. The session's own Received field is added by
// smtpd, the server that receives (RFC 5321 4.4).
//
// Mail arriving on MX from a client that is neither authenticated nor
// allowlisted is authenticated (internal/mailauth: SPF from MAIL FROM on,
// DKIM and DMARC at the end of DATA) when Config.Auth is set: the message
// gets an Authentication-Results field (RFC 8601), and the policy refuses
// it (550 5.7.1), defers it (451 4.7.0) or delivers it to the recipients'
// Junk folder.
//
// With Config.Greylist, the same unauthenticated MX mail, from a client that
// is neither allowlisted nor known-good to the shield, is greylisted at RCPT
// TO (RFC 6647) once the recipient is known to exist, so that unknown
// recipients still get their 550.
package router

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/agua-mail/agua/internal/accounts"
	"github.com/agua-mail/agua/internal/connsrv"
	"github.com/agua-mail/agua/internal/greylist"
	"github.com/agua-mail/agua/internal/mailauth"
	"github.com/agua-mail/agua/internal/smtpd"
)

// A Target takes messages for the recipients routed to it: the local
// Maildir store, or the outbound queue.
type Target interface {
	// Check vets one recipient at RCPT time, before the message arrives;
	// nil accepts it. The local target defers a mailbox already over quota.
	Check(ctx context.Context, rcpt Recipient) error
	// Deliver makes msg durable for every recipient of env, or for none,
	// and returns only once it is safe. msg is the message as received,
	// the Received field first. Errors that are *smtpd.Error are sent as
	// their reply; others become 451 4.3.0.
	Deliver(ctx context.Context, env Envelope, msg io.ReaderAt, size int64) error
}

// Recipient is one recipient as routed to a target.
type Recipient struct {
	Address string // local target: the mailbox; remote: the address as given at RCPT
	Quota   int64  // local mailboxes: bytes allowed; 0 for remote recipients
	// Folder is the mailbox folder the local target delivers to: "" is
	// the inbox, Config.JunkFolder a message quarantined by DMARC.
	Folder string
}

// Envelope is what a target delivers: the reverse-path and its recipients,
// each mailbox once.
type Envelope struct {
	From    string // "" for the null reverse-path
	Rcpts   []Recipient
	UTF8    bool   // MAIL FROM carried SMTPUTF8 (RFC 6531)
	Account string // the authenticated submitter; "" on MX
}

// A Preparer is a Target that can write a message without making it
// deliverable yet (the outbound queue: queue.Begin). The router prepares
// the remote copy before local delivery and commits it after, so that
// one message to local and remote recipients is one transaction.
type Preparer interface {
	Target
	Prepare(ctx context.Context, env Envelope, msg io.ReaderAt, size int64) (Prepared, error)
}

// Prepared is a message written by a Preparer: Commit makes it durable and
// visible (returning only once it is), Abort drops it.
type Prepared interface {
	Commit(ctx context.Context) error
	Abort()
}

// Config is what a Router needs.
type Config struct {
	// Hostname is the server's name; the bare "postmaster" is postmaster
	// at this domain when it is local.
	Hostname string
	Accounts accounts.Lookup
	Local    Target // required: the local mailboxes
	Remote   Target // optional: the outbound queue; nil refuses remote recipients

	// Auth authenticates inbound MX mail; nil checks nothing.
	Auth *mailauth.Checker
	// AuthPolicy is what the results decide.
	AuthPolicy mailauth.Policy
	// DomainPolicies override AuthPolicy for mail to a recipient domain
	// (lower case). One transaction is judged under one policy: a
	// recipient under another gets 452 4.5.3 and comes in another
	// transaction.
	DomainPolicies map[string]mailauth.Policy
	// JunkFolder receives quarantined mail. Default "Junk".
	JunkFolder string
	// Log receives one line per authenticated message. nil: discarded.
	Log *slog.Logger
	// SRS rewrites the sender of forwarded mail and reverses bounces to
	// the rewritten addresses (internal/srs); nil: forwarding aliases are
	// refused like remote recipients without a queue.
	SRS SRS
	// Limits, optional, are the sending limits of authenticated
	// submission (internal/sendlimit); nil: none.
	Limits SendLimits
	// Greylist, optional, defers the first attempt of each triplet of
	// unauthenticated MX mail (internal/greylist); nil: none.
	Greylist Greylist
	Now      func() time.Time // the limits' and greylist's clock; time.Now
}

// Greylist decides on one delivery attempt (*greylist.Greylist).
type Greylist interface {
	Check(addr netip.Addr, from, rcpt string, now time.Time) greylist.Verdict
}

// SRS is the Sender Rewriting Scheme as the router uses it (*srs.SRS).
type SRS interface {
	Forward(sender, domain string) (string, error)
	Reverse(addr string) (string, error)
}

// Router routes SMTP transactions. It is safe for concurrent use.
type Router struct {
	cfg Config
}

var _ smtpd.Backend = (*Router)(nil)

// errBadSRS refuses an SRS address whose hash does not verify (forged)
// or that is too old: it is no bounce of a message this server forwarded,
// and an MX relays for no one (RFC 5321 3.6.2).
var errBadSRS = smtpd.Errorf(550, "5.1.1", "Invalid or expired SRS address")

// errNoOutbound refuses a remote recipient on submission while no outbound
// queue is configured.
var errNoOutbound = smtpd.Errorf(550, "5.3.0", "Outbound delivery is not available on this server; only local recipients are accepted")

// New returns a router.
func New(cfg Config) (*Router, error) {
	if cfg.Accounts == nil || cfg.Local == nil {
		return nil, errors.New("router: accounts and a local target are required")
	}
	if cfg.JunkFolder == "" {
		cfg.JunkFolder = "Junk"
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Router{cfg: cfg}, nil
}

// Authenticate checks submission credentials against the accounts.
func (r *Router) Authenticate(ctx context.Context, s *smtpd.Session, user, pass string) (string, error) {
	u, err := r.cfg.Accounts.Authenticate(ctx, user, pass)
	switch {
	case err == nil:
		return u.Address, nil
	case errors.Is(err, accounts.ErrAuthFailed), errors.Is(err, accounts.ErrInvalid):
		return "", smtpd.ErrAuthFailed
	default:
		return "", smtpd.ErrTempAuth.WithCause(err)
	}
}

// NewTransaction vets the sender and starts a transaction. On MX anyone may
// send, and the sender authentication checks start here (SPF runs while
// the recipients and data arrive); on submission the user must own the
// address or an alias of theirs (RFC 6409 6.1), and the null reverse-path
// is refused.
func (r *Router) NewTransaction(ctx context.Context, s *smtpd.Session, mail smtpd.Mail) (smtpd.Transaction, error) {
	t := &transaction{r: r, s: s, from: mail.From, utf8: mail.SMTPUTF8}
	if s.Mode != smtpd.ModeMX {
		if err := r.checkSender(ctx, s.User, mail.From); err != nil {
			return nil, err
		}
		if r.cfg.Limits != nil && s.User != "" {
			lim, err := r.cfg.Limits.Begin(s.User, r.cfg.Now())
			if err != nil {
				return nil, limitReply(err)
			}
			t.limits = lim
		}
	}
	// Authenticated submission and allowlisted relays are this site's own
	// mail: their senders are not checked (RFC 7489 does not apply to mail
	// a domain's own servers relay).
	if r.cfg.Auth != nil && s.Mode == smtpd.ModeMX && s.User == "" && !s.Trusted {
		t.auth = r.cfg.Auth.Begin(ctx, mailauth.Envelope{IP: connsrv.IP(s.RemoteAddr), Helo: s.Helo, From: mail.From})
	}
	return t, nil
}

func (r *Router) checkSender(ctx context.Context, user, from string) error {
	if from == "" {
		return smtpd.ErrSenderNotOwned
	}
	ok, err := r.cfg.Accounts.CanSendAs(ctx, user, from)
	if err != nil && !errors.Is(err, accounts.ErrInvalid) && !errors.Is(err, accounts.ErrNotFound) {
		return smtpd.ErrTempLocal.WithCause(err)
	}
	if !ok {
		return smtpd.ErrSenderNotOwned
	}
	return nil
}

// resolve maps a recipient to local mailboxes. The bare "postmaster"
// (RFC 5321 4.1.1.3: must be accepted) is postmaster at the server's host
// name when that is a local domain, else at the first local domain.
func (r *Router) resolve(ctx context.Context, rcpt string) ([]accounts.User, error) {
	acc := r.cfg.Accounts
	if !strings.EqualFold(rcpt, "postmaster") {
		return acc.Resolve(ctx, rcpt)
	}
	users, err := acc.Resolve(ctx, "postmaster@"+r.cfg.Hostname)
	if !errors.Is(err, accounts.ErrNotLocal) {
		return users, err
	}
	domains, err := acc.ListDomains(ctx)
	if err != nil {
		return nil, err
	}
	if len(domains) == 0 {
		return nil, accounts.ErrNoSuchUser
	}
	return acc.Resolve(ctx, "postmaster@"+domains[0])
}
