package shield

import (
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// reloadDebounce coalesces the burst of events an editor's save produces.
const reloadDebounce = 100 * time.Millisecond

// startWatcher watches the folders of the rule files, so that a file that
// does not exist yet, or that an editor replaces by rename, is still seen.
func (s *Shield) startWatcher() error {
	if len(s.cfg().RuleFiles) == 0 {
		return nil
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	files := make(map[string]bool)
	dirs := make(map[string]bool)
	for _, f := range s.cfg().RuleFiles {
		abs, err := filepath.Abs(f)
		if err != nil {
			abs = filepath.Clean(f)
		}
		files[abs] = true
		dirs[filepath.Dir(abs)] = true
	}
	var firstErr error
	for d := range dirs {
		if err := w.Add(d); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	s.watcher = w
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		var mu sync.Mutex
		var timer *time.Timer
		for {
			select {
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				name, err := filepath.Abs(ev.Name)
				if err != nil || !files[name] {
					continue
				}
				mu.Lock()
				if timer == nil {
					timer = time.AfterFunc(reloadDebounce, func() {
						select {
						case <-s.closed:
							return
						default:
						}
						s.Reload() // logs its own outcome
					})
				} else {
					timer.Reset(reloadDebounce)
				}
				mu.Unlock()
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				s.log.Warn("shield watch error", "err", err)
			case <-s.closed:
				mu.Lock()
				if timer != nil {
					timer.Stop()
				}
				mu.Unlock()
				return
			}
		}
	}()
	return firstErr
}
