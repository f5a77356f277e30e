// Command agua is a multi-domain mail server that keeps serving its real
// users while it is attacked. This file only parses flags and wires
// packages; see README.md for the verbs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"

	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/server"
)

const usage = `agua — a mail server that stays up under attack

Usage: agua VERB [flags] [args]   (every verb takes -config FILE and -data DIR)

Server:
  serve                         run the server (embedded defaults without -config)
  status                        show the running server's state
  top [-interval 1s] [-once]    live terminal view: listeners, rates, top talkers, bans
  reload                        re-read the config's [shield], [dnsbl] and [greylist] sections,
                                the rule files and the DKIM keys now

Config:
  config example                print a complete commented config
  config check FILE             validate a config (or -config FILE); every problem with file:line
  config doc                    print the config reference (Markdown)

Accounts:
  domain add|remove NAME        add or remove a local domain
  domain list
  domain dns DOMAIN             print every DNS record the domain needs (zone-file syntax)
  domain check DOMAIN -resolver HOST:PORT   compare them with what DNS answers
  user add ADDRESS [-quota SIZE]   add a user; password: one line on stdin, or typed
                                twice at a terminal (not shown)
  user passwd ADDRESS           set a password, read the same way
  user quota ADDRESS SIZE       set a quota (0 = default)
  user list [DOMAIN]
  user remove ADDRESS
  user suspend ADDRESS [-reason TEXT]   stop the account's sending (running server): its queued
                                mail is held, its submission sessions ended; reading mail works
  user unsuspend ADDRESS        resume its sending and release its held mail
  user suspended                the accounts whose sending is suspended
  alias add FROM TO             FROM may be @domain (catch-all)
  alias remove FROM TO
  alias list [DOMAIN]

DKIM signing keys (the data folder; a running server picks new keys up):
  dkim keygen DOMAIN [-algo ed25519|rsa|both] [-selector S] [-start 48h]
                                create the domain's keys, print their DNS records
  dkim list [DOMAIN]            every key, which ones sign, and their records

Shield (talk to the running server):
  block CIDR [-for 24h] [-reason TEXT] [-action reject|drop|tarpit] [-force]
  unblock CIDR | -reason TEXT | -all
  bans [-json]                  list bans with reason, count and expiry
  why IP [-json]                which rule, ban or limit applies to IP, and why
  lockdown [on|off]             serve only allowlisted and known-good clients

Outbound queue (the queue folder, or the running server that holds it):
  queue list|stats [-json]      messages waiting, with each recipient's state
  queue show|hold|release|delete|retry ID    one message; retry -all: every one

Backup (while the server runs) and restore (into a stopped server's data folder):
  backup DIR                    consistent snapshot: accounts database, Maildirs (hard links
                                where possible), shield state, DKIM keys, queue, certificates,
                                config; manifest.json with counts
  restore [-force] DIR          refuses while the server runs, and into a non-empty data
                                folder unless -force (which moves the old one aside)

PostgreSQL ([postgres] in the config: accounts, mail and queue shared by several nodes):
  db migrate [-status]          apply the schema migrations this agua needs (one node at a
                                time); -status lists applied and pending ones
  migrate maildir-to-db|db-to-maildir [-user ADDRESS] [-progress] [-verify sample|full|none]
                                move every user's (or one user's) mail between the Maildirs and
                                PostgreSQL, UIDs and UIDVALIDITY kept; resumable; verified at the
                                end; refuses while the server runs

Reports (from the running server, or from the data folder when it is stopped):
  report abuse [-since 24h] [-format text|csv|xarf] [-prefix4 24] [-prefix6 48]
        [-per4 16] [-per6 48] [-min 10] [-resolver HOST:PORT] [-contact ADDRESS]
                                addresses that abused the server: one email per abuse
                                contact (reverse DNS domain, else per /16 or /48),
                                CSV, or XARF v4 JSON
  report attack [-since 1h] [-step 1m] [-format text|json] [-top 10]
                                timeline, peaks, what the shield did, legitimate traffic served

Import (into a local user's mailbox; safe while the server runs; resumable):
  import imap -from HOST:PORT -user USER -pass-file FILE -to ADDRESS
        [-tls|-starttls|-plain] [-insecure] [-folders A,B] [-state FILE] [-verify=false]
                                every folder with flags and dates from an IMAP server
  import maildir DIR -to ADDRESS [-folders A,B]
                                a Dovecot/Courier Maildir++ tree on disk

Load and attacks (against agua or any SMTP server on this machine):
  bench [-target 127.0.0.1:2525] [-legit 20] [-duration 10s] [-attack banner,slowloris,...]
        [-attack-src 127.66.0.0/16] [-attack-conns 50] [-json]   (agua bench -h for all flags)

  version
`

var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// env is what every verb gets: its arguments, the streams, and the loaded
// configuration (after -config and -data).
type env struct {
	args          []string
	stdin         io.Reader
	stdout        io.Writer
	stderr        io.Writer
	cfg           config.Config
	flags         *flag.FlagSet
	cfgPath, data string
}

// verbs maps each verb to its command; usage lists every one (a test
// checks it).
func verbs() map[string]func(*env) error {
	return map[string]func(*env) error{
		"serve": cmdServe, "status": cmdStatus, "reload": cmdReload,
		"config": cmdConfig, "domain": cmdDomain, "user": cmdUser, "alias": cmdAlias,
		"block": cmdBlock, "unblock": cmdUnblock, "bans": cmdBans, "why": cmdWhy, "lockdown": cmdLockdown,
		"bench":   cmdBench,
		"report":  cmdReport,
		"top":     cmdTop,
		"dkim":    cmdDKIM,
		"queue":   cmdQueue,
		"import":  cmdImport,
		"backup":  cmdBackup,
		"restore": cmdRestore,
		"db":      cmdDB,
		"migrate": cmdMigrate,
		"version": func(e *env) error { fmt.Fprintln(e.stdout, "agua", version); return nil },
	}
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	case "-version", "--version", "-v":
		args[0] = "version"
	}
	verb, ok := verbs()[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "agua: unknown verb %q (`agua help` lists the verbs)\n", args[0])
		return 2
	}
	e := &env{args: args[1:], stdin: stdin, stdout: stdout, stderr: stderr}
	e.flags = flag.NewFlagSet("agua "+args[0], flag.ContinueOnError)
	e.flags.SetOutput(stderr)
	e.flags.StringVar(&e.cfgPath, "config", "", "config file (TOML); default: embedded defaults")
	e.flags.StringVar(&e.data, "data", "", "data folder; overrides data_dir")
	if err := verb(e); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "agua:", err)
		var ue usageError
		if errors.As(err, &ue) {
			return 2
		}
		return 1
	}
	return 0
}

type usageError struct{ msg string }

func (u usageError) Error() string { return u.msg + " (see `agua help`)" }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

// parse parses flags anywhere among the arguments (Go's flag package stops
// at the first positional one) and loads the configuration. It returns the
// positional arguments.
func (e *env) parse() ([]string, error) {
	var pos []string
	rest := e.args
	for {
		if err := e.flags.Parse(rest); err != nil {
			return nil, err
		}
		rest = e.flags.Args()
		if len(rest) == 0 {
			break
		}
		pos = append(pos, rest[0])
		rest = rest[1:]
	}
	cfg := config.Default()
	if e.cfgPath != "" {
		var err error
		if cfg, err = config.Load(e.cfgPath); err != nil {
			return nil, err
		}
	}
	if e.data != "" {
		cfg.DataDir = e.data
	}
	e.cfg = cfg
	return pos, nil
}

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	var lvl slog.Level
	lvl.UnmarshalText([]byte(cfg.Log.Level))
	opts := &slog.HandlerOptions{Level: lvl}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// writeProfile writes the named runtime profile (block, mutex, heap) to file.
func writeProfile(name, file string, stderr io.Writer) {
	f, err := os.Create(file)
	if err == nil {
		err = pprof.Lookup(name).WriteTo(f, 0)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "agua: writing the %s profile: %v\n", name, err)
	}
}

func cmdServe(e *env) error {
	cpuProfile := e.flags.String("cpuprofile", "", "write a CPU profile to this file until the server stops (for diagnosis)")
	blockProfile := e.flags.String("blockprofile", "", "write a profile of where goroutines waited (channels, I/O-free blocking) to this file when the server stops (for diagnosis)")
	mutexProfile := e.flags.String("mutexprofile", "", "write a profile of mutex contention to this file when the server stops (for diagnosis)")
	memProfile := e.flags.String("memprofile", "", "write a heap profile (memory in use as of the last garbage collection, and every allocation since the start) to this file when the server stops (for diagnosis: go tool pprof)")
	pos, err := e.parse()
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("serve takes no arguments")
	}
	// What config check checks beyond the file: serve would fail on it
	// later, or run without rules the operator believes are in force.
	if err := e.cfg.CheckFiles(e.cfgPath); err != nil {
		return err
	}
	logw, logc, err := logOutput(e.cfg, e.stderr)
	if err != nil {
		return err
	}
	defer logc.Close()
	log := newLogger(e.cfg, logw)
	server.Version = version
	srv, err := server.New(e.cfg, log, e.stdout)
	if err != nil {
		return err
	}
	if e.cfgPath != "" {
		srv.SetConfigFile(e.cfgPath)
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if *blockProfile != "" {
		runtime.SetBlockProfileRate(1) // every blocking event
		defer writeProfile("block", *blockProfile, e.stderr)
	}
	if *mutexProfile != "" {
		runtime.SetMutexProfileFraction(1) // every contention
		defer writeProfile("mutex", *mutexProfile, e.stderr)
	}
	if *memProfile != "" {
		defer writeProfile("heap", *memProfile, e.stderr)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return srv.Serve(ctx)
}
