package dkim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// reloadDebounce coalesces the events of one key being written (temporary
// file, link, removal of the temporary file) into one reload.
const reloadDebounce = 100 * time.Millisecond

// Watch reloads the keys whenever a file under DataDir/dkim changes, so that
// `agua dkim keygen` on a running server takes effect without a restart.
// It creates DataDir/dkim (0700) if needed. Close stops it.
func (s *Signer) Watch() error {
	if s == nil {
		return nil
	}
	if s.watchStop != nil {
		return errors.New("dkim: already watching")
	}
	root := Dir(s.dataDir)
	if err := os.MkdirAll(root, 0o700); err != nil {
		return fmt.Errorf("dkim: %w", err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("dkim: watch: %w", err)
	}
	if err := w.Add(root); err != nil {
		w.Close()
		return fmt.Errorf("dkim: watch %s: %w", root, err)
	}
	addDomains := func() {
		ents, _ := os.ReadDir(root)
		for _, e := range ents {
			if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
				w.Add(filepath.Join(root, e.Name())) // adding twice is a no-op
			}
		}
	}
	addDomains()
	// A key written between LoadKeys and the watches above is caught here.
	s.Reload()
	s.watchStop, s.watchDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(s.watchDone)
		defer w.Close()
		timer := time.NewTimer(time.Hour)
		timer.Stop()
		for {
			select {
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if strings.HasPrefix(filepath.Base(ev.Name), ".") {
					continue // a temporary file of writeNew
				}
				if filepath.Dir(ev.Name) == root && ev.Has(fsnotify.Create) {
					addDomains() // a new domain folder: watch it, then reload
				}
				timer.Reset(reloadDebounce)
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				s.log.Warn("dkim: watch error", "err", err)
			case <-timer.C:
				s.Reload() // logs its own outcome
			case <-s.watchStop:
				timer.Stop()
				return
			}
		}
	}()
	return nil
}

// Close stops Watch. The Signer still signs with the keys it has.
func (s *Signer) Close() error {
	if s == nil || s.watchStop == nil {
		return nil
	}
	select {
	case <-s.watchStop:
	default:
		close(s.watchStop)
	}
	<-s.watchDone
	return nil
}
