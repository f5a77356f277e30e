package imapd

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"

	"github.com/agua-mail/agua/internal/mailstore"
)

// msgRef is one message of the selected mailbox: its sequence number and
// UID.
type msgRef struct {
	seq uint32
	uid uint32
}

// resolve turns a sequence or UID set into the messages it names, in
// ascending order; "*" is the last message (RFC 3501 6.4.8, 9).
func (sel *selected) resolve(numSet imap.NumSet) []msgRef {
	var out []msgRef
	switch set := numSet.(type) {
	case imap.SeqSet:
		n := uint32(len(sel.uids))
		for i := range set {
			r := set[i]
			staticRange(&r.Start, &r.Stop, n)
			set[i] = r
		}
		for i, uid := range sel.uids {
			if set.Contains(uint32(i) + 1) {
				out = append(out, msgRef{uint32(i) + 1, uid})
			}
		}
	case imap.UIDSet:
		var last uint32
		if n := len(sel.uids); n > 0 {
			last = sel.uids[n-1]
		}
		for i := range set {
			r := set[i]
			start, stop := uint32(r.Start), uint32(r.Stop)
			staticRange(&start, &stop, last)
			set[i] = imap.UIDRange{Start: imap.UID(start), Stop: imap.UID(stop)}
		}
		for i, uid := range sel.uids {
			if set.Contains(imap.UID(uid)) {
				out = append(out, msgRef{uint32(i) + 1, uid})
			}
		}
	}
	return out
}

// staticRange replaces "*" (0) by max; "4:2" is "2:4" (RFC 3501 9,
// seq-range).
func staticRange(start, stop *uint32, max uint32) {
	if *start == 0 {
		*start = max
	}
	if *stop == 0 {
		*stop = max
	}
	if *start > *stop {
		*start, *stop = *stop, *start
	}
}

func (s *session) Fetch(w *imapserver.FetchWriter, numSet imap.NumSet, options *imap.FetchOptions) error {
	sel := s.sel
	refs := sel.resolve(numSet)
	markSeen := false
	for _, bs := range options.BodySection {
		if !bs.Peek {
			markSeen = !sel.readOnly
		}
	}
	if markSeen {
		var unseen []uint32
		for _, r := range refs {
			if !strings.Contains(sel.flags[r.uid], "S") {
				unseen = append(unseen, r.uid)
			}
		}
		if len(unseen) > 0 {
			// RFC 3501 6.4.5: BODY[] sets \Seen.
			if err := sel.f.SetFlags(unseen, "S", ""); err != nil {
				s.log.Warn("imap setting \\Seen failed", "user", s.user, "err", err)
			}
			l, err := sel.f.List()
			if err != nil {
				return s.temp("list", err)
			}
			for _, m := range l.Messages {
				if _, ok := sel.flags[m.UID]; ok && slices.Contains(unseen, m.UID) {
					sel.flags[m.UID] = m.Flags
				}
			}
		}
	}
	for _, r := range refs {
		if err := s.fetchOne(w, r, options, markSeen); err != nil {
			return err
		}
	}
	return nil
}

func (s *session) fetchOne(w *imapserver.FetchWriter, r msgRef, options *imap.FetchOptions, withFlags bool) error {
	sel := s.sel
	size := sel.sizes[r.uid]
	// The file is opened only when the content is asked for: a client's
	// sync of UIDs, flags and sizes reads no message.
	var fd io.ReadSeekCloser
	if options.Envelope || options.BodyStructure != nil || len(options.BodySection) > 0 ||
		len(options.BinarySection) > 0 || len(options.BinarySectionSize) > 0 {
		f, n, err := sel.f.Open(r.uid)
		if errors.Is(err, mailstore.ErrNoMessage) {
			return nil // expunged by someone else; the next poll says so
		}
		if err != nil {
			return s.temp("open message", err)
		}
		defer f.Close()
		fd, size = f, n
	}
	mw := w.CreateMessage(r.seq)
	mw.WriteUID(imap.UID(r.uid))
	if options.Flags || withFlags {
		mw.WriteFlags(toIMAPFlags(sel.flags[r.uid]))
	}
	if options.InternalDate {
		t, err := sel.f.ModTime(r.uid)
		if err != nil {
			t = time.Now()
		}
		mw.WriteInternalDate(t)
	}
	if options.RFC822Size {
		mw.WriteRFC822Size(size)
	}
	if options.Envelope {
		h, err := textproto.ReadHeader(bufio.NewReader(whole(fd, size)))
		if err != nil {
			h = textproto.Header{}
		}
		mw.WriteEnvelope(imapserver.ExtractEnvelope(h))
	}
	if options.BodyStructure != nil {
		mw.WriteBodyStructure(imapserver.ExtractBodyStructure(whole(fd, size)))
	}
	for _, bs := range options.BodySection {
		if bs.Specifier == imap.PartSpecifierNone && len(bs.Part) == 0 && bs.Partial == nil {
			// The whole message: stream the file as it is.
			wc := mw.WriteBodySection(bs, size)
			_, werr := io.Copy(wc, whole(fd, size))
			if cerr := wc.Close(); werr == nil {
				werr = cerr
			}
			if werr != nil {
				return werr
			}
			continue
		}
		buf := imapserver.ExtractBodySection(whole(fd, size), bs)
		if err := writeAll(mw.WriteBodySection(bs, int64(len(buf))), buf); err != nil {
			return err
		}
	}
	for _, bs := range options.BinarySection {
		buf := imapserver.ExtractBinarySection(whole(fd, size), bs)
		if err := writeAll(mw.WriteBinarySection(bs, int64(len(buf))), buf); err != nil {
			return err
		}
	}
	for _, bss := range options.BinarySectionSize {
		mw.WriteBinarySectionSize(bss, imapserver.ExtractBinarySectionSize(whole(fd, size), bss))
	}
	return mw.Close()
}

// whole returns the message from its start; each reader must be used up
// before whole is called again (the message is read, not mapped).
func whole(r io.ReadSeeker, size int64) io.Reader {
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return failedReader{err}
	}
	return io.LimitReader(r, size)
}

type failedReader struct{ err error }

func (f failedReader) Read([]byte) (int, error) { return 0, f.err }

func writeAll(wc io.WriteCloser, b []byte) error {
	_, err := wc.Write(b)
	if cerr := wc.Close(); err == nil {
		err = cerr
	}
	return err
}

func (s *session) Store(w *imapserver.FetchWriter, numSet imap.NumSet, flags *imap.StoreFlags, options *imap.StoreOptions) error {
	sel := s.sel
	if sel.readOnly {
		return errReadOnly
	}
	refs := sel.resolve(numSet)
	uids := make([]uint32, len(refs))
	for i, r := range refs {
		uids[i] = r.uid
	}
	letters := toLetters(flags.Flags)
	var add, remove string
	switch flags.Op {
	case imap.StoreFlagsAdd:
		add = letters
	case imap.StoreFlagsDel:
		remove = letters
	case imap.StoreFlagsSet:
		add = letters
		for _, c := range managedLetters {
			if !strings.ContainsRune(letters, c) {
				remove += string(c)
			}
		}
	}
	if err := sel.f.SetFlags(uids, add, remove); err != nil {
		return s.temp("store", err)
	}
	l, err := sel.f.List()
	if err != nil {
		return s.temp("list", err)
	}
	now := make(map[uint32]string, len(l.Messages))
	for _, m := range l.Messages {
		now[m.UID] = m.Flags
	}
	for _, r := range refs {
		fl, ok := now[r.uid]
		if !ok {
			continue
		}
		sel.flags[r.uid] = fl
		if flags.Silent {
			continue
		}
		mw := w.CreateMessage(r.seq)
		mw.WriteUID(imap.UID(r.uid))
		mw.WriteFlags(toIMAPFlags(fl))
		if err := mw.Close(); err != nil {
			return err
		}
	}
	return nil
}

// Expunge removes the messages flagged \Deleted (of uids, for UID
// EXPUNGE), highest sequence number first so each number stays right.
func (s *session) Expunge(w *imapserver.ExpungeWriter, uids *imap.UIDSet) error {
	sel := s.sel
	if sel.readOnly {
		return errReadOnly
	}
	l, err := sel.f.List()
	if err != nil {
		return s.temp("list", err)
	}
	deleted := map[uint32]bool{}
	for _, m := range l.Messages {
		if strings.Contains(m.Flags, "T") && (uids == nil || uids.Contains(imap.UID(m.UID))) {
			deleted[m.UID] = true
		}
	}
	var gone []uint32
	for _, uid := range sel.uids {
		if deleted[uid] {
			gone = append(gone, uid)
		}
	}
	if len(gone) == 0 {
		return nil
	}
	if err := sel.f.Delete(gone); err != nil {
		return s.temp("expunge", err)
	}
	for i := len(sel.uids) - 1; i >= 0; i-- {
		uid := sel.uids[i]
		if !deleted[uid] {
			continue
		}
		if err := w.WriteExpunge(uint32(i) + 1); err != nil {
			return err
		}
		sel.forget(i)
	}
	return nil
}

// copyTo copies the messages to dest and returns the COPYUID data
// (RFC 4315).
func (s *session) copyTo(refs []msgRef, dest string) (*imap.CopyData, error) {
	sel := s.sel
	if _, ok := folderName(dest); !ok {
		return nil, errBadName
	}
	if sameMailbox(sel.name, dest) {
		return nil, errSameMailbox
	}
	dst, _, err := s.folder(dest, errTryCreate)
	if err != nil {
		return nil, err
	}
	defer dst.Close()
	var size int64
	uids := make([]uint32, len(refs))
	l, err := sel.f.List()
	if err != nil {
		return nil, s.temp("list", err)
	}
	sizes := make(map[uint32]int64, len(l.Messages))
	for _, m := range l.Messages {
		sizes[m.UID] = m.Size
	}
	for i, r := range refs {
		uids[i] = r.uid
		size += sizes[r.uid]
	}
	used, err := s.srv.store.Usage(s.ctx, s.user)
	if err != nil {
		return nil, s.temp("usage", err)
	}
	if used+size > s.quota {
		return nil, errOverQuota
	}
	src, dstUIDs, validity, err := sel.f.CopyTo(dst, uids)
	if err != nil {
		return nil, s.temp("copy", err)
	}
	data := &imap.CopyData{UIDValidity: validity}
	for i := range src {
		data.SourceUIDs.AddNum(imap.UID(src[i]))
		data.DestUIDs.AddNum(imap.UID(dstUIDs[i]))
	}
	return data, nil
}

func (s *session) Copy(numSet imap.NumSet, dest string) (*imap.CopyData, error) {
	return s.copyTo(s.sel.resolve(numSet), dest)
}

// Move is COPY, then removing the originals and telling the client
// (RFC 6851 3.3: COPYUID first, then the EXPUNGEs).
func (s *session) Move(w *imapserver.MoveWriter, numSet imap.NumSet, dest string) error {
	sel := s.sel
	if sel.readOnly {
		return errReadOnly
	}
	refs := sel.resolve(numSet)
	data, err := s.copyTo(refs, dest)
	if err != nil {
		return err
	}
	moved := map[uint32]bool{}
	var uids []uint32
	for _, r := range data.SourceUIDs {
		for u := r.Start; u <= r.Stop; u++ {
			moved[uint32(u)] = true
			uids = append(uids, uint32(u))
		}
	}
	if err := sel.f.Delete(uids); err != nil {
		return s.temp("move", err)
	}
	if err := w.WriteCopyData(data); err != nil {
		return err
	}
	for i := len(sel.uids) - 1; i >= 0; i-- {
		uid := sel.uids[i]
		if !moved[uid] {
			continue
		}
		if err := w.WriteExpunge(uint32(i) + 1); err != nil {
			return err
		}
		sel.forget(i)
	}
	return nil
}

// Search evaluates criteria against every message of the selected mailbox;
// headers and bodies are read only when the criteria need them.
func (s *session) Search(kind imapserver.NumKind, criteria *imap.SearchCriteria, options *imap.SearchOptions) (*imap.SearchData, error) {
	sel := s.sel
	l, err := sel.f.List()
	if err != nil {
		return nil, s.temp("list", err)
	}
	sizes := make(map[uint32]int64, len(l.Messages))
	for _, m := range l.Messages {
		sizes[m.UID] = m.Size
	}
	staticCriteria(sel, criteria)
	data := &imap.SearchData{}
	var seqs imap.SeqSet
	var uids imap.UIDSet
	for i, uid := range sel.uids {
		m := &searchMsg{s: s, seq: uint32(i) + 1, uid: uid, size: sizes[uid], flags: sel.flags[uid]}
		ok := m.match(criteria)
		m.close()
		if !ok {
			continue
		}
		num := m.seq
		if kind == imapserver.NumKindUID {
			num = uid
			uids.AddNum(imap.UID(uid))
		} else {
			seqs.AddNum(m.seq)
		}
		if data.Min == 0 || num < data.Min {
			data.Min = num
		}
		data.Max = max(data.Max, num)
		data.Count++
	}
	if kind == imapserver.NumKindUID {
		data.All = uids
	} else {
		data.All = seqs
	}
	return data, nil
}

func staticCriteria(sel *selected, c *imap.SearchCriteria) {
	n := uint32(len(sel.uids))
	var last uint32
	if n > 0 {
		last = sel.uids[n-1]
	}
	for _, set := range c.SeqNum {
		for i := range set {
			staticRange(&set[i].Start, &set[i].Stop, n)
		}
	}
	for _, set := range c.UID {
		for i := range set {
			start, stop := uint32(set[i].Start), uint32(set[i].Stop)
			staticRange(&start, &stop, last)
			set[i] = imap.UIDRange{Start: imap.UID(start), Stop: imap.UID(stop)}
		}
	}
	for i := range c.Not {
		staticCriteria(sel, &c.Not[i])
	}
	for i := range c.Or {
		staticCriteria(sel, &c.Or[i][0])
		staticCriteria(sel, &c.Or[i][1])
	}
}

// searchMsg is one message under SEARCH; its file is read lazily.
type searchMsg struct {
	s     *session
	seq   uint32
	uid   uint32
	size  int64
	flags string
	data  []byte // the whole message, once read
	read  bool
}

func (m *searchMsg) close() { m.data = nil }

func (m *searchMsg) bytes() []byte {
	if !m.read {
		m.read = true
		fd, _, err := m.s.sel.f.Open(m.uid)
		if err == nil {
			m.data, _ = io.ReadAll(fd)
			fd.Close()
		}
	}
	return m.data
}

func (m *searchMsg) match(c *imap.SearchCriteria) bool {
	for _, set := range c.SeqNum {
		if !set.Contains(m.seq) {
			return false
		}
	}
	for _, set := range c.UID {
		if !set.Contains(imap.UID(m.uid)) {
			return false
		}
	}
	for _, f := range c.Flag {
		if !m.hasFlag(f) {
			return false
		}
	}
	for _, f := range c.NotFlag {
		if m.hasFlag(f) {
			return false
		}
	}
	if c.Larger != 0 && m.size <= c.Larger || c.Smaller != 0 && m.size >= c.Smaller {
		return false
	}
	if !c.Since.IsZero() || !c.Before.IsZero() {
		t, err := m.s.sel.f.ModTime(m.uid)
		if err != nil || !matchDate(t, c.Since, c.Before) {
			return false
		}
	}
	if len(c.Header) > 0 || !c.SentSince.IsZero() || !c.SentBefore.IsZero() {
		h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(m.bytes())))
		if err != nil {
			return false
		}
		mh := mail.Header{Header: gomessage.Header{Header: h}}
		for _, hc := range c.Header {
			if !matchHeader(mh.FieldsByKey(hc.Key), hc.Value) {
				return false
			}
		}
		if !c.SentSince.IsZero() || !c.SentBefore.IsZero() {
			t, err := mh.Date()
			if err != nil || !matchDate(t, c.SentSince, c.SentBefore) {
				return false
			}
		}
	}
	// BODY and TEXT: a case-insensitive substring of the raw message
	// (TEXT includes the header); no decoding of encoded parts.
	for _, text := range append(slices.Clone(c.Body), c.Text...) {
		if !bytes.Contains(bytes.ToLower(m.bytes()), bytes.ToLower([]byte(text))) {
			return false
		}
	}
	for i := range c.Not {
		if m.match(&c.Not[i]) {
			return false
		}
	}
	for i := range c.Or {
		if !m.match(&c.Or[i][0]) && !m.match(&c.Or[i][1]) {
			return false
		}
	}
	return true
}

func (m *searchMsg) hasFlag(f imap.Flag) bool {
	l := toLetters([]imap.Flag{f})
	if l == "" {
		// \Recent and keywords are never set here.
		return false
	}
	return strings.Contains(m.flags, l)
}

// matchDate compares dates only, ignoring time and zone (RFC 3501 6.4.4).
func matchDate(t, since, before time.Time) bool {
	t = time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	if !since.IsZero() && t.Before(since) {
		return false
	}
	return before.IsZero() || t.Before(before)
}

func matchHeader(fields gomessage.HeaderFields, pattern string) bool {
	if pattern == "" {
		return fields.Len() > 0
	}
	pattern = strings.ToLower(pattern)
	for fields.Next() {
		v, _ := fields.Text()
		if strings.Contains(strings.ToLower(v), pattern) {
			return true
		}
	}
	return false
}
