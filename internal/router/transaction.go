package router

import (
	"context"
	"errors"
	"io"
	"strings"
	"time"

	"github.com/agua-mail/agua/internal/accounts"
	"github.com/agua-mail/agua/internal/connsrv"
	"github.com/agua-mail/agua/internal/mailauth"
	"github.com/agua-mail/agua/internal/mailevents"
	"github.com/agua-mail/agua/internal/smtpd"
	"github.com/agua-mail/agua/internal/srs"
	"github.com/agua-mail/agua/shield"
)

// transaction is one SMTP transaction: the recipients resolved at RCPT
// time, split by target, kept here until Commit delivers them.
type transaction struct {
	r      *Router
	s      *smtpd.Session
	from   string
	utf8   bool
	local  []Recipient
	remote []Recipient // sent with the reverse-path as given
	// forward are external alias targets, sent with the reverse-path
	// rewritten by SRS in fwdDomain (the first forwarding alias's domain).
	forward   []Recipient
	fwdDomain string
	seen      map[string]bool // with many recipients: the addresses routed (see firstRoute)
	localBuf  [2]Recipient    // local's first recipients: no allocation for most messages
	msg       io.ReaderAt
	size      int64
	auth      *mailauth.Check  // sender authentication, on MX; nil otherwise
	policy    *mailauth.Policy // the auth policy of the recipients accepted so far; nil before the first
	folder    string           // where local recipients get the message; "" inbox
	events    []shield.Event   // for the shield (smtpd.Observer)
	limits    SendTx           // authenticated submission: the sending limits of this message
}

// limitRcpt asks the sending limits about one more recipient.
func (t *transaction) limitRcpt(rcpt string, external bool) error {
	if t.limits == nil {
		return nil
	}
	if err := t.limits.Rcpt(rcpt, external, t.r.cfg.Now()); err != nil {
		return limitReply(err)
	}
	return nil
}

var _ smtpd.Observer = (*transaction)(nil)

// AddRcpt resolves rcpt and routes it: to the local target for local
// mailboxes (all of an alias's, each once per message), to the remote
// target for other domains when relaying is allowed.
func (t *transaction) AddRcpt(ctx context.Context, rcpt string) error {
	users, err := t.r.resolve(ctx, rcpt)
	switch {
	case errors.Is(err, accounts.ErrNotLocal):
		return t.addRemote(ctx, rcpt)
	case srs.IsSRS(rcpt) && t.r.cfg.SRS != nil:
		// A bounce (or reply) to an address this server's forwarding
		// made, at a local domain: back to the original sender.
		return t.addReturn(ctx, rcpt, 0)
	case errors.Is(err, accounts.ErrNoSuchUser), errors.Is(err, accounts.ErrInvalid):
		return smtpd.ErrUnknownRecipient
	case err != nil:
		return smtpd.ErrTempLocal.WithCause(err)
	}
	// Every mailbox must take the message, or the recipient is refused.
	for _, u := range users {
		if u.Forward {
			if t.r.cfg.Remote == nil || t.r.cfg.SRS == nil {
				return errNoOutbound
			}
			if err := t.r.cfg.Remote.Check(ctx, Recipient{Address: u.Address}); err != nil {
				return err
			}
			continue
		}
		if err := t.r.cfg.Local.Check(ctx, Recipient{Address: u.Address, Quota: u.Quota}); err != nil {
			return err
		}
	}
	pol, err := t.authPolicy(rcpt)
	if err != nil {
		return err
	}
	if err := t.greylist(rcpt); err != nil {
		return err
	}
	if err := t.limitRcpt(rcpt, false); err != nil {
		return err
	}
	t.policy = pol
	for _, u := range users {
		if u.Forward {
			if t.firstRoute(u.Address) {
				t.forward = append(t.forward, Recipient{Address: u.Address})
				if t.fwdDomain == "" {
					t.fwdDomain = domainOf(rcpt)
				}
			}
			continue
		}
		if t.firstRoute(u.Address) {
			if t.local == nil {
				t.local = t.localBuf[:0]
			}
			t.local = append(t.local, Recipient{Address: u.Address, Quota: u.Quota})
		}
	}
	return nil
}

// errOtherPolicy defers a recipient whose domain's authentication policy
// differs from the transaction's: RFC 5321 4.5.3.1.10, the client sends
// the recipients refused with 452 in another transaction.
var errOtherPolicy = smtpd.Errorf(452, "4.5.3", "Recipient in a domain with another sender authentication policy; send to it in a separate transaction")

// authPolicy returns the authentication policy of rcpt's domain, or
// errOtherPolicy when recipients under another one were accepted. nil
// when the transaction is not authenticated.
func (t *transaction) authPolicy(rcpt string) (*mailauth.Policy, error) {
	if t.auth == nil {
		return nil, nil
	}
	p := t.r.cfg.AuthPolicy
	if dp, ok := t.r.cfg.DomainPolicies[domainOf(rcpt)]; ok {
		p = dp
	}
	if t.policy != nil && *t.policy != p {
		return nil, errOtherPolicy
	}
	return &p, nil
}

// greylist defers the first attempt of a triplet (RFC 6647) of mail that
// is not this site's own or a known-good client's.
func (t *transaction) greylist(rcpt string) error {
	g := t.r.cfg.Greylist
	s := t.s
	if g == nil || s.Mode != smtpd.ModeMX || s.User != "" || s.Trusted || s.KnownGood {
		return nil
	}
	ip := connsrv.IP(s.RemoteAddr)
	if !ip.IsValid() {
		return nil
	}
	now := t.r.cfg.Now()
	v := g.Check(ip, t.from, rcpt, now)
	if v.Pass {
		if v.Why == "retried" {
			t.r.cfg.Log.Info("greylist: retry passed", "session", s.ID, "client", ip, "from", t.from, "rcpt", rcpt)
		}
		return nil
	}
	wait := max(v.Retry.Sub(now).Round(time.Second), time.Second)
	t.r.cfg.Log.Info("greylist: deferred", "session", s.ID, "client", ip, "from", t.from, "rcpt", rcpt, "why", v.Why, "retry_in", wait)
	// RFC 6647 2.1: a temporary failure; RFC 3463 4.7.1, delivery not
	// authorized (yet).
	return smtpd.Errorf(451, "4.7.1", "Greylisted: a new sender and recipient for your network; please retry in %s", wait)
}

// addRemote applies the relay policy: RFC 5321 3.6.2, an MX relays for no
// one; an authenticated submission (RFC 6409) may send out through the
// remote target, when there is one.
func (t *transaction) addRemote(ctx context.Context, rcpt string) error {
	if t.s.Mode == smtpd.ModeMX || t.s.User == "" {
		return smtpd.ErrRelayDenied
	}
	remote := t.r.cfg.Remote
	if remote == nil {
		return errNoOutbound
	}
	if err := remote.Check(ctx, Recipient{Address: rcpt}); err != nil {
		return err
	}
	if err := t.limitRcpt(rcpt, true); err != nil {
		return err
	}
	if t.firstRoute(rcpt) {
		t.remote = append(t.remote, Recipient{Address: rcpt})
	}
	return nil
}

// addReturn reverses an SRS address (internal/srs: hash and age checked)
// and routes the message to the original sender, whatever the relay
// policy: the address proves that this server forwarded mail from that
// sender lately, so the bounce goes only where the forwarded mail came
// from.
//
// An SRS1 address reverses to the first forwarder's SRS0 address, which is
// reversed here too when that forwarder is this server (depth: at most
// one more step).
func (t *transaction) addReturn(ctx context.Context, rcpt string, depth int) error {
	orig, err := t.r.cfg.SRS.Reverse(rcpt)
	if err != nil {
		return errBadSRS.WithCause(err)
	}
	if t.r.cfg.Remote == nil {
		return errNoOutbound
	}
	if _, err := t.r.resolve(ctx, orig); !errors.Is(err, accounts.ErrNotLocal) {
		// The original sender is ours, or an SRS address of ours (an
		// SRS1 reversed): deliver it as any local recipient.
		if srs.IsSRS(orig) {
			if depth > 0 {
				return errBadSRS
			}
			return t.addReturn(ctx, orig, depth+1)
		}
		return t.AddRcpt(ctx, orig)
	}
	if err := t.r.cfg.Remote.Check(ctx, Recipient{Address: orig}); err != nil {
		return err
	}
	if t.firstRoute(orig) {
		t.remote = append(t.remote, Recipient{Address: orig})
	}
	return nil
}

// seenScan is how many routed recipients firstRoute scans before it keeps
// them in a map.
const seenScan = 16

// firstRoute records addr as routed and reports whether it was not yet:
// each mailbox and remote address gets the message once. The addresses
// routed are those of local, remote and forward; with few of them (most
// messages have one or two) it scans them, which allocates nothing, and
// past seenScan it keeps them in a map.
func (t *transaction) firstRoute(addr string) bool {
	if t.seen == nil {
		n := len(t.local) + len(t.remote) + len(t.forward)
		for _, rs := range [...][]Recipient{t.local, t.remote, t.forward} {
			for _, r := range rs {
				if r.Address == addr {
					return false
				}
			}
		}
		if n < seenScan {
			return true
		}
		t.seen = make(map[string]bool, 2*n)
		for _, rs := range [...][]Recipient{t.local, t.remote, t.forward} {
			for _, r := range rs {
				t.seen[r.Address] = true
			}
		}
	}
	if t.seen[addr] {
		return false
	}
	t.seen[addr] = true
	return true
}

func domainOf(addr string) string {
	return strings.ToLower(addr[strings.LastIndexByte(addr, '@')+1:])
}

// Body keeps the message for Commit, authenticated first on MX: the
// Authentication-Results field is added (and forged ones dropped), and the
// policy may refuse the message, defer it or send it to the Junk folder.
func (t *transaction) Body(ctx context.Context, msg io.ReaderAt, size int64) error {
	t.msg, t.size = msg, size
	if t.auth == nil {
		return nil
	}
	res, err := t.auth.Finish(ctx, msg, size)
	t.auth.Close()
	if errors.Is(err, mailauth.ErrHeaderTooLong) {
		// RFC 3463 5.3.4: too big for the system. A field past the
		// bound could not be checked for a forged result.
		return smtpd.Errorf(552, "5.3.4", "Message header section is larger than %d bytes", mailauth.MaxHeader)
	}
	if err != nil {
		return smtpd.ErrTempLocal.WithCause(err)
	}
	pol := t.r.cfg.AuthPolicy
	if t.policy != nil {
		pol = *t.policy
	}
	v := res.Decide(pol)
	t.r.cfg.Log.Info("mail auth", "session", t.s.ID, "client", t.s.RemoteAddr.String(),
		"spf", string(res.SPF.Result), "spf_domain", res.SPF.Domain, "dkim", dkimSummary(res.DKIM),
		"dmarc", res.DMARC.Result, "from_domain", res.DMARC.Domain, "policy", string(res.DMARC.Policy),
		"action", v.Action.String(), "forged_ar", res.Forged())
	if v.DMARCFail {
		t.events = append(t.events, mailevents.DMARCFail)
	}
	t.events = append(t.events, mailevents.AuthResults(string(res.SPF.Result), res.DMARC.Result)...)
	switch v.Action {
	case mailauth.Reject:
		// RFC 7489 6.7 / RFC 7208 8.4: refuse at the end of DATA, with
		// the reason.
		return smtpd.Errorf(550, v.Code, "%s", v.Reason)
	case mailauth.Defer:
		return smtpd.Errorf(451, v.Code, "%s", v.Reason)
	case mailauth.Junk:
		t.folder = t.r.cfg.JunkFolder
	}
	t.msg, t.size = res.Message(msg, size)
	return nil
}

// dkimSummary is "pass:example.org,fail:other.example" for the log.
func dkimSummary(ds []mailauth.DKIMResult) string {
	if len(ds) == 0 {
		return "none"
	}
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = d.Result + ":" + d.Domain
	}
	return strings.Join(parts, ",")
}

// Observed returns the DMARC failure and the SPF/DMARC results for the
// shield (smtpd.Observer).
func (t *transaction) Observed() []shield.Event { return t.events }

// Commit delivers the message to every recipient, or to none (issue 12:
// one transaction). With a remote target that is a Preparer (the outbound
// queue) the steps are:
//
//  1. the remote copy is written to the queue but not committed (signed,
//     on disk, invisible to delivery);
//  2. local delivery, durable: a refusal (quota) or failure aborts the
//     queue write, so nothing was delivered or queued;
//  3. the queue write is committed (a rename and one sync).
//
// The failure window is step 3 alone: if the commit fails, or the process
// dies between the local delivery's sync and the queue's, the local
// recipients have the message and the remote ones do not, the client
// gets no 250 and sends again, and the local recipients get it twice. No
// order avoids a window with two stores; this one puts it in the step that
// fails least (a rename in a folder already written to), never loses mail
// that was acknowledged, and never sends a remote copy of a message the
// client was told failed.
//
// A remote target that cannot prepare is given the message after local
// delivery (the same window, wider: its whole write).
func (t *transaction) Commit(ctx context.Context) error {
	if t.msg == nil {
		return errors.New("router: commit without a body")
	}
	// The sending limits count the message once it is certain to be
	// delivered but for a failure of ours (another session of the
	// account may have used up the limit meanwhile).
	if t.limits != nil {
		if err := t.limits.Commit(t.r.cfg.Now()); err != nil {
			return limitReply(err)
		}
	}
	env := func(rcpts []Recipient) Envelope {
		return Envelope{From: t.from, Rcpts: rcpts, UTF8: t.utf8, Account: t.s.User}
	}
	local := t.local
	if t.folder != "" {
		local = make([]Recipient, len(t.local))
		for i, r := range t.local {
			r.Folder = t.folder
			local[i] = r
		}
	}
	// The remote copies: one with the sender as given, one for the
	// forwarded recipients with the sender rewritten (SRS).
	var remotes []Envelope
	if len(t.remote) > 0 {
		remotes = append(remotes, env(t.remote))
	}
	if len(t.forward) > 0 {
		from, err := t.r.cfg.SRS.Forward(t.from, t.fwdDomain)
		if err != nil {
			return smtpd.ErrTempLocal.WithCause(err)
		}
		e := env(t.forward)
		e.From = from
		remotes = append(remotes, e)
	}
	var prepared []Prepared
	abort := func() {
		for _, p := range prepared {
			p.Abort()
		}
	}
	if p, ok := t.r.cfg.Remote.(Preparer); ok {
		for _, e := range remotes {
			pr, err := p.Prepare(ctx, e, t.msg, t.size)
			if err != nil {
				abort()
				return err
			}
			prepared = append(prepared, pr)
		}
	}
	if len(t.local) > 0 {
		if err := t.r.cfg.Local.Deliver(ctx, env(local), t.msg, t.size); err != nil {
			abort()
			return err
		}
	}
	if prepared != nil {
		for _, p := range prepared {
			if err := p.Commit(ctx); err != nil {
				return err
			}
		}
	} else {
		for _, e := range remotes {
			if err := t.r.cfg.Remote.Deliver(ctx, e, t.msg, t.size); err != nil {
				return err
			}
		}
	}
	t.msg = nil
	return nil
}

// Abort forgets the transaction; nothing was delivered. Lookups still
// running stop.
func (t *transaction) Abort() {
	t.msg = nil
	if t.auth != nil {
		t.auth.Close()
	}
}
