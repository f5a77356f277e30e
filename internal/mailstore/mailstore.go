// Package mailstore is the contract between the reading protocols (POP3 in
// internal/pop3d, IMAP in internal/imapd) and a mail store: the value
// types, the sentinel errors, and two interfaces, Store (a user's folders
// and their quota usage) and Folder (one open folder: listings, change
// stamps, messages, flags, copy, append, expunge, the POP3 maildrop lock).
// internal/maildir implements it (maildir.Store.MailStore); a later backend
// (PostgreSQL, issue 17) must too, and must pass the conformance suite in
// internal/mailstore/storetest, which runs against Maildir in its tests.
//
// The interfaces are defined here, by their consumers, not in a backend
// package, so that protocol packages never name a backend's concrete types
// (files, listings, stamps), as go-imap v2's server names its own backend
// interfaces and imapmemserver is but one implementation.
//
// Final delivery (SMTP's, through internal/router's local target) is a
// separate, smaller contract owned by the router (router.MailboxWriter); its
// value types (Delivery, Recipient, QuotaError) live here so that every
// store implements it without importing the router.
//
// Flags are ASCII letters in ascending order, the Maildir info flags: D
// draft, F flagged, P passed, R replied (IMAP \Answered), S seen, T trashed
// (IMAP \Deleted). A store keeps the letters it is given and returns them
// sorted and without repeats.
package mailstore

import (
	"context"
	"errors"
	"io"
	"strings"
	"time"
)

// Errors a store returns; match them with errors.Is.
var (
	// ErrNoFolder: the folder does not exist.
	ErrNoFolder = errors.New("no such folder")
	// ErrBadFolder: the name cannot be a folder of this store (an empty
	// level, "/", control characters; INBOX where a folder is meant; a
	// folder renamed below itself).
	ErrBadFolder = errors.New("invalid folder name")
	// ErrFolderExists: CreateFolder or RenameFolder found the name taken.
	ErrFolderExists = errors.New("folder exists")
	// ErrNoMessage: the UID is not (or no longer) in the folder.
	ErrNoMessage = errors.New("no such message")
	// ErrLocked: another session holds the folder's maildrop lock.
	ErrLocked = errors.New("folder is locked by another session")
	// ErrForeignFolder: CopyTo was given a folder of another store.
	ErrForeignFolder = errors.New("folders of different stores")
	// ErrUnavailable: the store cannot serve now (its database is down or
	// unreachable) and nothing was done; the client should try again later
	// (SMTP 4xx, POP3 -ERR [SYS/TEMP], IMAP NO [UNAVAILABLE], RFC 5530).
	ErrUnavailable = errors.New("mail store temporarily unavailable")
)

// ValidFolderName says whether name can be a folder other than INBOX: "."
// separates levels, so no level may be empty; no "/", backslash or control
// characters; at most 255 bytes. Every store accepts the same names.
func ValidFolderName(name string) bool {
	if name == "" || len(name) > 255 {
		return false
	}
	for _, level := range strings.Split(name, ".") {
		if level == "" {
			return false
		}
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x20 || c == 0x7f || c == '/' || c == '\\' {
			return false
		}
	}
	return true
}

// Store is a mail store as POP3 and IMAP sessions use it. A user is the
// canonical address the accounts directory returned at login; folder names
// use "." between levels ("Archive.2024"); "" (or "INBOX" in any case) is
// the user's INBOX, which always exists. Implementations are safe for
// concurrent use by many sessions.
type Store interface {
	// Folder opens a folder: INBOX is created if the user has none yet;
	// any other folder must exist (ErrNoFolder, ErrBadFolder). The Folder's
	// calls run under ctx (a session's context); close it when done.
	Folder(ctx context.Context, user, name string) (Folder, error)
	// CreateFolder creates a folder durably; ErrFolderExists, ErrBadFolder.
	CreateFolder(ctx context.Context, user, name string) error
	// DeleteFolder removes a folder and its messages; folders below it
	// (name.x) stay. ErrNoFolder, ErrBadFolder (INBOX).
	DeleteFolder(ctx context.Context, user, name string) error
	// RenameFolder renames a folder and every folder below it, keeping
	// their messages, UIDs and UIDVALIDITY. ErrNoFolder, ErrFolderExists,
	// ErrBadFolder (INBOX, or below itself).
	RenameFolder(ctx context.Context, user, from, to string) error
	// ListFolders returns the names of the user's folders, sorted; INBOX is
	// not among them.
	ListFolders(ctx context.Context, user string) ([]string, error)
	// CreateDefaultFolders creates names the first time it is called for a
	// user only, so that a folder the user deleted is not made again.
	CreateDefaultFolders(ctx context.Context, user string, names []string) error
	// Usage returns the bytes stored in all of the user's folders, INBOX
	// included: what the quota limits.
	Usage(ctx context.Context, user string) (int64, error)
}

// Folder is one open folder. Messages are named by UID, which is stable
// while the folder's UIDVALIDITY does not change, is never reused, and is
// the same for every protocol and every session (POP3's UIDL is built from
// it). A Folder is safe for concurrent use; several Folders of the same
// folder see the same messages and UIDs.
type Folder interface {
	// Lock takes the folder's maildrop lock (RFC 1939 8: one POP3 session
	// per maildrop) and returns its release function, which may be called
	// more than once; ErrLocked while another Folder holds it. Deliveries,
	// listings and IMAP sessions go on while it is held.
	Lock() (unlock func(), err error)
	// List returns the folder's messages now, ascending by UID.
	List() (Listing, error)
	// Stamp identifies the folder's state. When settled, an equal stamp
	// later means nothing was added, removed or re-flagged in between;
	// while not settled it may not have changed yet (a poller lists
	// anyway). IMAP IDLE polls it. ErrNoFolder when the folder was deleted
	// or renamed since it was opened.
	Stamp() (st Stamp, settled bool, err error)
	// Open opens message uid for reading and returns its size in bytes;
	// ErrNoMessage.
	Open(uid uint32) (io.ReadSeekCloser, int64, error)
	// ModTime returns the message's internal date (IMAP INTERNALDATE: the
	// delivery or APPEND time); ErrNoMessage.
	ModTime(uid uint32) (time.Time, error)
	// MarkSeen records that a client has seen the messages in a listing:
	// they are no longer New. It does not set the S flag. Unknown UIDs
	// are skipped.
	MarkSeen(uids []uint32) error
	// SetFlags adds and then removes flag letters of the messages (which
	// are no longer New afterwards). Unknown UIDs are skipped.
	SetFlags(uids []uint32, add, remove string) error
	// Delete expunges the messages durably. Unknown UIDs are skipped.
	Delete(uids []uint32) error
	// Append stores a message of size bytes read from r durably, with the
	// given flags and, if date is not zero, that internal date. It returns
	// the message's UID and the folder's UIDVALIDITY.
	Append(r io.Reader, size int64, flags string, date time.Time) (uid, validity uint32, err error)
	// CopyTo copies messages of this folder into dst, a Folder of the same
	// Store (ErrForeignFolder otherwise), keeping their flags, and returns
	// for each copied source UID its new UID in dst, and dst's UIDVALIDITY
	// (RFC 4315 COPYUID). Unknown UIDs are skipped.
	CopyTo(dst Folder, uids []uint32) (src, dest []uint32, validity uint32, err error)
	// Close releases the folder, and the maildrop lock if this Folder
	// holds it; later calls do nothing.
	Close() error
}

// Listing is a folder's content at one moment.
type Listing struct {
	// UIDValidity changes only when the folder's UIDs had to be assigned
	// anew (a lost or corrupt index): a client that cached UIDs (POP3
	// UIDL, IMAP UID) must then forget them (RFC 3501 2.3.1.1).
	UIDValidity uint32
	UIDNext     uint32    // the UID the next new message will get
	Messages    []Message // ascending UID
}

// Message describes one message of a listing.
type Message struct {
	UID   uint32
	Size  int64  // bytes, exactly what Open returns
	Flags string // flag letters in ASCII order ("FRS")
	New   bool   // delivered since a client last saw a listing (IMAP \Recent)
}

// Stamp is an opaque, comparable identification of a folder's state; each
// store fills it with what it needs (Maildir: the modification times and
// inodes of new/ and cur/; a database: a modification sequence). Only
// equality means anything.
type Stamp [4]uint64

// ErrNotEmpty: SetUIDs was called on a folder that holds messages, with a
// UIDVALIDITY other than its own.
var ErrNotEmpty = errors.New("folder is not empty")

// UIDKeeper is a Folder that can take messages from another store with
// their UIDs (agua migrate maildir-to-db and back, issue 17), so that a
// client's cached UIDs (IMAP UID, POP3 UIDL) stay valid across the move.
// Both backends implement it; the conformance suite checks it.
type UIDKeeper interface {
	// SetUIDs gives the folder UIDVALIDITY validity and UIDNEXT next. On a
	// folder holding messages it only accepts its own validity (a resumed
	// move) and a next not below the folder's own (ErrNotEmpty otherwise).
	SetUIDs(validity, next uint32) error
	// AppendUID stores a message durably under uid, which must be above
	// every UID in the folder (ErrBadUID otherwise), with flags and internal
	// date as Append; it is not New. UIDNEXT becomes at least uid+1.
	AppendUID(r io.Reader, size int64, uid uint32, flags string, date time.Time) error
}

// DefaultsKeeper is a Store that says whether CreateDefaultFolders has
// run for a user, so that a move between stores (agua migrate) carries
// that over: a user who never logged in over IMAP still gets Sent, Drafts,
// Trash and Junk at the first login after the move, and one who deleted
// some keeps them deleted. Every backend implements it; the conformance
// suite checks it.
type DefaultsKeeper interface {
	// DefaultFoldersMade reports whether CreateDefaultFolders has run for
	// user (false for a user the store has never seen).
	DefaultFoldersMade(ctx context.Context, user string) (bool, error)
}

// ErrBadUID: AppendUID was given a UID not above every UID of the folder.
var ErrBadUID = errors.New("uid not above the folder's uids")

// Delivery is a message for final delivery, as received, with CRLF line
// endings.
type Delivery struct {
	R    io.ReaderAt
	Size int64
}

// Recipient is one mailbox a Delivery goes to.
type Recipient struct {
	Mailbox string // the user's address, local@domain
	Quota   int64  // bytes, > 0
	Prefix  []byte // header lines to prepend for this recipient, CRLF-terminated
	// Folder is the folder the message goes to ("Junk"), created if
	// missing; "" is INBOX.
	Folder string
}

// QuotaError reports a recipient whose quota does not allow a delivery;
// match it with errors.As.
type QuotaError struct {
	Mailbox string
	// Permanent is set when the message is larger than the whole quota
	// (RFC 3463 5.2.2); otherwise the mailbox is full for now (4.2.2).
	Permanent bool
}

func (e *QuotaError) Error() string {
	if e.Permanent {
		return "message exceeds the quota of mailbox " + e.Mailbox
	}
	return "mailbox " + e.Mailbox + " is full"
}

// UIDMessage is one message for UIDBatcher.AppendUIDs: AppendUID's
// arguments.
type UIDMessage struct {
	R     io.Reader
	Size  int64
	UID   uint32
	Flags string
	Date  time.Time
}

// UIDBatcher is a UIDKeeper that stores many messages at the cost of one
// commit (Maildir: one syncfs and one index write instead of one each per
// message). It is optional: a mover uses it when the target folder has it
// and AppendUID otherwise.
type UIDBatcher interface {
	// AppendUIDs is AppendUID of each message, made durable together. The
	// UIDs must ascend, the first above every UID in the folder (ErrBadUID
	// otherwise, and nothing is stored). After another error a leading
	// part of msgs may be stored: the folder's highest UID tells how far.
	AppendUIDs(msgs []UIDMessage) error
}
