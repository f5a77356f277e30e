package imapd

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/agua-mail/agua/internal/mailstore"
	"github.com/agua-mail/agua/shield"
)

// session is the engine's backend for one connection. The engine calls it
// from one goroutine, except Idle, which runs while the engine only reads.
type session struct {
	srv  *Server
	conn *watchConn
	log  *slog.Logger
	ctx  context.Context

	user  string // canonical, "" before login
	quota int64

	sel *selected // nil unless a mailbox is selected

	closeOnce sync.Once
	closed    chan struct{}
}

// selected is the state of the selected mailbox as this client knows it:
// sequence number i+1 is uids[i] (RFC 3501 2.3.1.2). Poll brings it up to
// date with the folder and tells the client what changed.
type selected struct {
	name     string // as the client named it
	f        mailstore.Folder
	readOnly bool
	validity uint32
	uids     []uint32
	flags    map[uint32]string // flag letters last shown
	sizes    map[uint32]int64  // message sizes (RFC822.SIZE without opening the file)
	stamp    mailstore.Stamp   // of the folder when last listed
	settled  bool              // stamp was settled: an equal one means no change
}

var (
	_ imapserver.SessionIMAP4rev2   = (*session)(nil)
	_ imapserver.SessionAppendLimit = (*session)(nil)
)

func imapErr(typ imap.StatusResponseType, code imap.ResponseCode, text string) *imap.Error {
	return &imap.Error{Type: typ, Code: code, Text: text}
}

var (
	errBadName        = imapErr(imap.StatusResponseTypeNo, imap.ResponseCodeCannot, "Invalid mailbox name")
	errNoMailbox      = imapErr(imap.StatusResponseTypeNo, imap.ResponseCodeNonExistent, "No such mailbox")
	errTryCreate      = imapErr(imap.StatusResponseTypeNo, imap.ResponseCodeTryCreate, "No such mailbox")
	errExists         = imapErr(imap.StatusResponseTypeNo, imap.ResponseCodeAlreadyExists, "Mailbox already exists")
	errInbox          = imapErr(imap.StatusResponseTypeNo, imap.ResponseCodeCannot, "INBOX cannot be deleted or renamed here")
	errReadOnly       = imapErr(imap.StatusResponseTypeNo, imap.ResponseCodeCannot, "Mailbox is read-only (EXAMINE)")
	errOverQuota      = imapErr(imap.StatusResponseTypeNo, imap.ResponseCodeOverQuota, "Quota exceeded")
	errTempAuth       = imapErr(imap.StatusResponseTypeNo, imap.ResponseCodeUnavailable, "Temporary authentication failure, try again later")
	errTemp           = imapErr(imap.StatusResponseTypeNo, imap.ResponseCodeServerBug, "Temporary local problem, try again later")
	errUnavailable    = imapErr(imap.StatusResponseTypeNo, imap.ResponseCodeUnavailable, "Mail store temporarily unavailable, try again later")
	errTooManyFolders = imapErr(imap.StatusResponseTypeNo, imap.ResponseCodeLimit, "Too many mailboxes")
	errSameMailbox    = imapErr(imap.StatusResponseTypeNo, imap.ResponseCodeCannot, "Source and destination are the same mailbox")
	errSessionEnded   = imapErr(imap.StatusResponseTypeBye, "", "Session ended")
)

// temp logs an internal error and returns a client-safe reply: NO
// [UNAVAILABLE] when the store is down for now (RFC 5530 3: "a subsystem
// is down"), NO [SERVERBUG] otherwise.
func (s *session) temp(op string, err error) error {
	s.log.Warn("imap "+op+" failed", "user", s.user, "err", err)
	if errors.Is(err, mailstore.ErrUnavailable) {
		return errUnavailable
	}
	return errTemp
}

func (s *session) Close() error {
	if s.sel != nil {
		s.sel.f.Close()
		s.sel = nil
	}
	s.closeOnce.Do(func() { close(s.closed) })
	return nil
}

// Login checks credentials (LOGIN, and AUTHENTICATE PLAIN through the
// engine), tells the shield, and creates the default folders at the first
// login. A failed login is answered after AuthFailureDelay plus the
// shield's per-account delay; a successful one never waits. A client that
// leaves while the check waits for the password hasher gives up its place
// in the queue (Frame.WhileVerifying).
func (s *session) Login(user, pass string) error {
	ctx, end := s.conn.frame.WhileVerifying(s.conn.Conn, s.conn.in)
	canonical, quota, err := s.srv.auth.Authenticate(ctx, user, pass)
	if end(err) {
		// The client left, or the shield closed the session, while its
		// login waited: no one to answer.
		s.conn.byeDecision(shield.Decision{Action: shield.Drop}, "")
		return errSessionEnded
	}
	if err != nil && !errors.Is(err, ErrAuthFailed) {
		s.log.Warn("imap auth temporary failure", "err", err)
		return errTempAuth
	}
	if h := s.srv.hooks.Auth; h != nil {
		h(err == nil)
	}
	if err != nil {
		d := s.conn.frame.FailedLogin(user, s.srv.cfg.AuthFailureDelay, s.srv.hooks.AccountDelay)
		if d.Action != shield.Allow {
			s.log.Info("imap session ended by shield", "action", d.Action.String(), "source", d.Source)
			s.conn.byeDecision(d, "")
			return errSessionEnded
		}
		if s.conn.countFailedLogin() {
			s.conn.bye("Too many errors")
			return errSessionEnded
		}
		return imapserver.ErrAuthFailed
	}
	if d := shield.ReportAuth(s.conn.raw, canonical, true); d.Action != shield.Allow {
		s.conn.byeDecision(d, "")
		return errSessionEnded
	}
	if err := s.srv.store.CreateDefaultFolders(s.ctx, canonical, s.srv.cfg.DefaultFolders); err != nil {
		s.log.Warn("imap creating default folders failed", "user", canonical, "err", err)
	}
	s.user, s.quota = canonical, quota
	s.conn.authed.Store(true)
	s.log.Info("imap login", "user", canonical, "tls", s.conn.secure.Load())
	return nil
}

// folder validates a client's mailbox name and opens the folder.
func (s *session) folder(name string, missing error) (mailstore.Folder, string, error) {
	fn, ok := folderName(name)
	if !ok {
		return nil, "", errBadName
	}
	f, err := s.srv.store.Folder(s.ctx, s.user, fn)
	switch {
	case errors.Is(err, mailstore.ErrNoFolder), errors.Is(err, mailstore.ErrBadFolder):
		return nil, "", missing
	case err != nil:
		return nil, "", s.temp("open folder", err)
	}
	return f, fn, nil
}

func (s *session) Select(name string, options *imap.SelectOptions) (*imap.SelectData, error) {
	f, _, err := s.folder(name, errNoMailbox)
	if err != nil {
		return nil, err
	}
	stamp, settled, err := f.Stamp()
	if err != nil {
		f.Close()
		return nil, s.temp("stamp", err)
	}
	l, err := f.List()
	if err != nil {
		f.Close()
		return nil, s.temp("list", err)
	}
	sel := &selected{name: name, f: f, readOnly: options.ReadOnly, validity: l.UIDValidity,
		flags: make(map[uint32]string, len(l.Messages)), sizes: make(map[uint32]int64, len(l.Messages)),
		stamp: stamp, settled: settled}
	var recent uint32
	var fresh []uint32
	var firstUnseen uint32
	for i, m := range l.Messages {
		sel.uids = append(sel.uids, m.UID)
		sel.flags[m.UID] = m.Flags
		sel.sizes[m.UID] = m.Size
		if m.New {
			recent++
			fresh = append(fresh, m.UID)
		}
		if firstUnseen == 0 && !strings.Contains(m.Flags, "S") {
			firstUnseen = uint32(i) + 1
		}
	}
	// The client has seen the listing: the messages are no longer new
	// (Maildir: moved from new/ to cur/).
	if !sel.readOnly && len(fresh) > 0 {
		if err := f.MarkSeen(fresh); err != nil {
			s.log.Warn("imap moving messages to cur/ failed", "user", s.user, "err", err)
		}
	}
	s.sel = sel
	return &imap.SelectData{
		Flags:             systemFlags,
		PermanentFlags:    systemFlags,
		NumMessages:       uint32(len(sel.uids)),
		FirstUnseenSeqNum: firstUnseen,
		NumRecent:         recent,
		UIDNext:           imap.UID(l.UIDNext),
		UIDValidity:       l.UIDValidity,
	}, nil
}

func (s *session) Unselect() error {
	if s.sel != nil {
		s.sel.f.Close()
		s.sel = nil
	}
	return nil
}

func (s *session) Create(name string, options *imap.CreateOptions) error {
	// RFC 3501 6.3.3: a trailing delimiter only declares intent.
	name = strings.TrimSuffix(name, string(delim))
	fn, ok := folderName(name)
	if !ok {
		return errBadName
	}
	if fn == "" {
		return errExists
	}
	// Each folder is three directories: a user must not be able to
	// exhaust the file system's inodes.
	if names, err := s.srv.store.ListFolders(s.ctx, s.user); err != nil {
		return s.temp("list folders", err)
	} else if len(names) >= maxFolders {
		return errTooManyFolders
	}
	err := s.srv.store.CreateFolder(s.ctx, s.user, fn)
	switch {
	case errors.Is(err, mailstore.ErrFolderExists):
		return errExists
	case errors.Is(err, mailstore.ErrBadFolder):
		return errBadName
	case err != nil:
		return s.temp("create", err)
	}
	return nil
}

func (s *session) Delete(name string) error {
	fn, ok := folderName(name)
	if !ok {
		return errBadName
	}
	if fn == "" {
		return errInbox
	}
	err := s.srv.store.DeleteFolder(s.ctx, s.user, fn)
	switch {
	case errors.Is(err, mailstore.ErrNoFolder), errors.Is(err, mailstore.ErrBadFolder):
		return errNoMailbox
	case err != nil:
		return s.temp("delete", err)
	}
	return nil
}

func (s *session) Rename(from, to string, options *imap.RenameOptions) error {
	src, ok1 := folderName(from)
	dst, ok2 := folderName(strings.TrimSuffix(to, string(delim)))
	if !ok1 || !ok2 {
		return errBadName
	}
	if src == "" || dst == "" {
		return errInbox
	}
	err := s.srv.store.RenameFolder(s.ctx, s.user, src, dst)
	switch {
	case errors.Is(err, mailstore.ErrNoFolder):
		return errNoMailbox
	case errors.Is(err, mailstore.ErrFolderExists):
		return errExists
	case errors.Is(err, mailstore.ErrBadFolder):
		return errBadName
	case err != nil:
		return s.temp("rename", err)
	}
	return nil
}

// Subscribe and Unsubscribe: every folder counts as subscribed (LSUB and
// LIST (SUBSCRIBED) list them all), as with Dovecot's default for
// Maildir++ without a subscriptions file.
func (s *session) Subscribe(name string) error {
	if _, ok := folderName(name); !ok {
		return errBadName
	}
	return nil
}

func (s *session) Unsubscribe(name string) error { return s.Subscribe(name) }

func (s *session) Namespace() (*imap.NamespaceData, error) {
	return &imap.NamespaceData{Personal: []imap.NamespaceDescriptor{{Prefix: "", Delim: delim}}}, nil
}

func (s *session) AppendLimit() uint32 { return uint32(s.srv.cfg.MaxMessageSize) }

func (s *session) List(w *imapserver.ListWriter, ref string, patterns []string, options *imap.ListOptions) error {
	// RFC 3501 6.3.8: an empty pattern asks for the delimiter.
	if len(patterns) == 1 && patterns[0] == "" {
		return w.WriteList(&imap.ListData{Attrs: []imap.MailboxAttr{imap.MailboxAttrNoSelect}, Delim: delim, Mailbox: ""})
	}
	folders, err := s.srv.store.ListFolders(s.ctx, s.user)
	if err != nil {
		return s.temp("list folders", err)
	}
	exists := map[string]bool{"INBOX": true}
	for _, f := range folders {
		exists[f] = true
	}
	// Maildir++ may hold "A.B" without "A": show "A" as \Noselect.
	names := append([]string{"INBOX"}, folders...)
	for _, f := range folders {
		for i := strings.IndexByte(f, delim); i >= 0; {
			if p := f[:i]; !exists[p] {
				exists[p] = false
				names = append(names, p)
			}
			j := strings.IndexByte(f[i+1:], delim)
			if j < 0 {
				break
			}
			i += j + 1
		}
	}
	slices.Sort(names[1:])
	names = slices.Compact(names)
	hasChildren := map[string]bool{}
	for _, n := range names {
		if i := strings.LastIndexByte(n, delim); i > 0 {
			hasChildren[n[:i]] = true
		}
	}
	for _, n := range names {
		match := false
		for _, p := range patterns {
			if imapserver.MatchList(n, delim, ref, p) || n == "INBOX" && imapserver.MatchList("inbox", delim, strings.ToLower(ref), strings.ToLower(p)) {
				match = true
				break
			}
		}
		if !match {
			continue
		}
		data := &imap.ListData{Mailbox: n, Delim: delim}
		if !exists[n] {
			if options.SelectSubscribed || options.SelectSpecialUse {
				continue
			}
			data.Attrs = append(data.Attrs, imap.MailboxAttrNoSelect)
		}
		if hasChildren[n] {
			data.Attrs = append(data.Attrs, imap.MailboxAttrHasChildren)
		} else {
			data.Attrs = append(data.Attrs, imap.MailboxAttrHasNoChildren)
		}
		if exists[n] && (options.ReturnSubscribed || options.SelectSubscribed) {
			data.Attrs = append(data.Attrs, imap.MailboxAttrSubscribed)
		}
		use, special := specialUse[n]
		special = special && exists[n]
		if options.SelectSpecialUse && !special {
			continue
		}
		// RFC 6154 2: the attributes are returned by default too.
		if special {
			data.Attrs = append(data.Attrs, use)
		}
		if options.ReturnStatus != nil && exists[n] {
			st, err := s.Status(n, options.ReturnStatus)
			if err == nil {
				data.Status = st
			}
		}
		if err := w.WriteList(data); err != nil {
			return err
		}
	}
	return nil
}

func (s *session) Status(name string, options *imap.StatusOptions) (*imap.StatusData, error) {
	var f mailstore.Folder
	if s.sel != nil && sameMailbox(s.sel.name, name) {
		f = s.sel.f
	} else {
		nf, _, err := s.folder(name, errNoMailbox)
		if err != nil {
			return nil, err
		}
		defer nf.Close()
		f = nf
	}
	l, err := f.List()
	if err != nil {
		return nil, s.temp("list", err)
	}
	var unseen, deleted, recent uint32
	var size int64
	for _, m := range l.Messages {
		if !strings.Contains(m.Flags, "S") {
			unseen++
		}
		if strings.Contains(m.Flags, "T") {
			deleted++
		}
		if m.New {
			recent++
		}
		size += m.Size
	}
	n := uint32(len(l.Messages))
	data := &imap.StatusData{Mailbox: name}
	if options.NumMessages {
		data.NumMessages = &n
	}
	if options.UIDNext {
		data.UIDNext = imap.UID(l.UIDNext)
	}
	if options.UIDValidity {
		data.UIDValidity = l.UIDValidity
	}
	if options.NumUnseen {
		data.NumUnseen = &unseen
	}
	if options.NumDeleted {
		data.NumDeleted = &deleted
	}
	if options.NumRecent {
		data.NumRecent = &recent
	}
	if options.Size {
		data.Size = &size
	}
	if options.AppendLimit {
		lim := uint32(s.srv.cfg.MaxMessageSize)
		data.AppendLimit = &lim
	}
	return data, nil
}

// sameMailbox compares names: INBOX in any case, others exactly.
func sameMailbox(a, b string) bool {
	fa, oka := folderName(a)
	fb, okb := folderName(b)
	return oka && okb && fa == fb
}

func (s *session) Append(name string, r imap.LiteralReader, options *imap.AppendOptions) (*imap.AppendData, error) {
	size := r.Size()
	if size > s.srv.cfg.MaxMessageSize {
		return nil, imapErr(imap.StatusResponseTypeNo, imap.ResponseCodeTooBig, "Message too large")
	}
	f, _, err := s.folder(name, errTryCreate)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	used, err := s.srv.store.Usage(s.ctx, s.user)
	if err != nil {
		return nil, s.temp("usage", err)
	}
	if used+size > s.quota {
		return nil, errOverQuota
	}
	uid, validity, err := f.Append(r, size, toLetters(options.Flags), options.Time)
	if err != nil {
		return nil, s.temp("append", err)
	}
	return &imap.AppendData{UID: imap.UID(uid), UIDValidity: validity}, nil
}

// Poll tells the client what changed in the selected mailbox since it
// last heard: flags changed by others (FETCH FLAGS), expunged messages
// (only where allowed: not during FETCH, STORE and SEARCH, RFC 3501
// 7.4.1), and new messages (EXISTS). An unchanged, settled folder costs
// two stat calls.
func (s *session) Poll(w *imapserver.UpdateWriter, allowExpunge bool) error {
	sel := s.sel
	if sel == nil {
		return nil
	}
	stamp, settled, err := sel.f.Stamp()
	if errors.Is(err, mailstore.ErrNoFolder) {
		// Deleted or renamed under us (by this or another session): the
		// client's view cannot be kept, so the session ends, as Dovecot's.
		s.conn.bye("Selected mailbox was deleted or renamed")
		return errSessionEnded
	}
	if err != nil {
		return s.temp("stamp", err)
	}
	if settled && sel.settled && stamp == sel.stamp {
		return nil
	}
	l, err := sel.f.List()
	if err != nil {
		return s.temp("list", err)
	}
	if l.UIDValidity != sel.validity {
		// The index was rebuilt: the client's UIDs mean nothing now
		// (RFC 3501 2.3.1.1). Ending the session makes it start over.
		s.log.Warn("imap UIDVALIDITY changed under a session", "user", s.user, "mailbox", sanitize(sel.name))
		s.conn.bye("UIDVALIDITY changed, please reconnect")
		return errSessionEnded
	}
	// Both lists ascend by UID: walk them together.
	msgs := l.Messages
	var gone []int // indexes into sel.uids
	j := 0
	for i, uid := range sel.uids {
		for j < len(msgs) && msgs[j].UID < uid {
			j++
		}
		if j == len(msgs) || msgs[j].UID != uid {
			gone = append(gone, i)
			continue
		}
		if fl := msgs[j].Flags; fl != sel.flags[uid] {
			sel.flags[uid] = fl
			if err := w.WriteMessageFlags(uint32(i)+1, imap.UID(uid), toIMAPFlags(fl)); err != nil {
				return err
			}
		}
		j++
	}
	complete := true
	if allowExpunge {
		for k := len(gone) - 1; k >= 0; k-- {
			i := gone[k]
			if err := w.WriteExpunge(uint32(i) + 1); err != nil {
				return err
			}
			sel.forget(i)
		}
	} else if len(gone) > 0 {
		complete = false // the expunges are still to be told
	}
	var last uint32
	if n := len(sel.uids); n > 0 {
		last = sel.uids[n-1]
	}
	added := false
	for _, m := range msgs {
		if m.UID > last {
			sel.uids = append(sel.uids, m.UID)
			sel.flags[m.UID] = m.Flags
			sel.sizes[m.UID] = m.Size
			added = true
		}
	}
	sel.stamp, sel.settled = stamp, settled && complete
	if added {
		return w.WriteNumMessages(uint32(len(sel.uids)))
	}
	return nil
}

// Idle polls the selected mailbox every IdlePoll until the client says
// DONE: deliveries by SMTP, and changes by other sessions, are announced
// within about that time (RFC 2177). A store that is unavailable for a
// while (its database restarting) does not end the IDLE: the next tick
// tries again.
func (s *session) Idle(w *imapserver.UpdateWriter, stop <-chan struct{}) error {
	t := time.NewTicker(s.srv.cfg.IdlePoll)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return nil
		case <-s.conn.closed:
			return nil
		case <-t.C:
			if err := s.Poll(w, true); err != nil && err != errUnavailable {
				return err
			}
		}
	}
}

// forget drops message i (0-based) after its EXPUNGE was sent.
func (sel *selected) forget(i int) {
	uid := sel.uids[i]
	delete(sel.flags, uid)
	delete(sel.sizes, uid)
	sel.uids = slices.Delete(sel.uids, i, i+1)
}
