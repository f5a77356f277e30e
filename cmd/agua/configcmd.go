package main

import (
	"fmt"

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
		if e.data != "" {
			cfg.DataDir = e.data
		}
		// What serve reads next: the certificate and the rule files.
		if err := cfg.CheckFiles(pos[1]); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%s: OK\n", pos[1])
		return nil
	}
	return usagef("config example | config check FILE | config doc")
}
