package queue

import (
	"context"
	"slices"
	"strings"
	"time"
)

// List implements Queue: every message, oldest first.
func (q *File) List() ([]Message, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make([]Message, 0, len(q.msgs))
	for _, e := range q.msgs {
		if !e.deleted {
			out = append(out, e.message())
		}
	}
	slices.SortFunc(out, func(a, b Message) int {
		if c := a.Envelope.Received.Compare(b.Envelope.Received); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

func (e *entry) message() Message {
	return Message{ID: e.id, Envelope: e.env, Size: e.size, Held: e.held, DelayNotified: e.delayed, Rcpts: slices.Clone(e.rcpts)}
}

// Get implements Queue.
func (q *File) Get(id string) (Message, error) {
	e, err := q.entry(id)
	if err != nil {
		return Message{}, err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return e.message(), nil
}

// Hold implements Queue.
func (q *File) Hold(id string) error {
	return q.change(id, func(e *entry) { e.held = true })
}

// Release implements Queue.
func (q *File) Release(id string) error {
	return q.change(id, func(e *entry) { e.held = false })
}

// Retry implements Queue.
func (q *File) Retry(id string, now time.Time) error {
	return q.change(id, func(e *entry) {
		for i := range e.rcpts {
			if e.rcpts[i].Status == Deferred && e.rcpts[i].Next.After(now) {
				e.rcpts[i].Next = now
			}
		}
	})
}

// change applies f to a message and writes its state durably.
func (q *File) change(id string, f func(*entry)) error {
	return q.locked(id, func(e *entry) error {
		f(e)
		snap := e.state()
		q.mu.Unlock()
		err := q.writeState(context.Background(), id, snap)
		q.signal()
		return err
	})
}

// Delete implements Queue.
func (q *File) Delete(id string) error {
	return q.locked(id, func(e *entry) error {
		e.deleted = true
		q.mu.Unlock()
		return q.drop(context.Background(), id)
	})
}

// locked runs f with the message's state writes serialised and q.mu
// held; f unlocks q.mu before writing.
func (q *File) locked(id string, f func(*entry) error) error {
	e, err := q.entry(id)
	if err != nil {
		return err
	}
	e.wmu.Lock()
	defer e.wmu.Unlock()
	q.mu.Lock()
	if e.deleted {
		q.mu.Unlock()
		return ErrNotFound
	}
	return f(e)
}

// Stats implements Queue.
func (q *File) Stats() Stats {
	q.mu.Lock()
	defer q.mu.Unlock()
	s := Stats{ByDomain: map[string]int{}}
	for _, e := range q.msgs {
		if e.deleted {
			continue
		}
		s.Messages++
		s.Bytes += e.size
		if e.held {
			s.Held++
		}
		if s.Oldest.IsZero() || e.env.Received.Before(s.Oldest) {
			s.Oldest = e.env.Received
		}
		for _, r := range e.rcpts {
			if r.Status.Final() {
				continue
			}
			s.Recipients++
			if r.Status == Deferred {
				s.Deferred++
			}
			_, dom, _ := strings.Cut(r.Addr, "@")
			s.ByDomain[strings.ToLower(dom)]++
		}
	}
	return s
}

// Close waits for enqueues in progress, then stops the committer. The
// files stay; Open picks them up again.
func (q *File) Close() error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil
	}
	q.closed = true
	q.mu.Unlock()
	q.wg.Wait()
	// Later updates and operator changes get ErrClosed; those already
	// handed over are flushed before the committer ends.
	q.sendMu.Lock()
	q.stopped = true
	close(q.commits)
	q.sendMu.Unlock()
	<-q.done
	q.msgFD.Close()
	return q.lock.Close() // releases the flock
}
