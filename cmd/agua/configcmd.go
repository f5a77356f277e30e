package main

import (
	"errors"
	"fmt"

	"github.com/agua-mail/agua/internal/tlsutil"

	"github.com/agua-mail/agua/internal/config"
)

func cmdConfig(e *env) error {
	pos, err := e.parse()
	if err != nil {
		return err
	}
	switch {
	case len(pos) == 1 && pos[0] == "example":
		fmt.Fprint(e.stdout, config.Example())
		return nil
	case len(pos) == 1 && pos[0] == "doc":
		fmt.Fprint(e.stdout, config.Reference())
		return nil
	case len(pos) == 2 && pos[0] == "check":
		cfg, err := config.Load(pos[1])
		if err != nil {
			return err
		}
		// What serve would read next: the certificate and the rule files.
		var errs []error
		if cfg.TLS.CertFile != "" {
			if _, err := tlsutil.Load(cfg.Resolve(cfg.TLS.CertFile), cfg.Resolve(cfg.TLS.KeyFile)); err != nil {
				errs = append(errs, err)
			}
		}
		sh := cfg.Shield
		for i, f := range sh.RuleFiles {
			sh.RuleFiles[i] = cfg.Resolve(f)
		}
		if err := sh.CheckRules(); err != nil {
			errs = append(errs, err)
		}
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("%s: the config parses, but:\n%w", pos[1], err)
		}
		fmt.Fprintf(e.stdout, "%s: OK\n", pos[1])
		return nil
	}
	return usagef("config example | config check FILE | config doc")
}
