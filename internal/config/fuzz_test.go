package config

import (
	"errors"
	"os"
	"testing"
)

// FuzzParse feeds arbitrary bytes to the config loader: it must never
// panic, refuse with a typed *Error naming a location for each problem,
// and anything it accepts must pass validation (a config that loads is a
// config the server can start with).
func FuzzParse(f *testing.F) {
	f.Add([]byte(""))
	f.Add([]byte("hostname = \"mx.example.test\"\n[smtp]\nlisten = [\"127.0.0.1:2525\"]\nmax_errors = 5\n"))
	f.Add([]byte("[pop3]\nidle_timeout = 1800\n"))
	f.Add([]byte("[imap]\nidle_timeout = \"30m\"\nmax_connections = -1\n"))
	f.Add([]byte("[shield]\nrules = [\"deny 203.0.113.0/24\"]\ntrusted_proxies = [\"10.0.0.1\"]\n"))
	f.Add([]byte("unknown = 1\n[[x]]\n\"a\" = \"\\u0000\"\n"))
	if b, err := os.ReadFile("../../docs/config.md"); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.toml", data)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || len(e.Problems) == 0 {
				t.Fatalf("error without problems: %v", err)
			}
			return
		}
		if probs := cfg.Validate(); len(probs) > 0 {
			t.Fatalf("accepted a config that does not validate: %v", probs)
		}
	})
}
