package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/agua-mail/agua/internal/accounts"
	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/passwd"
	"github.com/agua-mail/agua/internal/server"
)

// withDirectory opens the accounts database for a CLI verb. The running
// server reads the same database on every lookup, so changes apply live.
func withDirectory(e *env, fn func(ctx context.Context, d accounts.Admin, pos []string) error) error {
	pos, err := e.parse()
	if err != nil {
		return err
	}
	if err := noDatabaseToRead(e.cfg, pos); err != nil {
		if pos[0] == "list" {
			// Scripts (and our own test harness) list before they add on
			// a fresh folder: an empty list, exit 0, as before; the
			// note on stderr says why it is empty.
			fmt.Fprintf(e.stderr, "agua: %v\n", err)
			return nil
		}
		return err
	}
	d, err := server.OpenDirectory(e.cfg, newLogger(e.cfg, e.stderr))
	if err != nil {
		return err
	}
	defer d.Close()
	return fn(context.Background(), d, pos)
}

// noDatabaseToRead says when a verb that only reads accounts (list, dns,
// check) finds no accounts database in the data folder: run from another
// folder than the server's, or with another -data/-config, it would create
// an empty database and answer "nothing", as if the server had no
// accounts. list then lists nothing (exit 0, the note on stderr); dns and
// check fail.
func noDatabaseToRead(cfg config.Config, pos []string) error {
	if cfg.Postgres.Accounts || len(pos) == 0 {
		return nil
	}
	switch pos[0] {
	case "list", "dns", "check":
	default:
		return nil
	}
	path := server.DatabasePath(cfg)
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return fmt.Errorf("no accounts database at %s: agua has not run with this data folder; give the server's -config or -data (or run `agua serve` once, or `agua domain add` first)", path)
}

const domainHelp = "domain add|remove|dns NAME, domain check NAME -resolver HOST:PORT, or domain list"

func cmdDomain(e *env) error {
	df := domainDNSFlags(e)
	return withDirectory(e, func(ctx context.Context, d accounts.Admin, pos []string) error {
		if len(pos) == 0 {
			return usagef(domainHelp)
		}
		switch {
		case (pos[0] == "dns" || pos[0] == "check") && len(pos) == 2:
			return domainDNS(e, ctx, d, pos, df)
		case pos[0] == "list" && len(pos) == 1:
			ds, err := d.ListDomains(ctx)
			for _, name := range ds {
				fmt.Fprintln(e.stdout, name)
			}
			return err
		case pos[0] == "add" && len(pos) == 2:
			if err := d.AddDomain(ctx, pos[1]); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "domain %s added\n", strings.ToLower(pos[1]))
			return nil
		case pos[0] == "remove" && len(pos) == 2:
			if err := d.RemoveDomain(ctx, pos[1]); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "domain %s removed\n", strings.ToLower(pos[1]))
			return nil
		}
		return usagef(domainHelp)
	})
}

// minPasswordLen is the shortest password the CLI accepts: brute force is
// slowed by the shield, not made pointless.
const minPasswordLen = 8

// readPassword reads the password of address: one line from stdin (so
// scripts can pipe it), or, at a terminal, typed twice without echo.
func readPassword(e *env, address string) (string, error) {
	var pass string
	tty := false
	if f, ok := e.stdin.(*os.File); ok {
		var err error
		if pass, tty, err = terminalPassword(f, e.stderr, address); err != nil {
			return "", err
		}
	}
	if !tty {
		line, err := bufio.NewReader(e.stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", err
		}
		pass = strings.TrimRight(line, "\r\n")
	}
	if pass == "" {
		return "", errors.New("no password on standard input (pipe it: echo 'a long secret' | agua user add ...)")
	}
	if len([]rune(pass)) < minPasswordLen {
		return "", fmt.Errorf("password too short: use at least %d characters", minPasswordLen)
	}
	return pass, nil
}

func cmdUser(e *env) error {
	var quota config.ByteSize
	e.flags.TextVar(&quota, "quota", config.ByteSize(0), "quota for user add, e.g. 2GiB (0 = default quota)")
	reason := e.flags.String("reason", "", "user suspend: why (shown in status and on the dashboard)")
	return withDirectory(e, func(ctx context.Context, d accounts.Admin, pos []string) error {
		const help = "user add|passwd|remove|suspend|unsuspend ADDRESS, user quota ADDRESS SIZE, user import FILE|-, user hash, user list [DOMAIN], or user suspended"
		if len(pos) == 0 {
			return usagef(help)
		}
		switch {
		case pos[0] == "suspend" && len(pos) == 2, pos[0] == "unsuspend" && len(pos) == 2, pos[0] == "suspended" && len(pos) == 1:
			return userSending(e, pos, *reason)
		case pos[0] == "add" && len(pos) == 2:
			pass, err := readPassword(e, pos[1])
			if err != nil {
				return err
			}
			if err := d.AddUser(ctx, pos[1], pass, int64(quota)); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "user %s added\n", strings.ToLower(pos[1]))
			return nil
		case pos[0] == "import" && len(pos) == 2:
			return importUsers(e, ctx, d, pos[1], int64(quota))
		case pos[0] == "hash" && len(pos) == 1:
			pass, err := readPassword(e, "the hash")
			if err != nil {
				return err
			}
			h, err := passwd.Hash(pass)
			if err != nil {
				return err
			}
			fmt.Fprintln(e.stdout, h)
			return nil
		case pos[0] == "passwd" && len(pos) == 2:
			pass, err := readPassword(e, pos[1])
			if err != nil {
				return err
			}
			if err := d.SetPassword(ctx, pos[1], pass); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "password of %s changed\n", strings.ToLower(pos[1]))
			return nil
		case pos[0] == "quota" && len(pos) == 3:
			q, err := config.ParseByteSize(pos[2])
			if err != nil {
				return err
			}
			if err := d.SetQuota(ctx, pos[1], int64(q)); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "quota of %s set to %s\n", strings.ToLower(pos[1]), q)
			return nil
		case pos[0] == "remove" && len(pos) == 2:
			if err := d.RemoveUser(ctx, pos[1]); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "user %s removed (its Maildir is kept)\n", strings.ToLower(pos[1]))
			return nil
		case pos[0] == "list" && len(pos) <= 2:
			domain := ""
			if len(pos) == 2 {
				domain = pos[1]
			}
			us, err := d.ListUsers(ctx, domain)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ADDRESS\tQUOTA\tCREATED")
			for _, u := range us {
				q := config.ByteSize(u.Quota).String()
				if u.QuotaSet == 0 {
					q += " (default)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", u.Address, q, u.Created.Format("2006-01-02"))
			}
			return tw.Flush()
		}
		return usagef(help)
	})
}

// importUsers adds the users of a passwd-file (passwd.ReadPasswdFile) with
// their stored hashes, all in one transaction: all of them or none.
func importUsers(e *env, ctx context.Context, d accounts.Admin, file string, quota int64) error {
	var r io.Reader = e.stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	users, err := passwd.ReadPasswdFile(r, quota)
	if err != nil {
		return err
	}
	if len(users) == 0 {
		return fmt.Errorf("%s: no users in it", file)
	}
	if err := d.ImportUsers(ctx, users); err != nil {
		return fmt.Errorf("nothing imported: %w", err)
	}
	fmt.Fprintf(e.stdout, "%d users imported\n", len(users))
	return nil
}

func cmdAlias(e *env) error {
	return withDirectory(e, func(ctx context.Context, d accounts.Admin, pos []string) error {
		const help = "alias add|remove FROM TO, or alias list [DOMAIN]"
		if len(pos) == 0 {
			return usagef(help)
		}
		switch {
		case pos[0] == "add" && len(pos) == 3:
			if err := d.AddAlias(ctx, pos[1], pos[2]); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "alias %s -> %s added\n", strings.ToLower(pos[1]), strings.ToLower(pos[2]))
			return nil
		case pos[0] == "remove" && len(pos) == 3:
			if err := d.RemoveAlias(ctx, pos[1], pos[2]); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "alias %s -> %s removed\n", strings.ToLower(pos[1]), strings.ToLower(pos[2]))
			return nil
		case pos[0] == "list" && len(pos) <= 2:
			domain := ""
			if len(pos) == 2 {
				domain = pos[1]
			}
			as, err := d.ListAliases(ctx, domain)
			for _, a := range as {
				fmt.Fprintf(e.stdout, "%s -> %s\n", a.From, a.To)
			}
			return err
		}
		return usagef(help)
	})
}
