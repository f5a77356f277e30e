package sendlimit

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/agua-mail/agua/internal/atomicfile"
)

// load reads the state file; a missing file is an empty state, a damaged
// one is kept aside (<path>.corrupt) and logged, never a failed start:
// suspensions are lost with it, which the log line says.
func (t *Tracker) load() error {
	if t.opts.Path == "" {
		return nil
	}
	b, err := os.ReadFile(t.opts.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sendlimit: %w", err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		bad := t.opts.Path + ".corrupt"
		os.Rename(t.opts.Path, bad)
		t.log.Error("sendlimit: state file damaged; kept aside, starting empty (suspensions in it are lost)", "file", bad, "err", err)
		return nil
	}
	for name, a := range st.Accounts {
		if a != nil && len(t.accounts) < t.lim.MaxAccounts {
			t.accounts[name] = a
		}
	}
	for name, a := range st.Domains {
		if a != nil && len(t.domains) < t.lim.MaxAccounts {
			t.domains[name] = a
		}
	}
	for name, s := range st.Suspended {
		t.suspended[name] = s
	}
	return nil
}

// Flush writes the state file now if anything changed: a temporary file,
// synced, renamed over the old one, and the folder synced.
func (t *Tracker) Flush() error {
	if t.opts.Path == "" {
		return nil
	}
	t.mu.Lock()
	if !t.dirty {
		t.mu.Unlock()
		return nil
	}
	b, err := json.Marshal(state{Accounts: t.accounts, Domains: t.domains, Suspended: t.suspended})
	t.dirty = false
	t.mu.Unlock()
	if err == nil {
		err = t.writeFile(t.opts.Path, b)
	}
	if err != nil {
		t.mu.Lock()
		t.dirty = true
		t.mu.Unlock()
		return fmt.Errorf("sendlimit: saving state: %w", err)
	}
	return nil
}

// writeMu serialises writers of the file (the background writer and a
// suspension's immediate flush).
func (t *Tracker) writeFile(path string, b []byte) error {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	return atomicfile.Write(path, b, 0o600)
}

func (t *Tracker) flusher() {
	defer close(t.done)
	tick := time.NewTicker(t.opts.FlushEvery)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
			if err := t.Flush(); err != nil {
				t.log.Error("sendlimit: saving state", "err", err)
			}
		}
	}
}

// Close stops the background writer and writes the state.
func (t *Tracker) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	t.mu.Unlock()
	close(t.stop)
	<-t.done
	return t.Flush()
}
