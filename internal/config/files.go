package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/agua-mail/agua/internal/tlsutil"
	"github.com/agua-mail/agua/shield"
)

// CheckFiles looks at what serve reads after the config itself: the
// operator's certificate and key, and the shield's rule files. A rule file
// directly in data_dir may be missing (serve creates it empty); any other
// missing rule file is a typo that would leave its rules out of force, so it
// is a problem. name is the config file the values came from ("" for the
// embedded defaults); problems are located in it where it can be read.
func (c Config) CheckFiles(name string) error {
	var ps []Problem
	if c.TLS.CertFile != "" && c.TLS.KeyFile != "" {
		if _, err := tlsutil.Load(c.Resolve(c.TLS.CertFile), c.Resolve(c.TLS.KeyFile)); err != nil {
			ps = append(ps, Problem{Key: "tls.cert_file", Msg: err.Error()})
		}
	}
	if c.TLS.ACMECARoot != "" {
		if _, err := LoadCARoots(c.Resolve(c.TLS.ACMECARoot)); err != nil {
			ps = append(ps, Problem{Key: "tls.acme_ca_root", Msg: err.Error()})
		}
	}
	sh := c.Shield
	sh.RuleFiles = nil
	for _, f := range c.Shield.RuleFiles {
		path := c.Resolve(f)
		_, err := os.Stat(path)
		switch {
		case errors.Is(err, fs.ErrNotExist) && filepath.Dir(path) == filepath.Clean(c.DataDir):
			continue // serve creates it
		case errors.Is(err, fs.ErrNotExist):
			ps = append(ps, Problem{Key: "shield.rule_files", Msg: fmt.Sprintf("%s does not exist (its rules would not be in force)", path)})
			continue
		case err != nil:
			ps = append(ps, Problem{Key: "shield.rule_files", Msg: err.Error()})
			continue
		}
		sh.RuleFiles = append(sh.RuleFiles, path)
	}
	if err := sh.CheckRules(); err != nil {
		var re *shield.RulesError
		if !errors.As(err, &re) {
			ps = append(ps, Problem{Key: "shield.rule_files", Msg: err.Error()})
		} else {
			for _, l := range re.Lines {
				ps = append(ps, Problem{Key: "shield.rule_files", Msg: l.Error()})
			}
			if re.More > 0 {
				ps = append(ps, Problem{Key: "shield.rule_files", Msg: fmt.Sprintf("and %d more bad lines", re.More)})
			}
		}
	}
	if len(ps) == 0 {
		return nil
	}
	if name != "" {
		lines := lineIndex{}
		if data, err := os.ReadFile(name); err == nil {
			lines = keyLines(data)
		}
		for i := range ps {
			ps[i].File, ps[i].Line = name, lines.find(ps[i].Key)
		}
	}
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].Line < ps[j].Line })
	return &Error{Problems: ps}
}
