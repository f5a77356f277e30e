package shield

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// ConfigError is a configuration Reconfigure (or New) refused: every
// problem, one per line, each naming its key (thresholds.auth_failure.count:
// must be > 0) or its rule file and line (rules.txt:3: bad CIDR).
type ConfigError struct{ Problems []error }

func (e *ConfigError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.Error()
	}
	return "shield config refused, the previous settings stay in force:\n  " + strings.Join(lines, "\n  ")
}

func (e *ConfigError) Unwrap() []error { return e.Problems }

// Reconfigure applies a whole new configuration to the running Shield:
// thresholds, limits, capacities, ban durations and actions, allowlists,
// trusted proxies, inline rules and rule files (re-read, and watched anew
// when the list changed), lockdown, history bounds, reputation thresholds
// and weights. Connections and state
// (bans, counters, known-good) are kept; the new values apply from the
// next decision. New bans use the new durations; bans in force keep theirs.
//
// Nothing changes when cfg is invalid: the error is a *ConfigError that
// lists every problem, the rule files' bad lines with file:line.
//
// Settings that size what was built at start apply at the next restart
// only: table_size and accept (the sockets are bound); a change is logged,
// never refused.
func (s *Shield) Reconfigure(cfg Config) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	if errs := cfg.Validate(); len(errs) > 0 {
		return s.refuseConfig(errs)
	}
	cfg.Thresholds = maps.Clone(cfg.Thresholds)
	cfg.Reputation.Weights = maps.Clone(cfg.Reputation.Weights)
	cfg.Rules = slices.Clone(cfg.Rules)
	cfg.RuleFiles = slices.Clone(cfg.RuleFiles)
	cfg.Allow = slices.Clone(cfg.Allow)
	cfg.TrustedProxies = slices.Clone(cfg.TrustedProxies)
	p, err := compilePolicy(&cfg)
	if err != nil {
		var re *RulesError
		if errors.As(err, &re) {
			errs := make([]error, 0, len(re.Lines)+1)
			for _, l := range re.Lines {
				errs = append(errs, l)
			}
			if re.More > 0 {
				errs = append(errs, fmt.Errorf("and %d more bad lines", re.More))
			}
			return s.refuseConfig(errs)
		}
		return s.refuseConfig([]error{err})
	}
	old := s.cfg()
	if old.TableSize != cfg.TableSize {
		s.log.Warn("shield reconfigure: table_size applies at the next restart", "running", old.TableSize, "configured", cfg.TableSize)
	}
	if old.Accept != cfg.Accept {
		s.log.Warn("shield reconfigure: accept.sockets and accept.backlog apply at the next restart (the sockets are bound)")
	}
	if err := s.kernelReconfigure(old, &cfg); err != nil {
		return s.refuseConfig([]error{err})
	}
	s.config.Store(&cfg)
	s.rulesMu.Lock()
	rules := compileRules(&cfg) // with the new reputation weights
	s.rules.Store(&rules)
	s.rulesMu.Unlock()
	s.hist.setBounds(&cfg)
	s.lnMu.Lock()
	for _, l := range s.listeners {
		l.setCapacity(&cfg)
	}
	s.lnMu.Unlock()
	if !slices.Equal(old.RuleFiles, cfg.RuleFiles) {
		if s.watcher != nil {
			s.watcher.Close() // its goroutine ends
			s.watcher = nil
		}
		if err := s.startWatcher(); err != nil {
			s.log.Warn("shield watch failed", "err", err)
		}
	}
	if old.Lockdown != cfg.Lockdown {
		// The config's lockdown changed: follow it. An unchanged key
		// leaves a lockdown set at run time (agua lockdown) alone.
		s.SetLockdown(cfg.Lockdown)
	}
	s.installPolicy(p)
	s.log.Info("shield reconfigured", "rules", p.size())
	return nil
}

// refuseConfig counts and logs a refused configuration, one line per
// problem, and returns it as a *ConfigError.
func (s *Shield) refuseConfig(errs []error) error {
	s.reloadsFailed.Add(1)
	for _, e := range errs {
		s.log.Error("shield reconfigure refused; previous settings stay", "problem", e.Error())
	}
	return &ConfigError{Problems: errs}
}

// installPolicy puts p in force, warns of missing rule files and, with
// close_on_deny, closes the connections p newly denies.
func (s *Shield) installPolicy(p *policy) {
	s.pol.Store(p)
	s.reloadsOK.Add(1)
	for _, f := range p.files {
		if f.Missing {
			s.log.Warn("shield rule file missing: none of its rules are in force", "file", f.Name)
		}
	}
	s.kernelSync()
	cfg := s.cfg()
	if cfg.CloseOnDeny && !cfg.DryRun {
		s.kick(func(c *Conn) bool {
			r := p.lookup(c.addr)
			return r != nil && !r.allow && !r.dryRun && !p.trusted.Lookup(c.addr)
		}, nil, "rule")
	}
}
