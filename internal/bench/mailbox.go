package bench

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"context"
)

// popSession is one legitimate POP3 session (RFC 1939): USER/PASS, STAT,
// RETR every message, QUIT. It deletes nothing, so runs can repeat. With
// tlsMode "stls" it upgrades with STLS first (RFC 2595).
func popSession(ctx context.Context, cfg *Config, src netip.Addr) (int, string) {
	c, err := dialFrom(ctx, src, cfg.Target, 10*time.Second)
	if err != nil {
		return 0, "dial: " + errClass(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	r := bufio.NewReaderSize(c, 16<<10)
	var w io.Writer = c
	ok := func(stage string) (string, string) {
		line, err := r.ReadString('\n')
		if err != nil {
			return "", stage + ": " + errClass(err)
		}
		if !strings.HasPrefix(line, "+OK") {
			return "", stage + ": " + firstWords(line)
		}
		return line, ""
	}
	if _, cause := ok("greeting"); cause != "" {
		return 0, cause
	}
	if cfg.TLS {
		fmt.Fprintf(w, "STLS\r\n")
		if _, cause := ok("stls"); cause != "" {
			return 0, cause
		}
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
		if err := tc.Handshake(); err != nil {
			return 0, "stls: " + errClass(err)
		}
		w = tc
		r = bufio.NewReaderSize(tc, 16<<10)
	}
	fmt.Fprintf(w, "USER %s\r\n", cfg.User)
	if _, cause := ok("user"); cause != "" {
		return 0, cause
	}
	fmt.Fprintf(w, "PASS %s\r\n", cfg.Pass)
	if _, cause := ok("pass"); cause != "" {
		return 0, cause
	}
	fmt.Fprintf(w, "STAT\r\n")
	stat, cause := ok("stat")
	if cause != "" {
		return 0, cause
	}
	f := strings.Fields(stat)
	n := 0
	if len(f) >= 2 {
		n, _ = strconv.Atoi(f[1])
	}
	n = min(n, cfg.MaxFetch)
	for i := 1; i <= n; i++ {
		fmt.Fprintf(w, "RETR %d\r\n", i)
		if _, cause := ok("retr"); cause != "" {
			return i - 1, cause
		}
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return i - 1, "retr: " + errClass(err)
			}
			if line == ".\r\n" {
				break
			}
		}
	}
	fmt.Fprintf(w, "QUIT\r\n")
	if _, cause := ok("quit"); cause != "" {
		return n, cause
	}
	return n, ""
}

// imapSession is one legitimate IMAP session (RFC 3501): LOGIN, SELECT
// INBOX, FETCH the first messages' full bodies, LOGOUT.
func imapSession(ctx context.Context, cfg *Config, src netip.Addr) (int, string) {
	c, err := dialFrom(ctx, src, cfg.Target, 10*time.Second)
	if err != nil {
		return 0, "dial: " + errClass(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	var conn net.Conn = c
	r := bufio.NewReaderSize(conn, 16<<10)
	line, err := r.ReadString('\n')
	if err != nil {
		return 0, "greeting: " + errClass(err)
	}
	if !strings.HasPrefix(line, "* OK") && !strings.HasPrefix(line, "* PREAUTH") {
		return 0, "greeting: " + firstWords(line)
	}
	tag := 0
	// cmd sends a tagged command and reads to its completion, skipping
	// literals; it returns the untagged lines.
	cmd := func(stage, format string, a ...any) ([]string, string) {
		tag++
		t := fmt.Sprintf("a%d", tag)
		fmt.Fprintf(conn, t+" "+format+"\r\n", a...)
		var untagged []string
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return nil, stage + ": " + errClass(err)
			}
			if n, ok := literalSize(line); ok {
				if _, err := io.CopyN(io.Discard, r, n); err != nil {
					return nil, stage + ": " + errClass(err)
				}
				untagged = append(untagged, line)
				continue
			}
			if strings.HasPrefix(line, t+" ") {
				if !strings.HasPrefix(line[len(t)+1:], "OK") {
					return nil, stage + ": " + firstWords(line[len(t)+1:])
				}
				return untagged, ""
			}
			untagged = append(untagged, line)
		}
	}
	if cfg.TLS {
		if _, cause := cmd("starttls", "STARTTLS"); cause != "" {
			return 0, cause
		}
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
		if err := tc.Handshake(); err != nil {
			return 0, "starttls: " + errClass(err)
		}
		conn = tc
		r = bufio.NewReaderSize(tc, 16<<10)
	}
	if _, cause := cmd("login", "LOGIN %s %s", quoteIMAP(cfg.User), quoteIMAP(cfg.Pass)); cause != "" {
		return 0, cause
	}
	lines, cause := cmd("select", "SELECT INBOX")
	if cause != "" {
		return 0, cause
	}
	exists := 0
	for _, l := range lines {
		if f := strings.Fields(l); len(f) >= 3 && f[2] == "EXISTS" {
			exists, _ = strconv.Atoi(f[1])
		}
	}
	n := min(exists, cfg.MaxFetch)
	if n > 0 {
		if _, cause := cmd("fetch", "FETCH 1:%d (UID FLAGS BODY.PEEK[])", n); cause != "" {
			return 0, cause
		}
	}
	if _, cause := cmd("logout", "LOGOUT"); cause != "" {
		return n, cause
	}
	return n, ""
}

// literalSize recognises a line ending in {N} (an IMAP literal follows).
func literalSize(line string) (int64, bool) {
	line = strings.TrimRight(line, "\r\n")
	if !strings.HasSuffix(line, "}") {
		return 0, false
	}
	i := strings.LastIndexByte(line, '{')
	if i < 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSuffix(line[i+1:len(line)-1], "+"), 10, 64)
	return n, err == nil
}

func quoteIMAP(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// firstWords keeps a reply short and free of per-session detail.
func firstWords(s string) string {
	f := strings.Fields(s)
	if len(f) > 3 {
		f = f[:3]
	}
	return strings.Join(f, " ")
}
