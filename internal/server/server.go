// Package server wires agua together for `agua serve`: the data folder, the
// accounts directory, the mail store, TLS, the shield and the protocol
// listeners, plus the admin API socket and signal handling.
package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/agua-mail/agua/internal/accounts"
	"github.com/agua-mail/agua/internal/certs"
	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/directory"
	"github.com/agua-mail/agua/internal/imapd"
	"github.com/agua-mail/agua/internal/mailauth"
	"github.com/agua-mail/agua/internal/metrics"
	"github.com/agua-mail/agua/internal/pg"
	"github.com/agua-mail/agua/internal/pgaccounts"
	"github.com/agua-mail/agua/internal/pop3d"
	"github.com/agua-mail/agua/internal/resolver"
	"github.com/agua-mail/agua/internal/router"
	"github.com/agua-mail/agua/internal/sendlimit"
	"github.com/agua-mail/agua/internal/smtpd"
	"github.com/agua-mail/agua/shield"
	"github.com/agua-mail/agua/shield/redisstore"
)

// Version is set by the binary.
var Version = "dev"

// Server is a running agua.
type Server struct {
	cfg     config.Config
	log     *slog.Logger
	started time.Time

	cfgFile  string     // where cfg came from ("" = defaults): re-read by ReloadConfig
	reloadMu sync.Mutex // one ReloadConfig at a time
	// restartPending: the sections the last reload found changed that
	// apply only at the next restart (guarded by reloadMu).
	restartPending []string

	dir    accounts.Directory
	mail   *mailStore // Maildir or PostgreSQL (mailstore.go)
	shield *shield.Shield
	// deliveries is the fair queue in front of making accepted mail
	// durable, shared by every SMTP listener.
	deliveries *shield.Gate

	cluster *redisstore.Store // shared shield state ([cluster] redis); nil = local

	listeners []boundListener
	smtp      []*smtpd.Server
	pop3      []*pop3d.Server
	imap      []*imapd.Server
	admin     *http.Server
	adminLn   net.Listener
	web       *http.Server // admin API over TCP, /metrics, dashboard
	webLn     net.Listener
	metrics   *metrics.Metrics
	out       *outboundParts     // queue, DKIM signer, delivery engine
	limits    *sendlimit.Tracker // sending limits and suspended accounts
	certs     *certs.Source      // every TLS listener's certificate
	acme      *certs.ACME        // [tls] acme; nil when off
	dnsbl     dnsblLive          // [dnsbl] lists and their checker, swapped on reload
	grey      *greyGate          // [greylist]
	// acceptDNS is the resolver of the accept path ([auth], [dnsbl]),
	// behind a circuit breaker.
	acceptDNS resolver.Guarded
	pg        *pgxpool.Pool // [postgres]; nil when nothing is there
}

type boundListener struct {
	name string
	ln   net.Listener
	srv  interface{ Serve(net.Listener) error } // *smtpd.Server, *pop3d.Server
}

// Paths derived from the config.
func DatabasePath(cfg config.Config) string {
	if cfg.Accounts.Database != "" {
		return cfg.Resolve(cfg.Accounts.Database)
	}
	return filepath.Join(cfg.DataDir, "agua.db")
}

// AdminSocket is where the admin API listens.
func AdminSocket(cfg config.Config) string {
	if cfg.Admin.Socket != "" {
		return cfg.Resolve(cfg.Admin.Socket)
	}
	return filepath.Join(cfg.DataDir, "admin.sock")
}

// ShieldStateDir is where the shield keeps its bans, known-good addresses
// and event history.
func ShieldStateDir(cfg config.Config) string { return filepath.Join(cfg.DataDir, "shield") }

// OpenDirectory opens the accounts directory of cfg (also used by the CLI):
// the SQLite file, or PostgreSQL with [postgres] accounts, through a pool of
// its own that Close closes.
func OpenDirectory(cfg config.Config, log *slog.Logger) (accounts.Directory, error) {
	return openDirectory(cfg, log, nil)
}

// openDirectory opens the directory; on PostgreSQL it uses pool, or opens
// one when pool is nil. It refuses a PostgreSQL schema that lacks the
// accounts migrations.
func openDirectory(cfg config.Config, log *slog.Logger, pool *pgxpool.Pool) (accounts.Directory, error) {
	a := cfg.Accounts
	if cfg.Postgres.Accounts {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		own := pool == nil
		if own {
			var err error
			if pool, err = OpenPostgres(ctx, cfg); err != nil {
				return nil, err
			}
		}
		d, err := func() (accounts.Directory, error) {
			if err := pg.Ready(ctx, pool, pgaccounts.Migrations); err != nil {
				return nil, fmt.Errorf("postgres: %w", err)
			}
			return pgaccounts.Open(ctx, pool, pgaccounts.Options{
				DefaultQuota: int64(a.DefaultQuota), Logger: log,
				SnapshotMaxEntries: a.SnapshotMaxEntries, HashMemory: int64(a.HashMemory),
				AuthCacheTTL: a.AuthCacheTTL, AuthCacheSize: a.AuthCacheSize, ClosePool: own,
			})
		}()
		if err != nil && own {
			pool.Close()
		}
		return d, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, err
	}
	return directory.Open(DatabasePath(cfg), directory.Options{
		DefaultQuota: int64(a.DefaultQuota), Logger: log,
		SnapshotMaxEntries: a.SnapshotMaxEntries, HashMemory: int64(a.HashMemory),
		AuthCacheTTL: a.AuthCacheTTL, AuthCacheSize: a.AuthCacheSize,
	})
}

// New prepares everything and binds every listener, so that a port already
// in use is reported before anything is served. out receives the one-time
// demo account message.
func New(cfg config.Config, log *slog.Logger, out io.Writer) (*Server, error) {
	s := &Server{cfg: cfg, log: log, started: time.Now()}
	if err := s.open(out); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Server) open(out io.Writer) (err error) {
	cfg, log := s.cfg, s.log
	if cfg.MemoryLimit > 0 {
		// GOMEMLIMIT: the garbage collector and the scavenger work to stay
		// under it, so memory taken by a burst (argon2id) goes back.
		debug.SetMemoryLimit(int64(cfg.MemoryLimit))
		log.Info("memory limit set", "limit", cfg.MemoryLimit.String())
	}
	if err := os.MkdirAll(filepath.Join(cfg.DataDir, "tmp"), 0o750); err != nil {
		return fmt.Errorf("data folder: %w", err)
	}
	if err := checkNotRunning(cfg); err != nil {
		return err
	}
	if err := s.openPostgres(); err != nil {
		return err
	}
	if s.dir, err = openDirectory(cfg, log, s.pg); err != nil {
		return fmt.Errorf("accounts: %w", err)
	}
	if err := s.openMailStore(); err != nil {
		return err
	}
	if s.shield, err = s.openShield(); err != nil {
		return err
	}
	s.metrics = metrics.New(s.shield, s.sessionCounts)
	s.metrics.AbandonedLogins(s.abandonedLogins)
	if err := s.openSendLimits(); err != nil {
		return err
	}
	if s.cluster != nil {
		s.metrics.Cluster(s.shield, s.clusterFigures)
	}
	if err := s.openCerts(); err != nil {
		return err
	}
	tlsCfg := s.certs.TLSConfig()
	if err := s.listenSMTP(tlsCfg); err != nil {
		return err
	}
	if err := s.listenPOP3(tlsCfg); err != nil {
		return err
	}
	if err := s.listenIMAP(tlsCfg); err != nil {
		return err
	}
	if err := s.listenAdmin(tlsCfg); err != nil {
		return err
	}
	if err := s.listenAutoconfig(); err != nil {
		return err
	}
	// Last, once every port is bound: a start that fails must not use up
	// the one-time display of the demo password.
	if cfg.Accounts.Demo {
		if err := s.createDemo(out); err != nil {
			return fmt.Errorf("demo account: %w", err)
		}
	}
	return nil
}

const rulesHeader = `# agua shield rules: one rule per line, changes apply within a second.
#   deny 203.0.113.7             refuse with the default action
#   deny 198.51.100.0/24 drop     close at once, send nothing
#   deny 2001:db8::/32 tarpit     hold the connection open silently
#   allow 192.0.2.10             never limited or banned
#   deny 10.9.0.0/16 dry-run      only log "would block"
`

func (s *Server) openShield() (*shield.Shield, error) {
	sc := s.shieldConfig(s.cfg.Shield)
	for _, f := range sc.RuleFiles {
		if _, err := os.Stat(f); errors.Is(err, os.ErrNotExist) && filepath.Dir(f) == filepath.Clean(s.cfg.DataDir) {
			os.WriteFile(f, []byte(rulesHeader), 0o640)
		}
	}
	opts := shield.Options{Logger: s.log, StateDir: ShieldStateDir(s.cfg)}
	if err := s.openCluster(&opts); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	sh, err := shield.New(sc, opts)
	if err != nil {
		return nil, fmt.Errorf("shield: %w", err)
	}
	return sh, nil
}

func (s *Server) smtpConfig(tlsCfg *tls.Config) smtpd.Config {
	c := s.cfg.SMTP
	return smtpd.Config{
		Hostname:                  s.cfg.Hostname,
		TLS:                       tlsCfg,
		MaxMessageSize:            int64(c.MaxMessageSize),
		MaxRecipients:             c.MaxRecipients,
		MaxCommandLength:          c.MaxCommandLength,
		MaxLineLength:             c.MaxLineLength,
		CommandTimeout:            c.CommandTimeout,
		DataTimeout:               c.DataTimeout,
		SessionTimeout:            c.SessionTimeout,
		MaxErrors:                 c.MaxErrors,
		BannerDelay:               c.BannerDelay,
		AuthFailureDelay:          c.AuthDelay,
		AllowInsecureAuthLoopback: c.AllowInsecureAuth,
		SpoolDir:                  filepath.Join(s.cfg.DataDir, "tmp"),
	}
}

func (s *Server) listenSMTP(tlsCfg *tls.Config) error {
	s.deliveries = s.shield.Gate(s.cfg.SMTP.DeliverySlots)
	s.metrics.DeliveryQueue(s.deliveries.Stats)
	local := router.NewLocal(s.mail.deliver)
	if err := s.openOutbound(local); err != nil {
		return err
	}
	s.metrics.WatchOutbound(outboundFigures{s})
	s.acceptDNS = resolver.Guarded{R: s.out.res, B: &resolver.Breaker{Failures: s.cfg.DNS.BreakerFailures, Cooldown: s.cfg.DNS.BreakerCooldown}}
	s.grey = s.openGreylist()
	rc := router.Config{Hostname: s.cfg.Hostname, Accounts: s.dir, Local: local, Remote: s.out.remote(), SRS: s.out.srs, Log: s.log,
		Limits: routerLimits{s.limits}, Greylist: s.grey, Now: s.grey.clock}
	if a := s.cfg.Auth; a.Enabled {
		var err error
		if rc.Auth, err = mailauth.New(mailauth.Config{Hostname: s.cfg.Hostname, Resolver: s.acceptDNS, Timeout: a.Timeout}); err != nil {
			return err
		}
		rc.AuthPolicy = authPolicy(a.Global())
		pols, err := a.Policies()
		if err != nil {
			return err
		}
		rc.DomainPolicies = map[string]mailauth.Policy{}
		for d, p := range pols {
			rc.DomainPolicies[d] = authPolicy(p)
		}
		rc.JunkFolder = a.JunkFolder
	}
	backend, err := router.New(rc)
	if err != nil {
		return err
	}
	hooks := smtpd.Hooks{
		AccountDelay: s.shield.AccountDelayFrom,
		Auth: func(ss *smtpd.Session, ok bool) {
			s.metrics.Auth(ss.Mode.String(), ok)
			s.loginSeen(ss, ok)
		},
		Delivered: func(ss *smtpd.Session, _ *smtpd.Envelope, size int64, took time.Duration) {
			s.metrics.Delivered(ss.Mode.String(), size, took)
		},
		Refused: func(ss *smtpd.Session, code int) { s.metrics.Refused(ss.Mode.String(), code) },
		// One fair queue in front of the store for every SMTP listener
		// (issue 13: botnet message floods).
		CommitSlot: s.deliveries.Acquire,
	}
	st, err := s.newDNSBL(s.cfg.DNSBL)
	if err != nil {
		return err
	}
	s.dnsbl.p.Store(st)
	// Installed even without lists: a reload may add some.
	hooks.Screen = s.dnsblScreen
	s.shield.SetReputation(dnsblReputation{live: &s.dnsbl})
	s.shield.SetScoreSource(dnsblScores{live: &s.dnsbl})
	for _, group := range []struct {
		mode  smtpd.Mode
		addrs []string
	}{
		{smtpd.ModeMX, s.cfg.SMTP.Listen},
		{smtpd.ModeSubmission, s.cfg.SMTP.SubmissionListen},
		{smtpd.ModeSubmissions, s.cfg.SMTP.SubmissionsListen},
	} {
		if len(group.addrs) == 0 {
			continue
		}
		srv, err := smtpd.NewServer(group.mode, s.smtpConfig(tlsCfg), backend, hooks, s.log)
		if err != nil {
			return err
		}
		s.smtp = append(s.smtp, srv)
		if err := s.bind(group.mode.String(), group.addrs, s.cfg.SMTP.MaxConns, smtpReject(s.cfg.Hostname), group.mode == smtpd.ModeSubmissions, srv); err != nil {
			return err
		}
	}
	return nil
}

// authPolicy is the mailauth.Policy of an [auth] policy.
func authPolicy(p config.AuthPolicy) mailauth.Policy {
	return mailauth.Policy{DMARCReject: p.DMARCReject, DMARCQuarantine: p.DMARCQuarantine,
		SPFFailReject: p.SPFFailReject, DeferTempError: p.TempError == "defer"}
}

// bind listens on every address, behind the shield, and records the
// listeners for Serve. Implicit-TLS ports get no plaintext refusal: the
// client expects a handshake, so a refused one is just closed.
func (s *Server) bind(name string, addrs []string, maxConns int, reject func(net.Conn, shield.Decision), implicitTLS bool, srv interface{ Serve(net.Listener) error }) error {
	if implicitTLS {
		reject = nil
	}
	for _, addr := range addrs {
		ln, err := s.listenTCP(name, addr)
		if err != nil {
			return err
		}
		sl := s.shield.Listener(ln, shield.ListenerConfig{Name: name, MaxConns: maxConns, Reject: reject})
		s.listeners = append(s.listeners, boundListener{name: name, ln: sl, srv: srv})
	}
	return nil
}

// smtpReject answers a refused connection instead of the banner
// (RFC 5321 3.1: 554 for policy; 421 for a temporary refusal). The
// shield's reason is complete client text ("server busy, try again
// later"): nothing is added to it.
func smtpReject(hostname string) func(net.Conn, shield.Decision) {
	return func(c net.Conn, d shield.Decision) {
		if d.Temporary {
			fmt.Fprintf(c, "421 4.7.0 %s %s\r\n", hostname, d.Reason)
			return
		}
		fmt.Fprintf(c, "554 5.7.1 %s %s\r\n", hostname, d.Reason)
	}
}

// Status is what `agua status` shows.
type Status struct {
	Version   string            `json:"version"`
	PID       int               `json:"pid"`
	Started   time.Time         `json:"started"`
	Uptime    string            `json:"uptime"`
	Listeners map[string]string `json:"listeners"`
	Sessions  int64             `json:"smtp_sessions"`
	POP3      int64             `json:"pop3_sessions"`
	IMAP      int64             `json:"imap_sessions"`
	Lockdown  bool              `json:"lockdown"`
	// AdminSocket is the CLI's way in; the HTTP admin listener, when
	// configured, is in Listeners as "admin".
	AdminSocket string            `json:"admin_socket"`
	RuleFiles   []shield.RuleFile `json:"rule_files"`
	Shield      shield.Stats      `json:"shield"`
	Cluster     *ClusterStatus    `json:"cluster,omitempty"` // [cluster] redis: connected or not, nodes seen
	// AcceptDNS is the circuit breaker of the accept path's lookups
	// ([auth], [dnsbl]): open, and how many lookups it did not send.
	AcceptDNS *resolver.BreakerStats `json:"accept_dns,omitempty"`
	// Greylist: on or off, and the triplets and networks it holds.
	Greylist *GreylistStatus `json:"greylist,omitempty"`
	// Suspended are the accounts whose sending is suspended.
	Suspended []SuspensionInfo `json:"suspended_accounts"`
	// Certificates: with [tls] acme, each managed name and the
	// certificate it is served now (none yet: the self-signed pair).
	Certificates []certs.NameStatus `json:"acme_certificates,omitempty"`
}

func (s *Server) status() any {
	st := Status{Version: Version, PID: os.Getpid(), Started: s.started, Uptime: time.Since(s.started).Round(time.Second).String(),
		Listeners: map[string]string{}, Lockdown: s.shield.Lockdown(), Shield: s.shield.Stats(), Cluster: s.clusterStatus()}
	for _, l := range s.listeners {
		st.Listeners[l.ln.Addr().String()] = l.name
	}
	if s.webLn != nil {
		st.Listeners[s.webLn.Addr().String()] = "admin"
	}
	st.AdminSocket, st.RuleFiles = AdminSocket(s.cfg), s.shield.RuleFiles()
	st.Suspended = s.suspensions()
	if b := s.acceptDNS.B; b != nil {
		bs := b.Stats()
		st.AcceptDNS = &bs
	}
	if g := s.grey; g != nil {
		gs := GreylistStatus{Enabled: g.enabled.Load()}
		gs.Triplets, gs.Networks = g.table.Len()
		st.Greylist = &gs
	}
	if s.acme != nil {
		st.Certificates = s.acme.Status()
	}
	for _, srv := range s.smtp {
		st.Sessions += srv.Sessions()
	}
	for _, srv := range s.pop3 {
		st.POP3 += srv.Sessions()
	}
	for _, srv := range s.imap {
		st.IMAP += srv.Sessions()
	}
	return st
}

// Addr returns the bound address of the first listener named name ("smtp",
// "submission", "submissions", "pop3", "pop3s", "imap", "imaps"), for tests that listen on port 0.
func (s *Server) Addr(name string) string {
	if name == "admin" && s.webLn != nil {
		return s.webLn.Addr().String()
	}
	for _, l := range s.listeners {
		if l.name == name {
			return l.ln.Addr().String()
		}
	}
	return ""
}

// Shield returns the server's shield.
func (s *Server) Shield() *shield.Shield { return s.shield }

// Serve runs until ctx ends, then shuts down gracefully. SIGHUP, and a
// change of the config file (SetConfigFile), reload the [shield] section
// and the rule files (ReloadConfig) and the DKIM keys.
func (s *Server) Serve(ctx context.Context) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	stopWatch := make(chan struct{})
	unwatch, err := s.watchConfig(stopWatch)
	if err != nil {
		// Not fatal: SIGHUP and agua reload still work.
		s.log.Warn("config file not watched", "file", s.cfgFile, "err", err)
		unwatch = func() {}
	}
	var wg sync.WaitGroup
	errc := make(chan error, len(s.listeners)+1)
	for _, l := range s.listeners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- l.srv.Serve(l.ln)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := s.admin.Serve(s.adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	if s.web != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.web.Serve(s.webLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
		s.log.Info("listening", "listener", "admin", "addr", s.webLn.Addr().String())
	}
	for _, l := range s.listeners {
		s.log.Info("listening", "listener", l.name, "addr", l.ln.Addr().String())
	}
	s.out.start()
	certCtx, stopCerts := context.WithCancel(context.Background())
	defer stopCerts()
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.manageCerts(certCtx)
	}()
	if s.grey != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.keepSaving(certCtx, s.grey) // a last save once the listeners are shut
		}()
	}
	s.log.Info("agua started", "version", Version, "data", s.cfg.DataDir, "admin", AdminSocket(s.cfg))
	for {
		select {
		case <-hup:
			if err := s.reloadConfig("SIGHUP"); err != nil {
				s.log.Error("reload on SIGHUP refused; previous settings stay", "err", err)
			}
			s.out.signer.Reload() // logs a key file it cannot use
			continue
		case <-ctx.Done():
		case err := <-errc:
			if err != nil {
				s.log.Error("listener failed", "err", err)
			}
		}
		break
	}
	s.log.Info("shutting down")
	close(stopWatch)
	unwatch()
	for _, l := range s.listeners {
		l.ln.Close()
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.admin.Shutdown(sctx)
	if s.web != nil {
		s.web.Shutdown(sctx)
	}
	for _, srv := range s.smtp {
		srv.Shutdown(sctx)
	}
	for _, srv := range s.pop3 {
		srv.Shutdown(sctx)
	}
	for _, srv := range s.imap {
		srv.Shutdown(sctx)
	}
	s.out.stopEngine()
	stopCerts()
	wg.Wait()
	return s.Close()
}

// Close releases everything New opened.
func (s *Server) Close() error {
	for _, l := range s.listeners {
		l.ln.Close()
	}
	if s.webLn != nil {
		s.webLn.Close()
	}
	if s.adminLn != nil {
		s.adminLn.Close()
		os.Remove(AdminSocket(s.cfg))
	}
	var errs []error
	if s.acme != nil {
		s.acme.Stop()
		s.acme = nil
	}
	if s.out != nil {
		errs = append(errs, s.out.close())
		s.out = nil
	}
	if s.limits != nil {
		errs = append(errs, s.limits.Close())
		s.limits = nil
	}
	if s.shield != nil {
		errs = append(errs, s.shield.Close())
		s.shield = nil
	}
	if s.cluster != nil {
		errs = append(errs, s.cluster.Close())
		s.cluster = nil
	}
	if s.mail != nil {
		errs = append(errs, s.mail.close())
		s.mail = nil
	}
	if s.dir != nil {
		errs = append(errs, s.dir.Close())
		s.dir = nil
	}
	if s.pg != nil {
		s.pg.Close() // last: the parts above may use it while closing
		s.pg = nil
	}
	return errors.Join(errs...)
}

// createDemo makes domain example.test and user demo@example.test on the
// first start (no domains yet), printing the generated password once. The
// steps are separate transactions, so a start killed half-way is finished
// by the next one: the demo is (re)done while example.test is the only
// domain and has no user. The password is printed before the user is
// stored: if a kill falls in between, the next start prints a new one, so
// the last password printed is always the one that works.
func (s *Server) createDemo(out io.Writer) error {
	const domain, user = "example.test", "demo@example.test"
	ctx := context.Background()
	domains, err := s.dir.ListDomains(ctx)
	if err != nil {
		return err
	}
	switch {
	case len(domains) == 0:
	case len(domains) == 1 && domains[0] == domain:
		users, err := s.dir.ListUsers(ctx, domain)
		if err != nil || len(users) > 0 {
			return err
		}
	default:
		return nil
	}
	var b [12]byte
	rand.Read(b[:])
	pass := base64.RawURLEncoding.EncodeToString(b[:])
	fmt.Fprintf(out, "\nFirst start: creating domain %s and user %s\n  password: %s\n(shown only this once; change it with `agua user passwd %s`)\n\n", domain, user, pass, user)
	if f, ok := out.(interface{ Sync() error }); ok {
		f.Sync()
	}
	if err := s.dir.AddDomain(ctx, domain); err != nil && !errors.Is(err, accounts.ErrExists) {
		return err
	}
	if err := s.dir.AddUser(ctx, user, pass, 0); errors.Is(err, accounts.ErrExists) {
		// Another node sharing the PostgreSQL directory made it first: its
		// password is the one that works.
		fmt.Fprintf(out, "Another node created %s at the same moment: the password above does not apply; use the one that node printed.\n\n", user)
		return nil
	} else if err != nil {
		return err
	}
	if err := s.dir.AddAlias(ctx, "postmaster@"+domain, user); err != nil && !errors.Is(err, accounts.ErrExists) {
		return err
	}
	return nil
}
