package importer

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// Security is how an IMAPSource protects its connection.
type Security int

const (
	ImplicitTLS Security = iota // TLS from the first byte (port 993)
	StartTLS                    // RFC 3501 6.2.1 STARTTLS before LOGIN
	Plain                       // no TLS: loopback and tests only
)

// ErrStartTLS: the source did not complete STARTTLS (it closed the
// connection, answered no greeting, or refused the command), as an
// implicit-TLS port does.
var ErrStartTLS = errors.New("STARTTLS failed")

// IMAPConfig says where and how to log in.
type IMAPConfig struct {
	Addr           string // host:port
	User, Password string
	Security       Security
	TLS            *tls.Config // nil: system roots, ServerName from Addr
	DialTimeout    time.Duration
}

// IMAPSource reads folders from an IMAP server (read-only: folders are
// EXAMINEd and bodies fetched with BODY.PEEK, so nothing changes there,
// not even \Seen).
type IMAPSource struct {
	cfg      IMAPConfig
	c        *imapclient.Client
	selected string
	folders  map[string]imap.ListData
}

// DialIMAP connects and logs in.
func DialIMAP(ctx context.Context, cfg IMAPConfig) (*IMAPSource, error) {
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 30 * time.Second
	}
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("import: source address: %w", err)
	}
	tcfg := cfg.TLS
	if tcfg == nil {
		tcfg = &tls.Config{}
	}
	if tcfg.ServerName == "" {
		tcfg = tcfg.Clone()
		tcfg.ServerName = host
	}
	d := net.Dialer{Timeout: cfg.DialTimeout}
	conn, err := d.DialContext(ctx, "tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	opts := &imapclient.Options{TLSConfig: tcfg}
	var c *imapclient.Client
	switch cfg.Security {
	case ImplicitTLS:
		tc := tls.Client(conn, tcfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, fmt.Errorf("import: TLS with %s: %w", cfg.Addr, err)
		}
		c = imapclient.New(tc, opts)
	case StartTLS:
		if c, err = imapclient.NewStartTLS(conn, opts); err != nil {
			conn.Close()
			return nil, fmt.Errorf("import: %w with %s: %w", ErrStartTLS, cfg.Addr, err)
		}
	default:
		c = imapclient.New(conn, opts)
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if err := c.WaitGreeting(); err != nil {
		c.Close()
		return nil, fmt.Errorf("import: greeting of %s: %w", cfg.Addr, err)
	}
	if err := c.Login(cfg.User, cfg.Password).Wait(); err != nil {
		c.Close()
		return nil, fmt.Errorf("import: login to %s as %s: %w", cfg.Addr, cfg.User, err)
	}
	return &IMAPSource{cfg: cfg, c: c}, nil
}

// ID is imap://user@host:port.
func (s *IMAPSource) ID() string { return "imap://" + s.cfg.User + "@" + s.cfg.Addr }

// Close logs out.
func (s *IMAPSource) Close() error {
	s.c.Logout().Wait()
	return s.c.Close()
}

// guard closes the connection when ctx ends, so a blocked command returns.
func (s *IMAPSource) guard(ctx context.Context) func() bool {
	return context.AfterFunc(ctx, func() { s.c.Close() })
}

// Folders lists every selectable folder. Special-use attributes (RFC 6154)
// decide the special folders when the server marks any; else their usual
// names do.
func (s *IMAPSource) Folders(ctx context.Context) ([]Folder, error) {
	defer s.guard(ctx)()
	var opts *imap.ListOptions
	if s.c.Caps().Has(imap.CapSpecialUse) && s.c.Caps().Has(imap.CapListExtended) {
		opts = &imap.ListOptions{ReturnSpecialUse: true}
	}
	list, err := s.c.List("", "*", opts).Collect()
	if err != nil {
		return nil, fmt.Errorf("import: LIST: %w", err)
	}
	marked := slices.ContainsFunc(list, func(d *imap.ListData) bool {
		return slices.ContainsFunc(d.Attrs, func(a imap.MailboxAttr) bool { return specialUseTarget[strings.ToLower(string(a))] != "" })
	})
	s.folders = map[string]imap.ListData{}
	var out []Folder
	for _, d := range list {
		if slices.ContainsFunc(d.Attrs, func(a imap.MailboxAttr) bool {
			return strings.EqualFold(string(a), string(imap.MailboxAttrNoSelect)) || strings.EqualFold(string(a), string(imap.MailboxAttrNonExistent))
		}) {
			continue
		}
		levels := []string{d.Mailbox}
		if d.Delim != 0 {
			levels = strings.Split(d.Mailbox, string(d.Delim))
		}
		var attrs []string
		if marked {
			attrs = []string{}
			for _, a := range d.Attrs {
				attrs = append(attrs, string(a))
			}
		}
		target, skip := targetName(levels, attrs)
		if skip {
			continue
		}
		s.folders[d.Mailbox] = *d
		out = append(out, Folder{Name: d.Mailbox, Target: target})
	}
	sortFolders(out)
	return out, nil
}

// sortFolders puts INBOX first, then the others by name.
func sortFolders(fs []Folder) {
	slices.SortFunc(fs, func(a, b Folder) int {
		ai, bi := strings.EqualFold(a.Name, "INBOX"), strings.EqualFold(b.Name, "INBOX")
		switch {
		case ai && !bi:
			return -1
		case bi && !ai:
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
}

func (s *IMAPSource) examine(name string) (*imap.SelectData, error) {
	data, err := s.c.Select(name, &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		s.selected = ""
		return nil, fmt.Errorf("import: EXAMINE %q: %w", name, err)
	}
	s.selected = name
	return data, nil
}

// Messages examines the folder and fetches every message's UID, flags,
// internal date, size and Message-ID header field.
func (s *IMAPSource) Messages(ctx context.Context, f Folder) (uint32, []Message, error) {
	defer s.guard(ctx)()
	data, err := s.examine(f.Name)
	if err != nil {
		return 0, nil, err
	}
	if data.NumMessages == 0 {
		return data.UIDValidity, nil, nil
	}
	all := imap.UIDSet{imap.UIDRange{Start: 1, Stop: 0}} // 1:*
	// The Message-ID header field itself, not ENVELOPE's rendering of it:
	// the target's copy is read with the same parser (messageID).
	idField := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"Message-ID"}, Peek: true}
	bufs, err := s.c.Fetch(all, &imap.FetchOptions{UID: true, Flags: true, InternalDate: true, RFC822Size: true,
		BodySection: []*imap.FetchItemBodySection{idField}}).Collect()
	if err != nil {
		return 0, nil, fmt.Errorf("import: FETCH in %q: %w", f.Name, err)
	}
	msgs := make([]Message, 0, len(bufs))
	for _, b := range bufs {
		if b.UID == 0 {
			continue
		}
		m := Message{UID: uint32(b.UID), Date: b.InternalDate, Size: b.RFC822Size}
		for _, sec := range b.BodySection {
			m.MessageID = messageID(bytes.NewReader(sec.Bytes))
		}
		m.Flags, m.Deleted, m.Keywords = fromIMAPFlags(b.Flags)
		msgs = append(msgs, m)
	}
	slices.SortFunc(msgs, func(a, b Message) int { return int(a.UID) - int(b.UID) })
	return data.UIDValidity, msgs, nil
}

// fromIMAPFlags maps IMAP flags to the Maildir letters agua keeps (RFC
// 3501 2.3.2 system flags; $Forwarded, RFC 5788's registry, as P).
func fromIMAPFlags(flags []imap.Flag) (letters string, deleted bool, dropped []string) {
	var b []byte
	for _, f := range flags {
		switch strings.ToLower(string(f)) {
		case `\seen`:
			b = append(b, 'S')
		case `\answered`:
			b = append(b, 'R')
		case `\flagged`:
			b = append(b, 'F')
		case `\draft`:
			b = append(b, 'D')
		case `$forwarded`:
			b = append(b, 'P')
		case `\deleted`:
			deleted = true
		case `\recent`:
		default:
			dropped = append(dropped, string(f))
		}
	}
	slices.Sort(b)
	return string(slices.Compact(b)), deleted, dropped
}

// Fetch fetches the bodies with BODY.PEEK[] and streams each into fn.
func (s *IMAPSource) Fetch(ctx context.Context, f Folder, msgs []Message, fn func(Message, io.Reader, int64) error) error {
	if len(msgs) == 0 {
		return nil
	}
	defer s.guard(ctx)()
	if s.selected != f.Name {
		if _, err := s.examine(f.Name); err != nil {
			return err
		}
	}
	byUID := make(map[uint32]Message, len(msgs))
	var set imap.UIDSet
	for _, m := range msgs {
		byUID[m.UID] = m
		set.AddNum(imap.UID(m.UID))
	}
	cmd := s.c.Fetch(set, &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{{Peek: true}}})
	var ferr error
	for {
		md := cmd.Next()
		if md == nil {
			break
		}
		var uid uint32
		var body []byte // a body that came before the UID
		var bodySize int64
		handled := false
		for {
			item := md.Next()
			if item == nil {
				break
			}
			switch item := item.(type) {
			case imapclient.FetchItemDataUID:
				uid = uint32(item.UID)
			case imapclient.FetchItemDataBodySection:
				if item.Literal == nil || ferr != nil {
					continue
				}
				m, ok := byUID[uid]
				if uid == 0 {
					if body, ferr = io.ReadAll(item.Literal); ferr == nil {
						bodySize = int64(len(body))
					}
					continue
				}
				if ok {
					ferr = fn(m, item.Literal, item.Literal.Size())
					handled = true
				}
			}
		}
		if m, ok := byUID[uid]; ok && !handled && body != nil && ferr == nil {
			ferr = fn(m, bytes.NewReader(body), bodySize)
		}
		if ferr != nil {
			break
		}
	}
	if err := cmd.Close(); err != nil && ferr == nil {
		ferr = fmt.Errorf("import: FETCH bodies in %q: %w", f.Name, err)
	}
	if ferr != nil && ctx.Err() != nil {
		return errors.Join(ctx.Err(), ferr)
	}
	return ferr
}
