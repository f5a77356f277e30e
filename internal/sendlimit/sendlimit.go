// Package sendlimit is the trip switch for compromised accounts: the
// sending limits of authenticated submission, per account and per domain
// (messages per hour and per day, recipients per message, first-time
// external recipients per day, bounce ratio), and the suspension of an
// account's sending on a stronger signal (limits hit again and again,
// logins from many networks within an hour, a bounce ratio far over the
// normal).
//
// A Tracker keeps, per account, the times of recent messages, a bounded
// record of the external recipients the account has sent to (a hash of
// each address and when it was first seen), recent limit hits, login
// networks and delivery outcomes; and the set of suspended accounts. All
// of it is persisted to one file (written atomically, at most once per
// FlushEvery, and at once for a suspension), so a restart resets neither
// the first-time recipient record nor a suspension. Every table is
// bounded (Limits.MaxAccounts, Limits.KnownRecipients, and each window's
// own limit). The clock is passed in, so limits are tested without sleeping.
//
// The package knows nothing of SMTP: the router maps its errors to
// replies (RFC 3463 4.7.1 for a limit, 5.7.1 for a suspension, RFC 5321
// 4.5.3.1.10 452 4.5.3 for recipients over the per-message limit).
package sendlimit

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
)

// Limit names a sending limit; the names are the config keys.
type Limit string

const (
	MessagesPerHour       Limit = "messages_per_hour"
	MessagesPerDay        Limit = "messages_per_day"
	RcptsPerMessage       Limit = "recipients_per_message"
	NewRcptsPerDay        Limit = "new_recipients_per_day"
	DomainMessagesPerHour Limit = "domain_messages_per_hour"
	DomainMessagesPerDay  Limit = "domain_messages_per_day"
	BounceRatio           Limit = "bounce_ratio"
)

// AllLimits lists every limit (for metrics with a zero value).
var AllLimits = []Limit{MessagesPerHour, MessagesPerDay, RcptsPerMessage, NewRcptsPerDay, DomainMessagesPerHour, DomainMessagesPerDay, BounceRatio}

// Errors that decide behaviour.
var (
	// ErrSuspended: the account's sending is suspended until an operator
	// lifts it.
	ErrSuspended = errors.New("sendlimit: account sending suspended")
	// ErrLimit matches every *LimitError.
	ErrLimit = errors.New("sendlimit: sending limit reached")
)

// LimitError says which limit a message or recipient is over.
type LimitError struct {
	Limit   Limit
	Max     int    // the limit's value (for the bounce ratio: percent)
	Account string // the account, or the domain for domain limits
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("sendlimit: %s over %s (%d)", e.Account, e.Limit, e.Max)
}

// Is makes every *LimitError match ErrLimit.
func (e *LimitError) Is(target error) bool { return target == ErrLimit }

// Limits are the thresholds. Zero values take the defaults (Default); none
// of them means "unlimited".
type Limits struct {
	MessagesPerHour       int
	MessagesPerDay        int
	RcptsPerMessage       int
	NewRcptsPerDay        int
	DomainMessagesPerHour int
	DomainMessagesPerDay  int
	// BounceRatio: over this share of bounced recipients among the
	// account's final outcomes of the last 24 hours (once there are at
	// least BounceMinSample), new messages are refused.
	BounceRatio     float64
	BounceMinSample int

	// SuspendHits limit hits (at most one per transaction) within
	// SuspendWindow suspend the account.
	SuspendHits   int
	SuspendWindow time.Duration
	// SuspendNetworks distinct networks (/24, /48) logging in to the
	// account within an hour suspend it.
	SuspendNetworks int
	// SuspendBounceRatio: a bounce ratio over this (with BounceMinSample)
	// suspends the account.
	SuspendBounceRatio float64

	KnownRecipients int // first-time recipient record, per account
	MaxAccounts     int // accounts (and domains) tracked
}

// Default returns the default limits: well above what a person sends
// (mox's defaults are 1000 messages and 200 first-time recipients a day).
func Default() Limits {
	return Limits{
		MessagesPerHour: 200, MessagesPerDay: 1000, RcptsPerMessage: 100, NewRcptsPerDay: 200,
		DomainMessagesPerHour: 2000, DomainMessagesPerDay: 10000,
		BounceRatio: 0.3, BounceMinSample: 25,
		SuspendHits: 5, SuspendWindow: time.Hour, SuspendNetworks: 10, SuspendBounceRatio: 0.5,
		KnownRecipients: 1000, MaxAccounts: 10000,
	}
}

func (l Limits) withDefaults() Limits {
	d := Default()
	for _, p := range []struct{ v, d *int }{
		{&l.MessagesPerHour, &d.MessagesPerHour}, {&l.MessagesPerDay, &d.MessagesPerDay},
		{&l.RcptsPerMessage, &d.RcptsPerMessage}, {&l.NewRcptsPerDay, &d.NewRcptsPerDay},
		{&l.DomainMessagesPerHour, &d.DomainMessagesPerHour}, {&l.DomainMessagesPerDay, &d.DomainMessagesPerDay},
		{&l.BounceMinSample, &d.BounceMinSample}, {&l.SuspendHits, &d.SuspendHits},
		{&l.SuspendNetworks, &d.SuspendNetworks}, {&l.KnownRecipients, &d.KnownRecipients},
		{&l.MaxAccounts, &d.MaxAccounts},
	} {
		if *p.v <= 0 {
			*p.v = *p.d
		}
	}
	if l.BounceRatio <= 0 {
		l.BounceRatio = d.BounceRatio
	}
	if l.SuspendBounceRatio <= 0 {
		l.SuspendBounceRatio = d.SuspendBounceRatio
	}
	if l.SuspendWindow <= 0 {
		l.SuspendWindow = d.SuspendWindow
	}
	return l
}

// Suspension is an account whose sending is suspended.
type Suspension struct {
	Account string    `json:"account"`
	Since   time.Time `json:"since"`
	Reason  string    `json:"reason"`
	By      string    `json:"by"` // "auto" or "operator"
}

// Options configure a Tracker.
type Options struct {
	// Path is the state file; "" keeps everything in memory.
	Path string
	Log  *slog.Logger
	// OnSuspend runs (in its own goroutine) when the tracker suspends an
	// account by itself: hold its mail, end its sessions, alert.
	OnSuspend func(Suspension)
	// FlushEvery bounds how often the state file is rewritten; default 2s.
	FlushEvery time.Duration
}

const (
	hour = int64(time.Hour / time.Second)
	day  = 24 * hour
)

// account is what is known of one account (or, for the domain limits, of
// one domain: only Msgs). Times are Unix seconds.
type account struct {
	Msgs     []int64          `json:"msgs,omitempty"`    // messages of the last day, oldest first; at most MessagesPerDay
	New      []int64          `json:"new,omitempty"`     // first-time recipients of the last day; at most NewRcptsPerDay
	Known    map[string]int64 `json:"known,omitempty"`   // recipient hash -> first sent; at most KnownRecipients
	Hits     []int64          `json:"hits,omitempty"`    // limit hits within SuspendWindow; at most SuspendHits
	Logins   map[string]int64 `json:"logins,omitempty"`  // network -> last login; at most SuspendNetworks
	Outcomes [24][3]int64     `json:"outcomes,omitzero"` // per hour: [hour, delivered, bounced]
	Seen     int64            `json:"seen"`              // last activity (eviction)
}

// Tracker applies the limits. It is safe for concurrent use.
type Tracker struct {
	lim  Limits
	opts Options
	log  *slog.Logger

	mu        sync.Mutex
	accounts  map[string]*account
	domains   map[string]*account
	suspended map[string]Suspension
	hits      map[Limit]uint64
	dirty     bool
	closed    bool

	wmu  sync.Mutex // serialises writers of the file
	stop chan struct{}
	done chan struct{}
}

// state is the file's content.
type state struct {
	Accounts  map[string]*account   `json:"accounts"`
	Domains   map[string]*account   `json:"domains"`
	Suspended map[string]Suspension `json:"suspended"`
}

// Open loads the state file (a missing one is an empty state) and starts
// the background writer.
func Open(lim Limits, opts Options) (*Tracker, error) {
	t := &Tracker{lim: lim.withDefaults(), opts: opts, log: opts.Log,
		accounts: map[string]*account{}, domains: map[string]*account{}, suspended: map[string]Suspension{},
		hits: map[Limit]uint64{}, stop: make(chan struct{}), done: make(chan struct{})}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	if t.opts.FlushEvery <= 0 {
		t.opts.FlushEvery = 2 * time.Second
	}
	if err := t.load(); err != nil {
		return nil, err
	}
	go t.flusher()
	return t, nil
}

// Limits returns the limits in force.
func (t *Tracker) Limits() Limits { return t.lim }

func norm(a string) string { return strings.ToLower(strings.TrimSpace(a)) }

func domainOf(addr string) string {
	_, d, _ := strings.Cut(addr, "@")
	return d
}

// rcptKey is a recipient as the record keeps it: a hash, not the address.
func rcptKey(addr string) string {
	h := sha256.Sum256([]byte(norm(addr)))
	return fmt.Sprintf("%016x", binary.BigEndian.Uint64(h[:8]))
}

// get returns the account's record, creating it (evicting the least
// recently active one when the table is full).
func (t *Tracker) get(m map[string]*account, name string, now int64) *account {
	a := m[name]
	if a == nil {
		if len(m) >= t.lim.MaxAccounts {
			var oldest string
			var at int64
			for n, x := range m {
				if _, s := t.suspended[n]; !s && (oldest == "" || x.Seen < at) {
					oldest, at = n, x.Seen
				}
			}
			delete(m, oldest)
		}
		a = &account{}
		m[name] = a
	}
	a.Seen = now
	return a
}

// since keeps the times after cutoff (times are in order).
func since(ts []int64, cutoff int64) []int64 {
	i := 0
	for i < len(ts) && ts[i] <= cutoff {
		i++
	}
	return ts[i:]
}

func countAfter(ts []int64, cutoff int64) int {
	n := 0
	for _, x := range ts {
		if x > cutoff {
			n++
		}
	}
	return n
}

// checkMessage reports the limit one more message from acct would pass.
func (t *Tracker) checkMessage(acct string, now int64) error {
	a := t.get(t.accounts, acct, now)
	a.Msgs = since(a.Msgs, now-day)
	if countAfter(a.Msgs, now-hour) >= t.lim.MessagesPerHour {
		return &LimitError{Limit: MessagesPerHour, Max: t.lim.MessagesPerHour, Account: acct}
	}
	if len(a.Msgs) >= t.lim.MessagesPerDay {
		return &LimitError{Limit: MessagesPerDay, Max: t.lim.MessagesPerDay, Account: acct}
	}
	dom := domainOf(acct)
	d := t.get(t.domains, dom, now)
	d.Msgs = since(d.Msgs, now-day)
	if countAfter(d.Msgs, now-hour) >= t.lim.DomainMessagesPerHour {
		return &LimitError{Limit: DomainMessagesPerHour, Max: t.lim.DomainMessagesPerHour, Account: dom}
	}
	if len(d.Msgs) >= t.lim.DomainMessagesPerDay {
		return &LimitError{Limit: DomainMessagesPerDay, Max: t.lim.DomainMessagesPerDay, Account: dom}
	}
	if del, bnc := a.outcomes(now); del+bnc >= int64(t.lim.BounceMinSample) && float64(bnc) > t.lim.BounceRatio*float64(del+bnc) {
		return &LimitError{Limit: BounceRatio, Max: int(t.lim.BounceRatio * 100), Account: acct}
	}
	return nil
}

// outcomes sums the delivered and bounced recipients of the last 24 hours.
func (a *account) outcomes(now int64) (delivered, bounced int64) {
	for _, o := range a.Outcomes {
		if o[0] > now/hour-24 {
			delivered += o[1]
			bounced += o[2]
		}
	}
	return
}

// Tx is one message being submitted: Begin at MAIL FROM, Rcpt for each
// recipient, Commit at the end of DATA. A limit hit counts once per Tx
// towards suspension.
type Tx struct {
	t       *Tracker
	account string
	rcpts   int
	newKeys []string // first-time external recipients of this message
	hit     bool
}

// Begin starts a message from account (at MAIL FROM): ErrSuspended for a
// suspended account. The message limits are checked at the first
// recipient and again at Commit.
func (t *Tracker) Begin(account string, now time.Time) (*Tx, error) {
	tx := &Tx{t: t, account: norm(account)}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, s := t.suspended[tx.account]; s {
		return nil, ErrSuspended
	}
	return tx, nil
}

// Rcpt vets one more recipient; external is true for a recipient in a
// domain that is not local (only those count as first-time recipients).
// A refused recipient is not part of the message.
func (tx *Tx) Rcpt(addr string, external bool, now time.Time) error {
	t := tx.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, s := t.suspended[tx.account]; s {
		return ErrSuspended
	}
	if tx.rcpts == 0 {
		// One more message: over a message limit, every recipient is
		// refused (a message without recipients is never sent).
		if err := t.checkMessage(tx.account, now.Unix()); err != nil {
			return tx.hitLocked(err, now)
		}
	}
	if tx.rcpts >= t.lim.RcptsPerMessage {
		// Counted, not a step towards suspension: RFC 5321 4.5.3.1.10
		// has a conforming client send the rest in another transaction.
		t.hits[RcptsPerMessage]++
		return &LimitError{Limit: RcptsPerMessage, Max: t.lim.RcptsPerMessage, Account: tx.account}
	}
	if external {
		n := now.Unix()
		a := t.get(t.accounts, tx.account, n)
		key := rcptKey(addr)
		if _, known := a.Known[key]; !known && !slices.Contains(tx.newKeys, key) {
			a.New = since(a.New, n-day)
			if len(a.New)+len(tx.newKeys) >= t.lim.NewRcptsPerDay {
				return tx.hitLocked(&LimitError{Limit: NewRcptsPerDay, Max: t.lim.NewRcptsPerDay, Account: tx.account}, now)
			}
			tx.newKeys = append(tx.newKeys, key)
		}
	}
	tx.rcpts++
	return nil
}

// Commit records the message (and its first-time recipients) if it is
// still within the limits: other sessions of the account may have sent
// meanwhile.
func (tx *Tx) Commit(now time.Time) error {
	t := tx.t
	n := now.Unix()
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, s := t.suspended[tx.account]; s {
		return ErrSuspended
	}
	if err := t.checkMessage(tx.account, n); err != nil {
		return tx.hitLocked(err, now)
	}
	a := t.get(t.accounts, tx.account, n)
	a.New = since(a.New, n-day)
	fresh := 0
	for _, k := range tx.newKeys {
		if _, known := a.Known[k]; !known {
			fresh++
		}
	}
	if fresh > 0 && len(a.New)+fresh > t.lim.NewRcptsPerDay {
		return tx.hitLocked(&LimitError{Limit: NewRcptsPerDay, Max: t.lim.NewRcptsPerDay, Account: tx.account}, now)
	}
	a.Msgs = append(a.Msgs, n)
	d := t.get(t.domains, domainOf(tx.account), n)
	d.Msgs = append(d.Msgs, n)
	if a.Known == nil {
		a.Known = map[string]int64{}
	}
	for _, k := range tx.newKeys {
		if _, known := a.Known[k]; known {
			continue
		}
		if len(a.Known) >= t.lim.KnownRecipients {
			evictOldest(a.Known)
		}
		a.Known[k] = n
		a.New = append(a.New, n)
	}
	t.dirty = true
	return nil
}

func evictOldest(m map[string]int64) {
	var key string
	var at int64
	for k, v := range m {
		if key == "" || v < at {
			key, at = k, v
		}
	}
	delete(m, key)
}

// hitLocked counts a limit hit (once per transaction) and suspends the
// account after SuspendHits within SuspendWindow; it returns err, or
// ErrSuspended when this hit suspended the account.
func (tx *Tx) hitLocked(err error, now time.Time) error {
	if tx.hit {
		return err
	}
	tx.hit = true
	t := tx.t
	var le *LimitError
	errors.As(err, &le)
	t.hits[le.Limit]++
	n := now.Unix()
	a := t.get(t.accounts, tx.account, n)
	a.Hits = append(since(a.Hits, n-int64(t.lim.SuspendWindow/time.Second)), n)
	if len(a.Hits) > t.lim.SuspendHits {
		a.Hits = a.Hits[len(a.Hits)-t.lim.SuspendHits:]
	}
	t.dirty = true
	t.log.Info("sending limit reached", "account", tx.account, "limit", string(le.Limit), "max", le.Max, "hits", len(a.Hits))
	if len(a.Hits) >= t.lim.SuspendHits {
		t.suspendLocked(tx.account, fmt.Sprintf("sending limits hit %d times within %s (last: %s)", len(a.Hits), t.lim.SuspendWindow, le.Limit), "auto", now)
		return ErrSuspended
	}
	return err
}

// Login records a successful submission login from addr and suspends the
// account when logins came from SuspendNetworks distinct networks within
// an hour (credentials used from a botnet).
func (t *Tracker) Login(account string, addr netip.Addr, now time.Time) {
	account, n := norm(account), now.Unix()
	bits := 24
	if addr = addr.Unmap(); addr.Is6() {
		bits = 48
	}
	p, err := addr.Prefix(bits)
	if err != nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, s := t.suspended[account]; s {
		return
	}
	a := t.get(t.accounts, account, n)
	if a.Logins == nil {
		a.Logins = map[string]int64{}
	}
	for k, at := range a.Logins {
		if at <= n-hour {
			delete(a.Logins, k)
		}
	}
	a.Logins[p.String()] = n
	t.dirty = true
	if len(a.Logins) >= t.lim.SuspendNetworks {
		t.suspendLocked(account, fmt.Sprintf("logins from %d networks within an hour", len(a.Logins)), "auto", now)
		return
	}
}

// Outcome records the final outcome of one recipient of a message the
// account sent (delivered, or bounced: a permanent failure or expiry), and
// suspends the account when its bounce ratio passes SuspendBounceRatio.
func (t *Tracker) Outcome(account string, bounced bool, now time.Time) {
	account, n := norm(account), now.Unix()
	if account == "" {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	a := t.get(t.accounts, account, n)
	slot := &a.Outcomes[(n/hour)%24]
	if slot[0] != n/hour {
		*slot = [3]int64{n / hour, 0, 0}
	}
	if bounced {
		slot[2]++
	} else {
		slot[1]++
	}
	t.dirty = true
	if _, s := t.suspended[account]; s {
		return
	}
	if del, bnc := a.outcomes(n); del+bnc >= int64(t.lim.BounceMinSample) && float64(bnc) > t.lim.SuspendBounceRatio*float64(del+bnc) {
		t.suspendLocked(account, fmt.Sprintf("bounce ratio %d%% (%d of %d recipients in 24h)", bnc*100/(del+bnc), bnc, del+bnc), "auto", now)
	}
}

// Suspend suspends an account's sending (an operator's command). It
// reports false when it was suspended already.
func (t *Tracker) Suspend(account, reason string, now time.Time) (bool, error) {
	account = norm(account)
	if !strings.Contains(account, "@") {
		return false, fmt.Errorf("sendlimit: %q is not an address", account)
	}
	t.mu.Lock()
	if _, s := t.suspended[account]; s {
		t.mu.Unlock()
		return false, nil
	}
	if reason == "" {
		reason = "suspended by the operator"
	}
	t.suspended[account] = Suspension{Account: account, Since: now.UTC().Truncate(time.Second), Reason: reason, By: "operator"}
	t.dirty = true
	t.mu.Unlock()
	return true, t.Flush()
}

// suspendLocked suspends an account on the tracker's own decision.
func (t *Tracker) suspendLocked(account, reason, by string, now time.Time) {
	s := Suspension{Account: account, Since: now.UTC().Truncate(time.Second), Reason: reason, By: by}
	t.suspended[account] = s
	t.dirty = true
	// The stable line operators alert on.
	t.log.Warn("account sending suspended", "account", account, "reason", reason)
	go func() {
		if err := t.Flush(); err != nil {
			t.log.Error("sendlimit: saving the suspension", "account", account, "err", err)
		}
		if t.opts.OnSuspend != nil {
			t.opts.OnSuspend(s)
		}
	}()
}

// Unsuspend lifts a suspension, and forgets the hits that led to it (and
// the login networks), so the account starts afresh. It reports false when
// the account was not suspended.
func (t *Tracker) Unsuspend(account string) (bool, error) {
	account = norm(account)
	t.mu.Lock()
	if _, s := t.suspended[account]; !s {
		t.mu.Unlock()
		return false, nil
	}
	delete(t.suspended, account)
	if a := t.accounts[account]; a != nil {
		a.Hits, a.Logins = nil, nil
	}
	t.dirty = true
	t.mu.Unlock()
	return true, t.Flush()
}

// IsSuspended reports whether the account's sending is suspended.
func (t *Tracker) IsSuspended(account string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, s := t.suspended[norm(account)]
	return s
}

// Suspended lists the suspended accounts, oldest first.
func (t *Tracker) Suspended() []Suspension {
	t.mu.Lock()
	out := make([]Suspension, 0, len(t.suspended))
	for _, s := range t.suspended {
		out = append(out, s)
	}
	t.mu.Unlock()
	slices.SortFunc(out, func(a, b Suspension) int {
		if c := a.Since.Compare(b.Since); c != 0 {
			return c
		}
		return strings.Compare(a.Account, b.Account)
	})
	return out
}

// Hits returns the limit hits counted since the start, by limit.
func (t *Tracker) Hits() map[Limit]uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[Limit]uint64, len(AllLimits))
	for _, l := range AllLimits {
		out[l] = t.hits[l]
	}
	return out
}
