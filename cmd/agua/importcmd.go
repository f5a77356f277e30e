package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/agua-mail/agua/internal/accounts"
	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/importer"
	"github.com/agua-mail/agua/internal/server"
)

const importUsage = "import imap -from HOST:PORT -user USER -pass-file FILE -to ADDRESS [-tls|-starttls|-plain], or import maildir DIR -to ADDRESS"

// cmdImport copies a user's mail from another IMAP server or a Maildir on
// disk into a local mailbox (internal/importer). It writes to the data
// folder's store directly, which is safe while the server runs.
func cmdImport(e *env) error {
	from := e.flags.String("from", "", "imap: source server HOST:PORT")
	user := e.flags.String("user", "", "imap: login name on the source server")
	passFile := e.flags.String("pass-file", "", "imap: file whose first line is the source password")
	to := e.flags.String("to", "", "local address whose mailbox receives the mail")
	useTLS := e.flags.Bool("tls", false, "imap: TLS from the first byte (the default for port 993)")
	startTLS := e.flags.Bool("starttls", false, "imap: STARTTLS before login (the default for other ports)")
	plain := e.flags.Bool("plain", false, "imap: no TLS at all (loopback only)")
	insecure := e.flags.Bool("insecure", false, "imap: do not verify the source's certificate")
	folders := e.flags.String("folders", "", "only these source folders, comma-separated (as the summary names them)")
	statePath := e.flags.String("state", "", "resume state file (default: DATA/import/ADDRESS-HASH.json)")
	verify := e.flags.Bool("verify", true, "check at the end that every source message is in its target folder")
	every := e.flags.Duration("progress-every", 10*time.Second, "without a terminal: print a progress line this often")
	pos, err := e.parse()
	if err != nil {
		return err
	}
	if len(pos) == 0 || *to == "" {
		return usagef(importUsage)
	}
	if err := checkOwner(e.cfg.DataDir); err != nil {
		return err
	}
	address := strings.ToLower(*to)
	quota, err := checkUser(e, address)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var src importer.Source
	switch {
	case pos[0] == "imap" && len(pos) == 1:
		if *from == "" || *user == "" || *passFile == "" {
			return usagef("import imap needs -from, -user and -pass-file")
		}
		n := 0
		for _, b := range []bool{*useTLS, *startTLS, *plain} {
			if b {
				n++
			}
		}
		if n > 1 {
			return usagef("choose one of -tls, -starttls and -plain")
		}
		pass, err := readPassFile(*passFile)
		if err != nil {
			return err
		}
		cfg := importer.IMAPConfig{Addr: *from, User: *user, Password: pass, Security: importer.StartTLS,
			TLS: &tls.Config{InsecureSkipVerify: *insecure}}
		switch {
		case *plain:
			cfg.Security = importer.Plain
		case *useTLS || !*startTLS && strings.HasSuffix(*from, ":993"):
			cfg.Security = importer.ImplicitTLS
		}
		s, err := importer.DialIMAP(ctx, cfg)
		if err != nil {
			return withTLSHint(err)
		}
		src = s
	case pos[0] == "maildir" && len(pos) == 2:
		s, err := importer.OpenMaildir(pos[1])
		if err != nil {
			return err
		}
		src = s
	default:
		return usagef(importUsage)
	}
	defer src.Close()

	// The server's store: Maildir, or PostgreSQL with [postgres] mail.
	store, closeStore, err := server.OpenMailStore(ctx, e.cfg, newLogger(e.cfg, e.stderr))
	if err != nil {
		return err
	}
	defer closeStore()
	if *statePath == "" {
		*statePath = importer.StatePath(filepath.Join(e.cfg.DataDir, "import"), src.ID(), address)
	}
	opts := importer.Options{
		Store: store, User: address, StatePath: *statePath, Verify: *verify,
		Progress: importer.NewProgress(e.stderr, isTerminal(e.stderr), *every),
	}
	if *folders != "" {
		for f := range strings.SplitSeq(*folders, ",") {
			if f = strings.TrimSpace(f); f != "" {
				opts.Folders = append(opts.Folders, f)
			}
		}
	}
	fmt.Fprintf(e.stderr, "import: %s -> %s (state %s)\n", src.ID(), address, *statePath)
	sum, err := importer.Run(ctx, src, opts)
	printImportSummary(e.stdout, sum)
	// The import itself is not held to the quota (it would stop half-way);
	// say so when the mailbox is now over it: deliveries will be refused.
	if used, uerr := opts.Store.Usage(context.Background(), address); uerr == nil && quota > 0 && used > quota {
		fmt.Fprintf(e.stdout, "Warning: %s now uses %s, over its quota of %s: new mail will be refused until it shrinks (agua user quota %s SIZE).\n",
			address, config.ByteSize(used), config.ByteSize(quota), address)
	}
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("import interrupted; run the same command again to resume: %w", err)
	}
	return err
}

// checkUser makes sure the address is a local user (not an alias: an
// alias has no mailbox of its own) and returns its quota in bytes.
func checkUser(e *env, address string) (int64, error) {
	d, err := server.OpenDirectory(e.cfg, newLogger(e.cfg, e.stderr))
	if err != nil {
		return 0, err
	}
	defer d.Close()
	u, err := d.GetUser(context.Background(), address)
	if errors.Is(err, accounts.ErrNotFound) {
		return 0, fmt.Errorf("%s is not a local user (add it first: agua user add %s)", address, address)
	}
	return u.Quota, err
}

// checkOwner refuses to write into a data folder another user owns: the
// server running as that user could not rename, flag or index the files
// and folders the import would create (they would be this user's, 0600).
func checkOwner(data string) error {
	var st unix.Stat_t
	if err := unix.Stat(data, &st); err != nil {
		return nil // a new data folder: this user's
	}
	if uid := uint32(os.Geteuid()); st.Uid != uid {
		return fmt.Errorf("the data folder %s belongs to user id %d, not to this user (%d): run the import as its owner (sudo -u OWNER agua import ...), so that the server can still change the imported mail", data, st.Uid, uid)
	}
	return nil
}

func readPassFile(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(string(data), "\n")
	line = strings.TrimRight(line, "\r")
	if line == "" {
		return "", fmt.Errorf("%s: empty password", path)
	}
	return line, nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func printImportSummary(w io.Writer, sum importer.Summary) {
	if len(sum.Folders) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "SOURCE FOLDER\tTARGET\tMESSAGES\tCOPIED\tPRESENT\tDELETED\tIN TARGET\tVERIFY\t")
	for _, f := range sum.Folders {
		target := f.Target
		if target == "" {
			target = "INBOX"
		}
		v := "-"
		switch {
		case f.Missing > 0:
			v = fmt.Sprintf("%d MISSING", f.Missing)
		case f.Verified:
			v = "ok"
		}
		if f.Restarted {
			v += " (UIDVALIDITY changed: restarted)"
		}
		inTarget := "-"
		if f.Done {
			inTarget = fmt.Sprint(f.TargetCount)
		} else {
			v = "stopped"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t\n", f.Source, target, f.Messages, f.Copied, f.Present, f.Deleted, inTarget, v)
	}
	t := sum.Totals()
	fmt.Fprintf(tw, "total\t\t%d\t%d\t%d\t%d\t\t\t\n", t.Messages, t.Copied, t.Present, t.Deleted)
	tw.Flush()
	if t.Deleted > 0 {
		fmt.Fprintf(w, "%d messages flagged \\Deleted on the source were not copied.\n", t.Deleted)
	}
	if len(sum.Dropped) > 0 {
		var parts []string
		for _, k := range sum.SortedDropped() {
			parts = append(parts, fmt.Sprintf("%s (%d)", k, sum.Dropped[k]))
		}
		fmt.Fprintf(w, "Keywords agua does not keep were dropped: %s.\n", strings.Join(parts, ", "))
	}
	fmt.Fprintf(w, "Done in %s.\n", sum.Duration.Round(time.Millisecond))
}

// withTLSHint adds to a failed connection to the source the flag that most
// likely fixes it: -tls for a port that speaks TLS from the first byte
// (any port but 993 is tried with STARTTLS), -starttls for one that does
// not, -insecure for a certificate that does not verify.
func withTLSHint(err error) error {
	var (
		cert   *tls.CertificateVerificationError
		record tls.RecordHeaderError
	)
	switch {
	case errors.Is(err, importer.ErrStartTLS):
		return fmt.Errorf("%w (a port with TLS from the first byte, such as 993? use -tls)", err)
	case errors.As(err, &record):
		return fmt.Errorf("%w (the port does not speak TLS from the first byte: use -starttls, or -plain on this machine)", err)
	case errors.As(err, &cert):
		return fmt.Errorf("%w (an old server's self-signed certificate? -insecure skips the check)", err)
	}
	return err
}
