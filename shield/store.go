package shield

import (
	"context"
	"errors"
	"net/netip"
	"time"
)

// StateStore holds the shield state that must outlive a process and that
// several nodes serving the same clients share: bans (with their TTL and
// escalation level), offender memory (escalation history, Config.OffenderTTL),
// known-good addresses and lockdown; and it carries failed logins between
// nodes for the per-account delay. [LocalStore], in this process's memory
// and persisted as JSON in Options.StateDir, is the default; a shared store
// (Redis, issue 16) implements the same interface and passes the same
// conformance suite (shield/statetest).
//
// # How the shield uses it
//
// The shield never asks the store while it decides. Accept-time decisions,
// reports and Why read the shield's own local snapshot (an immutable ban
// table swapped atomically, bounded known-good and offender tables, an
// atomic lockdown flag); a slow or unreachable store cannot slow or refuse a
// client. The store is
//   - read whole with Load when the Shield starts, and again when Watch
//     delivers ChangeResync;
//   - written through a bounded queue by one goroutine: every ban, unban,
//     escalation, known-good mark or revocation, lockdown change and
//     failed login (for AccountDelay) the Shield makes. A full queue drops the write (counted in
//     Stats.StoreDropped) rather than block a session; a write that fails
//     is logged once per interval, not once per event;
//   - watched: changes other nodes make arrive through Watch and are
//     applied to the local snapshot (a ban also closes the connections it
//     covers).
//
// # Consistency
//
//   - Durable: bans and lockdown. A ban written (and Flush returned) is
//     still there, with its Expires, after every handle is closed and the
//     store reopened, until it expires. Lockdown likewise.
//   - Durable but best effort: offender memory and known-good addresses.
//     Losing them costs an escalation level or a known-good status, never a
//     wrong refusal.
//   - Not stored: failed logins (AddAccountFailure) are only passed on to
//     the other nodes, which count them in their own windows.
//   - Counters that add up (AddCounts): behaviour thresholds count every
//     node's events, so an attacker spreading guesses over N nodes is
//     banned at the same total as on one node. Best effort: a lost batch
//     lets an attacker a few more tries, never refuses anyone. See
//     AddCounts for the window and the overshoot.
//   - Eventually consistent between nodes: a change made through one handle
//     reaches the Watch callbacks of every other handle on the same state,
//     after a delay the implementation documents (LocalStore: at once).
//     Two nodes that ban the same offender within that delay may both
//     compute the same escalation level: a ban is then one level short,
//     never wrong.
//   - Last writer wins, per key: PutBan for a prefix replaces the ban on
//     exactly that prefix; PutOffender and MarkKnownGood replace the
//     record of their key.
//   - Expiry is the store's: records whose Expires (known-good: Until) has
//     passed are never returned; no one needs to delete them.
//   - Bounded: a store keeps at most a configured number of records of
//     each kind. When bans are full it returns ErrStoreFull; offenders and
//     known-good addresses forget the least recently used.
//
// # Watch
//
// Watch delivers the changes made through other handles, never the
// caller's own, in the order each handle made them. Callbacks run one at a
// time per handle and must not block for long; they may call the store. A
// store that may have lost changes (a reconnect after a network failure, a
// restarted server with an empty database) delivers ChangeResync: the
// watcher reloads everything with Load (and a shared store's nodes then
// write their own active bans back, which is how a restarted Redis learns
// them again).
//
// All methods are safe for concurrent use.
type StateStore interface {
	// Load returns every unexpired record and the lockdown flag.
	Load(ctx context.Context) (State, error)

	// PutBan stores b, replacing any ban on exactly b.Prefix.
	PutBan(ctx context.Context, b BanRecord) error
	// DeleteBan removes the ban on exactly p; removing none is no error.
	DeleteBan(ctx context.Context, p netip.Prefix) error
	// Bans returns the unexpired bans, in no particular order.
	Bans(ctx context.Context) ([]BanRecord, error)

	// PutOffender stores the escalation history of o.Prefix.
	PutOffender(ctx context.Context, o OffenderRecord) error
	// Offender returns the unexpired history of exactly p.
	Offender(ctx context.Context, p netip.Prefix) (OffenderRecord, bool, error)

	// MarkKnownGood makes addr known-good until the given time.
	MarkKnownGood(ctx context.Context, addr netip.Addr, until time.Time) error
	// RevokeKnownGood takes known-good status from every address in p.
	RevokeKnownGood(ctx context.Context, p netip.Prefix) error
	// KnownGood returns until when addr is known-good, if it is.
	KnownGood(ctx context.Context, addr netip.Addr) (time.Time, bool, error)

	// AddAccountFailure tells every other node of a failed login on
	// account (lower-cased) at the given time, so that AccountDelay counts
	// failures from every node. Nothing is stored: a lost failure shortens
	// one delay, never locks anyone out.
	AddAccountFailure(ctx context.Context, account string, at time.Time) error

	// AddCounts adds every node's behaviour events to shared counters and
	// returns, for each count in order, the total of every node's events
	// within the sliding window ending at at. A node calls it with what
	// it counted since its last call (a batch every ~100 ms, never on the
	// accept path).
	//
	// The window: counters live in windows of Count.Window aligned on the
	// Unix epoch (k = at / Window); the total is the current window's
	// count plus the previous window's weighted by the part of it still
	// inside the sliding window (floor(prev × (Window − elapsed) /
	// Window)), the sliding-window estimate that gives no free double
	// burst at a window's edge and costs two integers per subject.
	//
	// Crossing: when a count that adds events makes its total reach
	// Count.Limit, the store forgets the counter (both windows) in the
	// same atomic step and reports Crossed to that caller only: exactly
	// one node bans, the others learn of the ban through Watch.
	AddCounts(ctx context.Context, at time.Time, counts []Count) ([]CountTotal, error)

	// BanLog returns the bans (PutBan: Time is the ban's Created) and
	// unbans (DeleteBan of a ban that was there: Time is when) that every
	// node made since the given time, oldest first, for reports that cover
	// a cluster. The log is bounded (the oldest entries go first); a ban
	// written again (a resync) may appear twice with the same Time.
	BanLog(ctx context.Context, since time.Time) ([]BanEvent, error)

	// SetLockdown turns lockdown on or off for every node.
	SetLockdown(ctx context.Context, on bool) error
	// Lockdown reports whether lockdown is on.
	Lockdown(ctx context.Context) (bool, error)

	// Watch calls fn for every change made through other handles on the
	// same state, until stop is called. stop waits for a running fn.
	Watch(fn func(Change)) (stop func())

	// Flush makes what was written durable (LocalStore: writes the file).
	Flush(ctx context.Context) error
	// Close flushes and releases the handle.
	Close() error
}

// BanLogEvent is the log entry of a stored ban, for BanLog.
func BanLogEvent(b BanRecord) BanEvent {
	return BanEvent{Time: b.Created, Kind: "ban", Prefix: b.Prefix, Reason: b.Reason, Action: b.Action,
		TTL: b.Expires.Sub(b.Created), Count: b.Count, Manual: b.Manual, Node: b.Node}
}

// Count is one shared behaviour counter's change, for AddCounts.
type Count struct {
	Name    string        // the threshold's name: an event ("auth_failure") or network_<event>
	Subject netip.Prefix  // the address (/32, /128) or the network counted
	Window  time.Duration // the threshold's window (> 0)
	Limit   int64         // the threshold's count; 0 never crosses
	Add     int64         // events since the caller's last AddCounts
	Reset   bool          // forget the counter before adding (the caller banned, or a reset event such as a good login)
}

// CountTotal is AddCounts' answer for one Count.
type CountTotal struct {
	Total   int64 // every node's events in the sliding window, this call's included
	Crossed bool  // this call made Total reach Limit: the caller bans; the counter starts again from zero
}

// CounterWindow returns the window index of at (milliseconds since the
// Unix epoch divided by w) and how far into that window at is, for stores
// implementing AddCounts.
func CounterWindow(at time.Time, w time.Duration) (k int64, elapsed time.Duration) {
	wm := max(w.Milliseconds(), 1)
	ms := at.UnixMilli()
	k = ms / wm
	return k, time.Duration(ms-k*wm) * time.Millisecond
}

// SlidingTotal is the sliding-window estimate AddCounts returns: cur plus
// prev weighted by the part of the previous window still inside a window
// of length w that ends elapsed into the current one.
func SlidingTotal(cur, prev int64, w, elapsed time.Duration) int64 {
	wm, em := max(w.Milliseconds(), 1), elapsed.Milliseconds()
	if em >= wm || prev <= 0 {
		return cur
	}
	return cur + prev*(wm-em)/wm
}

// ErrStoreFull is returned by PutBan when the store holds as many bans as
// it may.
var ErrStoreFull = errors.New("shield state store full")

// State is the whole of a StateStore's state.
type State struct {
	Bans      []BanRecord       `json:"bans"`
	Offenders []OffenderRecord  `json:"offenders"`
	KnownGood []KnownGoodRecord `json:"known_good"`
	Lockdown  bool              `json:"lockdown,omitempty"`
}

// BanRecord is one ban as stored.
type BanRecord struct {
	Prefix    netip.Prefix `json:"prefix"`
	Reason    string       `json:"reason"` // event name, network_<name>, or the operator's text
	Action    Action       `json:"action"`
	Manual    bool         `json:"manual,omitempty"`
	Temporary bool         `json:"temporary,omitempty"`
	Created   time.Time    `json:"created"`
	Expires   time.Time    `json:"expires"`
	Count     int          `json:"count"`          // escalation level
	Node      string       `json:"node,omitempty"` // the node that issued it ("" = this node, or a store without nodes)
}

// OffenderRecord is the escalation history of an address or prefix.
type OffenderRecord struct {
	Prefix  netip.Prefix `json:"prefix"`
	Count   int          `json:"count"`   // bans so far
	Last    time.Time    `json:"last"`    // time of the last ban
	Expires time.Time    `json:"expires"` // Last + Config.OffenderTTL
}

// KnownGoodRecord is one known-good address.
type KnownGoodRecord struct {
	Addr  netip.Addr `json:"addr"`
	Until time.Time  `json:"until"`
}

// ChangeKind says what a Change is.
type ChangeKind uint8

const (
	ChangeBan             ChangeKind = iota + 1 // Ban was stored
	ChangeUnban                                 // the ban on Prefix was removed
	ChangeOffender                              // Offender was stored
	ChangeKnownGood                             // Addr is known-good until Until
	ChangeRevokeKnownGood                       // addresses in Prefix are no longer known-good
	ChangeLockdown                              // lockdown is now Lockdown
	ChangeAccountFailure                        // a failed login on Account at At
	ChangeResync                                // changes may have been lost: Load again
)

// Change is one change made through another handle, delivered by Watch.
type Change struct {
	Kind     ChangeKind
	Ban      BanRecord
	Offender OffenderRecord
	Prefix   netip.Prefix
	Addr     netip.Addr
	Until    time.Time
	Lockdown bool
	Account  string
	At       time.Time
}
