package server

import (
	"fmt"
	"path/filepath"

	"github.com/agua-mail/agua/internal/maildir"
	"github.com/agua-mail/agua/internal/mailstore"
	"github.com/agua-mail/agua/internal/pgstore"
	"github.com/agua-mail/agua/internal/router"
)

// mailStore is the store the mailboxes live in, as its two consumers see
// it: POP3 and IMAP read through the mail-store contract, SMTP's local
// delivery writes through router.MailboxWriter.
type mailStore struct {
	read    mailstore.Store
	deliver router.MailboxWriter
	close   func() error
}

var (
	_ router.MailboxWriter = (*maildir.Store)(nil)
	_ router.MailboxWriter = (*pgstore.Store)(nil)
)

// openMailStore opens Maildir folders in <data_dir>/mail, or the store on
// PostgreSQL with [postgres] mail (the pool is open by then).
func (s *Server) openMailStore() error {
	if s.cfg.Postgres.Mail {
		st := pgstore.Open(s.pg, pgstore.Options{Logger: s.log})
		s.mail = &mailStore{read: st, deliver: st, close: st.Close}
		return nil
	}
	st, err := maildir.Open(filepath.Join(s.cfg.DataDir, "mail"), maildir.Options{Logger: s.log, Hostname: s.cfg.Hostname, FsyncEach: s.cfg.Store.Sync == "fsync"})
	if err != nil {
		return fmt.Errorf("mail store: %w", err)
	}
	s.mail = &mailStore{read: st.MailStore(), deliver: st, close: st.Close}
	return nil
}
