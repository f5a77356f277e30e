package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/agua-mail/agua/internal/dkim"
	"github.com/agua-mail/agua/internal/server"
)

const dkimUsage = "dkim keygen DOMAIN [-algo ed25519|rsa|both] [-selector S] [-start 48h], or dkim list [DOMAIN]"

// cmdDKIM manages DKIM keys in the data folder. It works on the files
// alone, so with the server stopped or running (a running server watches
// the folder and signs with a new key at once).
func cmdDKIM(e *env) error {
	algoFlag := e.flags.String("algo", "both", "keygen: key type, ed25519, rsa or both (RFC 8463 dual signing)")
	selector := e.flags.String("selector", "", "keygen: selector (default agua<yyyymmdd>e for ed25519, agua<yyyymmdd>r for RSA); needs -algo ed25519 or rsa")
	startIn := e.flags.Duration("start", 0, "keygen: the new key signs only after this long (e.g. 48h), time to publish its record while the old key still signs")
	pos, err := e.parse()
	if err != nil {
		return err
	}
	switch {
	case len(pos) == 2 && pos[0] == "keygen":
		var start time.Time
		if *startIn < 0 {
			return usagef("-start must not be negative")
		}
		if *startIn > 0 {
			start = time.Now().Add(*startIn)
		}
		return dkimKeygen(e, pos[1], *algoFlag, *selector, start)
	case len(pos) >= 1 && len(pos) <= 2 && pos[0] == "list":
		domain := ""
		if len(pos) == 2 {
			domain = strings.ToLower(strings.TrimSuffix(pos[1], "."))
		}
		return dkimList(e, domain)
	}
	return usagef(dkimUsage)
}

func dkimKeygen(e *env, domain, algoFlag, selector string, start time.Time) error {
	var algos []dkim.Algo
	if strings.EqualFold(algoFlag, "both") {
		if selector != "" {
			return usagef("-selector names one key: use it with -algo ed25519 or -algo rsa")
		}
		algos = []dkim.Algo{dkim.Ed25519, dkim.RSA}
	} else {
		a, err := dkim.ParseAlgo(algoFlag)
		if err != nil {
			return usagef("%v", err)
		}
		algos = []dkim.Algo{a}
	}
	for _, a := range algos {
		k, err := dkim.Keygen(e.cfg.DataDir, domain, a, selector, start)
		if err != nil {
			if errors.Is(err, dkim.ErrExists) {
				return fmt.Errorf("%w (pick another with -selector)", err)
			}
			return err
		}
		// Zone-file syntax, comments after ';': the output can be pasted
		// into a zone as it is.
		fmt.Fprintf(e.stdout, "; %s %s key, selector %s, in %s\n%s\n", k.Domain, k.Algo, k.Selector, k.Path, k.ZoneRecord())
	}
	warnNotLocal(e, domain)
	if start.IsZero() {
		fmt.Fprintln(e.stdout, "; publish the record(s) above in DNS: the new key(s) sign from now on")
	} else {
		fmt.Fprintf(e.stdout, "; publish the record(s) above in DNS: the new key(s) sign from %s on, older keys until then\n", start.UTC().Format("2006-01-02 15:04 MST"))
	}
	return nil
}

func dkimList(e *env, domain string) error {
	keys, err := dkim.LoadKeys(e.cfg.DataDir)
	if err != nil {
		fmt.Fprintln(e.stderr, "agua:", err) // keys that load are still listed
	}
	now := time.Now()
	signing := dkim.SigningKeys(keys, now)
	var shown []*dkim.Key
	for _, k := range keys {
		if domain == "" || k.Domain == domain {
			shown = append(shown, k)
		}
	}
	if len(shown) == 0 {
		fmt.Fprintln(e.stdout, "no DKIM keys (create them with: agua dkim keygen DOMAIN)")
		return err
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DOMAIN\tSELECTOR\tALGO\tSTART\tSIGNS")
	for _, k := range shown {
		signs := "no (older key)"
		switch {
		case signing[k]:
			signs = "yes"
		case k.Start.After(now):
			signs = "from " + k.Start.UTC().Format("2006-01-02 15:04")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k.Domain, k.Selector, k.Algo, k.Start.UTC().Format("2006-01-02 15:04"), signs)
	}
	tw.Flush()
	fmt.Fprintln(e.stdout)
	for _, k := range shown {
		fmt.Fprintln(e.stdout, k.ZoneRecord())
	}
	return err
}

// warnNotLocal warns on stderr when domain is not a local domain of the
// accounts database: keys are made for the data folder alone (a domain
// may get its keys before it is added), but a typo would otherwise go
// unnoticed until its mail is sent unsigned. Nothing is said when the
// accounts cannot be read.
func warnNotLocal(e *env, domain string) {
	if noDatabaseToRead(e.cfg, []string{"list"}) != nil {
		return
	}
	d, err := server.OpenDirectory(e.cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return
	}
	defer d.Close()
	ds, err := d.ListDomains(context.Background())
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if err != nil || slices.Contains(ds, domain) {
		return
	}
	fmt.Fprintf(e.stderr, "agua: warning: %s is not a local domain: its keys sign nothing until `agua domain add %s`; a typo? remove %s\n",
		domain, domain, filepath.Join(e.cfg.DataDir, "dkim", domain))
}
