package server

import (
	"errors"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/shield"
)

// configDebounce coalesces the burst of events an editor's save produces.
const configDebounce = 200 * time.Millisecond

// SetConfigFile names the file the configuration came from. Serve then
// re-reads it on SIGHUP, on `agua reload` and whenever it changes, and
// applies its [shield] section live. Call before Serve.
func (s *Server) SetConfigFile(path string) {
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	s.cfgFile = path
}

// ReloadConfig re-reads the config file and applies its whole [shield]
// section to the running shield (thresholds, limits, capacities, ban
// durations, allowlists, rules and rule files, lockdown), its [dnsbl]
// section (lists, weights, thresholds, action, timeouts: a new checker)
// and its [greylist] section (on or off, delays; the table is kept). A file that does
// not load, or a [shield] section the shield refuses, changes nothing: the
// error lists every problem, one per line with file and line, and each is
// logged. Without a config file it re-reads the rule files only.
func (s *Server) ReloadConfig() error { return s.reloadConfig("agua reload") }

// reloadConfig is ReloadConfig, logging what asked for it.
func (s *Server) reloadConfig(cause string) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	if s.cfgFile == "" {
		return s.shield.Reload()
	}
	cfg, err := config.Load(s.cfgFile)
	if err != nil {
		var ce *config.Error
		if errors.As(err, &ce) {
			for _, p := range ce.Problems {
				s.log.Error("config reload refused; previous settings stay", "problem", p.String())
			}
		} else {
			s.log.Error("config reload refused; previous settings stay", "err", err)
		}
		return err
	}
	if err := s.shield.Reconfigure(s.shieldConfig(cfg.Shield)); err != nil {
		return err // the shield logged every problem
	}
	if err := s.reloadDNSBL(cfg.DNSBL); err != nil {
		s.log.Error("config reload: [dnsbl] refused; previous lists stay", "err", err)
	}
	if s.grey != nil {
		s.grey.apply(cfg.Greylist)
	}
	changed := restartOnly(s.cfg, cfg)
	s.restartPending = changed
	if len(changed) > 0 {
		s.log.Warn("config reload: [shield], [dnsbl] and [greylist] applied; other changes apply at the next restart", "sections", strings.Join(changed, ","))
	}
	s.log.Info("config reloaded", "file", s.cfgFile, "cause", cause)
	return nil
}

// RestartPending names the config sections that the last reload found
// changed but cannot apply while running (hostname, listeners, ...).
func (s *Server) RestartPending() []string {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	return slices.Clone(s.restartPending)
}

// shieldConfig is sc with its rule files resolved against the data folder.
func (s *Server) shieldConfig(sc shield.Config) shield.Config {
	files := make([]string, len(sc.RuleFiles))
	for i, f := range sc.RuleFiles {
		files[i] = s.cfg.Resolve(f)
	}
	sc.RuleFiles = files
	return sc
}

// restartOnly names the top-level sections, other than those applied live
// ([shield], [dnsbl], [greylist]), that
// differ between the running configuration and a reloaded one.
func restartOnly(running, loaded config.Config) []string {
	var out []string
	a, b := reflect.ValueOf(running), reflect.ValueOf(loaded)
	t := a.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Name == "Shield" || f.Name == "DNSBL" || f.Name == "Greylist" || !f.IsExported() {
			continue
		}
		if !reflect.DeepEqual(a.Field(i).Interface(), b.Field(i).Interface()) {
			name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
			out = append(out, name)
		}
	}
	return out
}

// watchConfig reloads the configuration when its file changes (written
// in place, or replaced by rename as editors do), until stop is closed.
func (s *Server) watchConfig(stop <-chan struct{}) (func(), error) {
	if s.cfgFile == "" {
		return func() {}, nil
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	if err := w.Add(filepath.Dir(s.cfgFile)); err != nil {
		w.Close()
		return nil, err
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var mu sync.Mutex
		var timer *time.Timer
		for {
			select {
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if filepath.Clean(ev.Name) != s.cfgFile || ev.Op == fsnotify.Chmod {
					continue
				}
				mu.Lock()
				if timer == nil {
					timer = time.AfterFunc(configDebounce, func() {
						select {
						case <-stop:
						default:
							s.reloadConfig("file changed") // logs its outcome
						}
					})
				} else {
					timer.Reset(configDebounce)
				}
				mu.Unlock()
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				s.log.Warn("config watch error", "err", err)
			case <-stop:
				mu.Lock()
				if timer != nil {
					timer.Stop()
				}
				mu.Unlock()
				return
			}
		}
	}()
	return func() { w.Close(); wg.Wait() }, nil
}
