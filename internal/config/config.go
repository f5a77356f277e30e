// Package config holds agua's configuration schema, its defaults, TOML loading
// and validation.
//
// The Config struct is the single source of truth: `agua config example`
// prints a commented TOML file and `agua config doc` the reference page
// (docs/config.md), both generated from the struct tags (`toml` for the key,
// `doc` for the description) and from Default(). Validation reports every
// problem, each with the file and line of the key when it came from a file.
package config

import (
	"time"

	"github.com/agua-mail/agua/shield"
)

// Config is the whole of agua's configuration.
type Config struct {
	DataDir  string `toml:"data_dir" doc:"Folder for accounts, mail, certificates, shield state and the admin socket. Relative paths are relative to the working directory."`
	Hostname string `toml:"hostname" doc:"Name of this server in the SMTP banner and Received headers."`

	MemoryLimit ByteSize `toml:"memory_limit" doc:"Soft memory limit of agua serve (the Go runtime's GOMEMLIMIT, set at start), so that memory goes back to the system soon after a burst of logins. 0: the GOMEMLIMIT environment variable applies, or no limit."`

	Log      LogConfig      `toml:"log" doc:"Logging."`
	TLS      TLSConfig      `toml:"tls" doc:"TLS certificate: the operator's files, ACME (acme = true), or else a self-signed certificate kept in <data_dir>/tls, generated on first start."`
	Accounts AccountsConfig `toml:"accounts" doc:"Accounts directory."`
	Store    StoreConfig    `toml:"store" doc:"Mail store (Maildir) durability."`
	SMTP     SMTPConfig     `toml:"smtp" doc:"SMTP: MX (port 25), submission with STARTTLS (587) and implicit TLS (465)."`
	POP3     POP3Config     `toml:"pop3" doc:"POP3 (RFC 1939) with STLS (110) and implicit TLS (995)."`
	IMAP     IMAPConfig     `toml:"imap" doc:"IMAP (RFC 3501, RFC 9051) with STARTTLS (143) and implicit TLS (993)."`
	Admin    AdminConfig    `toml:"admin" doc:"Admin API used by the CLI (agua block, bans, why, reload, lockdown)."`
	Shield   shield.Config  `toml:"shield" doc:"The shield: who is served, behaviour bans, limits, lockdown."`
	Outbound OutboundConfig `toml:"outbound" doc:"Delivery to other servers: the queue in <data_dir>/queue, retries, bounces, relay host."`
	DNS      DNSConfig      `toml:"dns" doc:"DNS resolver for MX lookups and for the SPF, DKIM and DMARC checks of inbound mail."`
	Auth     AuthConfig     `toml:"auth" doc:"Authentication of inbound mail on MX listeners: SPF, DKIM, DMARC, Authentication-Results, and what failures do."`
	DNSBL    DNSBLConfig    `toml:"dnsbl" doc:"DNS blocklists and allowlists with weights (postscreen-style), asked in parallel when a client connects to an MX listener; a listed client is refused before the greeting, tarpitted or untrusted (action). Applied live on reload."`
	Greylist GreylistConfig `toml:"greylist" doc:"Greylisting of inbound mail (RFC 6647), off by default."`
	Cluster  ClusterConfig  `toml:"cluster" doc:"Several nodes, one shield: shared bans and lockdown through Redis or Valkey."`
	Postgres PostgresConfig `toml:"postgres" doc:"Several nodes, the same users: the accounts directory, the mailboxes and the outbound queue on PostgreSQL, each part chosen on its own."`

	Autoconfig AutoconfigConfig `toml:"autoconfig" doc:"Client autoconfiguration, MTA-STS policy hosting and the DNS records of agua domain dns."`
}

// LogConfig configures slog output.
type LogConfig struct {
	Level      string        `toml:"level" doc:"debug, info, warn or error."`
	Format     string        `toml:"format" doc:"text or json."`
	File       string        `toml:"file" doc:"Log file of agua serve, rotated by size and age; a relative path is inside data_dir. Empty: standard error."`
	MaxSize    ByteSize      `toml:"max_size" doc:"Rotate the log file when it reaches this size (whole MiB, at least 1MiB)."`
	MaxAge     time.Duration `toml:"max_age" doc:"Delete rotated log files older than this (whole days, rounded up)."`
	MaxBackups int           `toml:"max_backups" doc:"Most rotated log files kept."`
}

// AccountsConfig configures the accounts directory.
type AccountsConfig struct {
	Database     string   `toml:"database" doc:"SQLite database file. Empty: <data_dir>/agua.db."`
	DefaultQuota ByteSize `toml:"default_quota" doc:"Mailbox quota for users whose own quota is 0."`
	Demo         bool     `toml:"demo" doc:"On first start with an empty directory, create domain example.test and user demo@example.test and print its password once. On in the embedded defaults only: a config file has it only if it sets demo = true, and that is refused when any listener is off loopback."`

	AccountsCache // lookups and logins (accounts_cache.go)
}

// StoreConfig configures how deliveries reach the disk. Either way a
// message is on disk (data and directory entry) before the 250 reply.
type StoreConfig struct {
	Sync string `toml:"sync" doc:"How a batch of concurrent deliveries is made durable: \"syncfs\" (one syncfs(2) call shared by a whole batch, and one for a lone delivery; the message is acknowledged once its file is on disk, and a start after a crash finishes moving such files from tmp/ into new/; fastest on a file system of its own) or \"fsync\" (each file fsynced, then each folder once; better when the data folder shares a file system with other busy writers)."`
}

// SMTPConfig configures the SMTP listeners and their limits.
type SMTPConfig struct {
	Listen            []string `toml:"listen" doc:"MX listeners (host:port): accept mail for local domains only, no AUTH needed."`
	SubmissionListen  []string `toml:"submission_listen" doc:"Submission listeners with STARTTLS (RFC 6409): AUTH required to send."`
	SubmissionsListen []string `toml:"submissions_listen" doc:"Submission listeners with implicit TLS (RFC 8314)."`

	MaxMessageSize    ByteSize      `toml:"max_message_size" doc:"Largest message accepted (announced with SIZE, RFC 1870)."`
	MaxRecipients     int           `toml:"max_recipients" doc:"Recipients per message; more get 452 4.5.3 (RFC 5321 4.5.3.1.8)."`
	MaxCommandLength  int           `toml:"max_command_length" doc:"Longest command line in bytes including CRLF (RFC 5321 minimum is 512)."`
	MaxLineLength     int           `toml:"max_line_length" doc:"Longest line of message data in bytes (RFC 5321 minimum is 1000)."`
	CommandTimeout    time.Duration `toml:"command_timeout" doc:"Time allowed to wait for each command (RFC 5321 4.5.3.2 suggests 5m)."`
	DataTimeout       time.Duration `toml:"data_timeout" doc:"Time allowed between blocks of message data."`
	SessionTimeout    time.Duration `toml:"session_timeout" doc:"Whole-session limit: the connection is closed with 421 when it runs out."`
	MaxErrors         int           `toml:"max_errors" doc:"Protocol errors allowed before 421 and close."`
	BannerDelay       time.Duration `toml:"banner_delay" doc:"Wait this long before the banner on MX listeners; a client that speaks first is a pre-greet talker (reported to the shield). 0 disables."`
	AuthDelay         time.Duration `toml:"auth_failure_delay" doc:"Fixed delay before answering a failed AUTH."`
	AllowInsecureAuth bool          `toml:"allow_insecure_auth_loopback" doc:"Offer AUTH without TLS to clients on loopback addresses (useful for local scripts)."`
	MaxConns          int           `toml:"max_connections" doc:"Connection ceiling per SMTP listener (the shield reserves part of it for known-good clients)."`
	DeliverySlots     int           `toml:"delivery_slots" doc:"Messages made durable at once, across every SMTP listener; the others wait in a fair queue: known-good and authenticated senders first (a stranger is still served after every 4 of theirs); a further message in a session that is neither authenticated nor allowlisted goes after every session's first one and at most 1 in 32 of the slots (at least 1) hold such messages at once, so a flood of many messages per connection waits here instead of sharing the CPU with new senders; inside each class networks take turns (/16 then /24, IPv6 /32 then /64), so a flood from many addresses of a few networks cannot push other senders behind it. More slots let the group commit batch more under load."`
}

// POP3Config configures the POP3 listeners and their limits.
type POP3Config struct {
	Listen            []string      `toml:"listen" doc:"POP3 listeners with STLS (RFC 2595), host:port."`
	TLSListen         []string      `toml:"tls_listen" doc:"POP3 listeners with implicit TLS (RFC 8314), host:port."`
	PreAuthTimeout    time.Duration `toml:"preauth_timeout" doc:"Time allowed for each command before login."`
	IdleTimeout       time.Duration `toml:"idle_timeout" doc:"Time allowed for each command after login (RFC 1939 3: at least 10 minutes)."`
	SessionTimeout    time.Duration `toml:"session_timeout" doc:"Whole-session limit."`
	MaxLineLength     int           `toml:"max_line_length" doc:"Longest command line in bytes, including CRLF (RFC 2449 4 allows 255 for commands; SASL responses need more)."`
	MaxErrors         int           `toml:"max_errors" doc:"Protocol errors allowed before -ERR and close."`
	AuthDelay         time.Duration `toml:"auth_failure_delay" doc:"Fixed delay before answering a failed login."`
	AllowInsecureAuth bool          `toml:"allow_insecure_auth_loopback" doc:"Allow USER/PASS and AUTH without TLS for clients on loopback addresses."`
	MaxConns          int           `toml:"max_connections" doc:"Connection ceiling per POP3 listener (the shield reserves part of it for known-good clients)."`
}

// IMAPConfig configures the IMAP listeners and their limits.
type IMAPConfig struct {
	Listen            []string      `toml:"listen" doc:"IMAP listeners with STARTTLS, host:port."`
	TLSListen         []string      `toml:"tls_listen" doc:"IMAP listeners with implicit TLS (RFC 8314), host:port."`
	PreAuthTimeout    time.Duration `toml:"preauth_timeout" doc:"Time allowed for each command before login."`
	IdleTimeout       time.Duration `toml:"idle_timeout" doc:"Time allowed for each command after login, and for an IDLE (RFC 3501 5.4: at least 30 minutes)."`
	SessionTimeout    time.Duration `toml:"session_timeout" doc:"Whole-connection limit."`
	MaxErrors         int           `toml:"max_errors" doc:"BAD replies and failed logins allowed before * BYE and close."`
	MaxMessageSize    ByteSize      `toml:"max_message_size" doc:"Largest message APPEND accepts (announced as APPENDLIMIT, at most 4GiB-1)."`
	AuthDelay         time.Duration `toml:"auth_failure_delay" doc:"Fixed delay before answering a failed login."`
	AllowInsecureAuth bool          `toml:"allow_insecure_auth_loopback" doc:"Allow LOGIN and AUTHENTICATE without TLS for clients on loopback addresses; elsewhere LOGINDISABLED until STARTTLS."`
	MaxConns          int           `toml:"max_connections" doc:"Connection ceiling per IMAP listener (the shield reserves part of it for known-good clients)."`
}

// AdminConfig configures the admin API.
type AdminConfig struct {
	Socket string `toml:"socket" doc:"Unix socket of the admin API used by the CLI (file permissions guard it). Empty: <data_dir>/admin.sock."`
	Listen string `toml:"listen" doc:"HTTP listener (host:port) for the admin API, /metrics and the dashboard. Empty: none. Off loopback it needs tls = true and a token."`
	Token  string `toml:"token" doc:"Bearer token for the HTTP admin API, /metrics and the dashboard. Empty: generated once into <data_dir>/admin.token."`
	TLS    bool   `toml:"tls" doc:"Serve the HTTP admin listener over TLS with the server certificate."`

	WidestBlock4 int `toml:"widest_block4" doc:"Widest IPv4 prefix (fewest bits) agua block and the dashboard accept; a wider one (e.g. 0.0.0.0/0, a typo away from a real block) needs agua block -force."`
	WidestBlock6 int `toml:"widest_block6" doc:"Widest IPv6 prefix (fewest bits) agua block and the dashboard accept without -force."`
}

// Default returns the embedded defaults: loopback listeners on unprivileged
// ports and data in ./agua-data.
func Default() Config {
	sh := shield.DefaultConfig()
	sh.RuleFiles = []string{"shield.rules"}
	// The machine itself (local scripts, webmail on the same host) is
	// trusted, as Postfix's mynetworks does. Other loopback addresses are
	// judged like anyone else, which is what the attack tests use. Behind a
	// proxy on the same host, use PROXY protocol (trusted_proxies) instead.
	sh.Allow = []string{"127.0.0.1", "::1"}
	return Config{
		DataDir:  "agua-data",
		Hostname: "localhost",
		TLS:      defaultTLS(),
		Log:      LogConfig{Level: "info", Format: "text", MaxSize: 100 << 20, MaxAge: 7 * 24 * time.Hour, MaxBackups: 10},
		Accounts: AccountsConfig{DefaultQuota: 1 << 30, Demo: true, AccountsCache: defaultAccountsCache},
		Store:    StoreConfig{Sync: "syncfs"},
		SMTP: SMTPConfig{
			Listen:            []string{"127.0.0.1:2525"},
			SubmissionListen:  []string{"127.0.0.1:2587"},
			SubmissionsListen: []string{"127.0.0.1:2465"},
			MaxMessageSize:    25 << 20,
			MaxRecipients:     100,
			MaxCommandLength:  2048,
			MaxLineLength:     8192,
			CommandTimeout:    5 * time.Minute,
			DataTimeout:       5 * time.Minute,
			SessionTimeout:    30 * time.Minute,
			MaxErrors:         10,
			BannerDelay:       0,
			AuthDelay:         time.Second,
			AllowInsecureAuth: true,
			MaxConns:          1000,
			DeliverySlots:     64,
		},
		Admin: AdminConfig{Listen: "127.0.0.1:8025", WidestBlock4: 8, WidestBlock6: 32},
		POP3: POP3Config{
			Listen:            []string{"127.0.0.1:2110"},
			TLSListen:         []string{"127.0.0.1:2995"},
			PreAuthTimeout:    30 * time.Second,
			IdleTimeout:       10 * time.Minute,
			SessionTimeout:    time.Hour,
			MaxLineLength:     1024,
			MaxErrors:         10,
			AuthDelay:         time.Second,
			AllowInsecureAuth: true,
			MaxConns:          1000,
		},
		IMAP: IMAPConfig{
			Listen:            []string{"127.0.0.1:2143"},
			TLSListen:         []string{"127.0.0.1:2993"},
			PreAuthTimeout:    30 * time.Second,
			IdleTimeout:       30 * time.Minute,
			SessionTimeout:    24 * time.Hour,
			MaxErrors:         10,
			MaxMessageSize:    25 << 20,
			AuthDelay:         time.Second,
			AllowInsecureAuth: true,
			MaxConns:          1000,
		},
		Shield:   sh,
		Outbound: defaultOutbound(),
		DNS:      defaultDNS(),
		Auth:     defaultAuth(),
		DNSBL:    defaultDNSBL(),
		Greylist: defaultGreylist(),

		Autoconfig: defaultAutoconfig(),
		Postgres:   PostgresConfig{MaxConns: 16},
	}
}
