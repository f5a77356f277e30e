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
	case len(pos) == 2 && pos[0] == "check",
		// `-config FILE`, as every other verb takes it, names the file too.
		len(pos) == 1 && pos[0] == "check" && e.cfgPath != "":
		file := e.cfgPath
		if len(pos) == 2 {
			file = pos[1]
		}
		cfg, err := config.Load(file)
		if err != nil {
			return err
		}
		if e.data != "" {
			cfg.DataDir = e.data
		}
		// What serve reads next: the certificate and the rule files.
		if err := cfg.CheckFiles(file); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%s: OK\n", file)
		return nil
	}
	return usagef("config example | config check FILE (or -config FILE) | config doc")
}
