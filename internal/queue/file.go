package queue

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Options configure a file queue.
type Options struct {
	// Logger receives quarantines and failed cleanups; nil discards.
	Logger *slog.Logger
	// FsyncEach makes every writer fsync its own file and each commit
	// fsync the queue folder once, instead of two syncfs(2) calls per
	// commit (see maildir.Options.FsyncEach for when to choose it).
	FsyncEach bool
	// MaxBatch is the most writes one group commit takes; 256 if zero.
	MaxBatch int
	// Now is the clock (tests); time.Now if nil.
	Now func() time.Time
}

const (
	magic      = "AGUAQ1"
	headerLen  = len(magic) + 1 + 20 + 1 + 10 + 1 // "AGUAQ1 <body size> <envelope length>\n"
	maxEnvLen  = 1 << 24                          // an envelope of 16 MiB is a corrupt file
	stateExt   = ".state"
	filePerm   = 0o600
	dirPerm    = 0o700
	defaultMax = 256
)

// File is the embedded queue: one file per message under dir/msg.
type File struct {
	dir, msgDir, tmpDir, corruptDir string
	log                             *slog.Logger
	now                             func() time.Time
	fsyncEach                       bool
	msgFD                           *os.File // msg/, for syncfs and fsync
	lock                            *os.File // holds the flock(2) on dir/lock

	commits  chan *commit
	sendMu   sync.RWMutex // guards sending on commits against Close
	stopped  bool         // commits is closed
	done     chan struct{}
	maxBatch int
	wake     chan struct{}

	batches, committed atomic.Int64 // flushes made and writes they carried
	testHookBatch      func(n int)  // called before each flush (tests)

	mu     sync.Mutex
	msgs   map[string]*entry
	closed bool
	wg     sync.WaitGroup // writers between Begin and the end of Commit
}

// entry is a queued message in memory.
type entry struct {
	id      string
	env     Envelope
	size    int64
	bodyOff int64
	held    bool
	delayed bool // a delay notice was sent (Message.DelayNotified)
	rcpts   []Recipient
	claimed []bool
	deleted bool
	wmu     sync.Mutex // serialises state file writes
}

// state is what the state file of e holds. q.mu is held.
func (e *entry) state() state {
	return state{Held: e.held, Delayed: e.delayed, Rcpts: slices.Clone(e.rcpts)}
}

// state is the content of a state file.
type state struct {
	Held    bool        `json:"held,omitempty"`
	Delayed bool        `json:"delay_notified,omitempty"`
	Rcpts   []Recipient `json:"rcpts"`
}

// Open opens (creating) the queue in dir, removes writes that never
// committed, quarantines corrupt files into dir/corrupt and drops messages
// whose recipients are all final.
func Open(dir string, opts Options) (*File, error) {
	q := &File{
		dir:        dir,
		msgDir:     filepath.Join(dir, "msg"),
		tmpDir:     filepath.Join(dir, "tmp"),
		corruptDir: filepath.Join(dir, "corrupt"),
		log:        opts.Logger,
		now:        opts.Now,
		fsyncEach:  opts.FsyncEach,
		maxBatch:   opts.MaxBatch,
		wake:       make(chan struct{}, 1),
		msgs:       map[string]*entry{},
		done:       make(chan struct{}),
	}
	if q.log == nil {
		q.log = slog.New(slog.DiscardHandler)
	}
	if q.now == nil {
		q.now = time.Now
	}
	if q.maxBatch <= 0 {
		q.maxBatch = defaultMax
	}
	for _, d := range []string{dir, q.msgDir, q.tmpDir, q.corruptDir} {
		if err := os.MkdirAll(d, dirPerm); err != nil {
			return nil, fmt.Errorf("queue: %w", err)
		}
	}
	// Writes that never committed were never acknowledged.
	tmps, err := os.ReadDir(q.tmpDir)
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	for _, t := range tmps {
		os.Remove(filepath.Join(q.tmpDir, t.Name()))
	}
	// One process owns the queue: its state lives in memory too.
	if q.lock, err = os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, filePerm); err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	if err := unix.Flock(int(q.lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		q.lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrLocked, dir)
		}
		return nil, fmt.Errorf("queue: locking %s: %w", dir, err)
	}
	if q.msgFD, err = os.Open(q.msgDir); err != nil {
		q.lock.Close()
		return nil, fmt.Errorf("queue: %w", err)
	}
	if err := q.load(); err != nil {
		q.msgFD.Close()
		q.lock.Close()
		return nil, err
	}
	q.commits = make(chan *commit, q.maxBatch)
	go q.committer()
	if len(q.msgs) > 0 {
		q.signal()
	}
	return q, nil
}

// load reads every message's envelope and state.
func (q *File) load() error {
	ents, err := os.ReadDir(q.msgDir)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	names := map[string]bool{}
	for _, e := range ents {
		names[e.Name()] = true
	}
	for _, de := range ents {
		name := de.Name()
		if id, ok := strings.CutSuffix(name, stateExt); ok {
			if !names[id] {
				// The message was removed after its last state was
				// written: the state is all that is left.
				os.Remove(filepath.Join(q.msgDir, name))
			}
			continue
		}
		if !ValidID(name) {
			q.quarantine(name, "not a queue file name")
			continue
		}
		e, err := q.read(name, names[name+stateExt])
		if err != nil {
			q.quarantine(name, err.Error())
			continue
		}
		if allFinal(e.rcpts) {
			q.remove(e.id)
			continue
		}
		q.msgs[name] = e
	}
	return nil
}

// read parses a message file's header and envelope and its state file.
func (q *File) read(id string, hasState bool) (*entry, error) {
	f, err := os.Open(filepath.Join(q.msgDir, id))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	var hdr [headerLen]byte
	if _, err := io.ReadFull(f, hdr[:]); err != nil {
		return nil, fmt.Errorf("short header: %v", err)
	}
	size, envLen, err := parseHeader(hdr[:])
	if err != nil {
		return nil, err
	}
	bodyOff := int64(headerLen) + envLen + 1
	if st.Size() != bodyOff+size {
		return nil, fmt.Errorf("file is %d bytes, header says %d", st.Size(), bodyOff+size)
	}
	envb := make([]byte, envLen+1)
	if _, err := io.ReadFull(f, envb); err != nil || envb[envLen] != '\n' {
		return nil, fmt.Errorf("bad envelope (%v)", err)
	}
	e := &entry{id: id, size: size, bodyOff: bodyOff}
	if err := json.Unmarshal(envb[:envLen], &e.env); err != nil {
		return nil, fmt.Errorf("bad envelope: %v", err)
	}
	if len(e.env.To) == 0 {
		return nil, fmt.Errorf("no recipients")
	}
	e.rcpts = make([]Recipient, len(e.env.To))
	for i, to := range e.env.To {
		e.rcpts[i] = Recipient{Addr: to, Status: Pending}
	}
	if hasState {
		b, err := os.ReadFile(filepath.Join(q.msgDir, id+stateExt))
		if err != nil {
			return nil, err
		}
		var s state
		if err := json.Unmarshal(b, &s); err != nil {
			return nil, fmt.Errorf("bad state file: %v", err)
		}
		if len(s.Rcpts) != len(e.rcpts) {
			return nil, fmt.Errorf("state file has %d recipients, envelope %d", len(s.Rcpts), len(e.rcpts))
		}
		for i, r := range s.Rcpts {
			if r.Addr != e.rcpts[i].Addr || r.Status > Bounced {
				return nil, fmt.Errorf("state file does not match the envelope")
			}
		}
		e.rcpts, e.held, e.delayed = s.Rcpts, s.Held, s.Delayed
	}
	e.claimed = make([]bool, len(e.rcpts))
	return e, nil
}

func parseHeader(h []byte) (size, envLen int64, err error) {
	fields := strings.Fields(string(h))
	if len(fields) != 3 || fields[0] != magic || h[len(h)-1] != '\n' {
		return 0, 0, fmt.Errorf("not a queue file")
	}
	size, err1 := strconv.ParseInt(fields[1], 10, 64)
	envLen, err2 := strconv.ParseInt(fields[2], 10, 64)
	if err1 != nil || err2 != nil || size < 0 || envLen <= 0 || envLen > maxEnvLen {
		return 0, 0, fmt.Errorf("bad header")
	}
	return size, envLen, nil
}

// quarantine moves a bad message file (and its state) out of the way,
// keeping it for the operator; the neighbours are untouched.
func (q *File) quarantine(name, reason string) {
	q.log.Error("queue: corrupt queue file quarantined", "file", filepath.Join(q.msgDir, name), "reason", reason, "moved_to", q.corruptDir)
	for _, n := range []string{name, name + stateExt} {
		src := filepath.Join(q.msgDir, n)
		if _, err := os.Lstat(src); err != nil {
			continue
		}
		if err := os.Rename(src, filepath.Join(q.corruptDir, n)); err != nil {
			q.log.Error("queue: cannot quarantine", "file", src, "err", err)
		}
	}
}

// Begin implements Queue.
func (q *File) Begin(ctx context.Context, env Envelope, body io.Reader) (Tx, error) {
	if len(env.To) == 0 {
		return nil, fmt.Errorf("queue: no recipients")
	}
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil, ErrClosed
	}
	q.wg.Add(1)
	q.mu.Unlock()
	tx, err := q.write(env, body)
	if err != nil {
		q.wg.Done()
		return nil, err
	}
	return tx, nil
}

func (q *File) write(env Envelope, body io.Reader) (*fileTx, error) {
	if env.Received.IsZero() {
		env.Received = q.now()
	}
	envb, err := json.Marshal(env)
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	id := NewID(q.now())
	tmp := filepath.Join(q.tmpDir, id)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, filePerm)
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	fail := func(err error) (*fileTx, error) {
		f.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("queue: writing %s: %w", tmp, err)
	}
	w := bufio.NewWriterSize(f, 64<<10)
	w.WriteString(fmt.Sprintf("%s %020d %010d\n", magic, 0, len(envb)))
	w.Write(envb)
	w.WriteByte('\n')
	n, err := io.Copy(w, body)
	if err != nil {
		return fail(err)
	}
	if err := w.Flush(); err != nil {
		return fail(err)
	}
	// The size goes in last: a file whose size does not match its header
	// is recognised as corrupt.
	if _, err := f.WriteAt([]byte(fmt.Sprintf("%s %020d %010d\n", magic, n, len(envb))), 0); err != nil {
		return fail(err)
	}
	if q.fsyncEach {
		if err := f.Sync(); err != nil {
			return fail(err)
		}
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("queue: %w", err)
	}
	e := &entry{id: id, env: env, size: n, bodyOff: int64(headerLen + len(envb) + 1)}
	e.rcpts = make([]Recipient, len(env.To))
	for i, to := range env.To {
		e.rcpts[i] = Recipient{Addr: to, Status: Pending}
	}
	e.claimed = make([]bool, len(env.To))
	return &fileTx{q: q, e: e, tmp: tmp}, nil
}

type fileTx struct {
	q    *File
	e    *entry
	tmp  string
	done bool
}

// Commit implements Tx.
func (t *fileTx) Commit(ctx context.Context) (string, error) {
	if t.done {
		return "", fmt.Errorf("queue: transaction already ended")
	}
	t.done = true
	defer t.q.wg.Done()
	err := t.q.commit(ctx, []rename{{t.tmp, filepath.Join(t.q.msgDir, t.e.id)}})
	if err != nil {
		os.Remove(t.tmp)
		return "", err
	}
	t.q.mu.Lock()
	t.q.msgs[t.e.id] = t.e
	t.q.mu.Unlock()
	t.q.signal()
	return t.e.id, nil
}

// Abort implements Tx.
func (t *fileTx) Abort() {
	if t.done {
		return
	}
	t.done = true
	os.Remove(t.tmp)
	t.q.wg.Done()
}

// Enqueue implements Queue.
func (q *File) Enqueue(ctx context.Context, env Envelope, body io.Reader) (string, error) {
	tx, err := q.Begin(ctx, env, body)
	if err != nil {
		return "", err
	}
	return tx.Commit(ctx)
}

func (q *File) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Wake implements Queue.
func (q *File) Wake() <-chan struct{} { return q.wake }

// Claim implements Queue.
func (q *File) Claim(now time.Time, max int) ([]Job, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil, ErrClosed
	}
	var due []*entry
	for _, e := range q.msgs {
		if !e.held && !e.deleted && e.dueIndex(now) >= 0 {
			due = append(due, e)
		}
	}
	slices.SortFunc(due, func(a, b *entry) int {
		if c := a.env.Received.Compare(b.env.Received); c != 0 {
			return c
		}
		return strings.Compare(a.id, b.id)
	})
	var jobs []Job
	for _, e := range due {
		if len(jobs) >= max {
			break
		}
		j := Job{ID: e.id, Envelope: e.env, Size: e.size, DelayNotified: e.delayed}
		for i, r := range e.rcpts {
			if !e.claimed[i] && isDue(r, now) {
				e.claimed[i] = true
				j.Rcpts = append(j.Rcpts, r)
			}
		}
		jobs = append(jobs, j)
	}
	return jobs, nil
}

func isDue(r Recipient, now time.Time) bool {
	return r.Status == Pending || (r.Status == Deferred && !r.Next.After(now))
}

func (e *entry) dueIndex(now time.Time) int {
	for i, r := range e.rcpts {
		if !e.claimed[i] && isDue(r, now) {
			return i
		}
	}
	return -1
}

// Open implements Queue.
func (q *File) Open(id string) (io.ReadCloser, error) {
	e, err := q.entry(id)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(q.msgDir, id))
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	return &body{io.NewSectionReader(f, e.bodyOff, e.size), f}, nil
}

type body struct {
	*io.SectionReader
	f *os.File
}

func (b *body) Close() error { return b.f.Close() }

func (q *File) entry(id string) (*entry, error) {
	if !ValidID(id) {
		return nil, ErrBadID
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	e, ok := q.msgs[id]
	if !ok || e.deleted {
		return nil, ErrNotFound
	}
	return e, nil
}

// Update implements Queue.
func (q *File) Update(ctx context.Context, id string, results []Result) error {
	q.mu.Lock()
	e, ok := q.msgs[id]
	q.mu.Unlock()
	if !ok {
		return ErrNotFound
	}
	e.wmu.Lock()
	defer e.wmu.Unlock()
	q.mu.Lock()
	if e.deleted {
		q.mu.Unlock()
		return nil // deleted by the operator meanwhile: nothing to record
	}
	now := q.now()
	for _, res := range results {
		i := slices.IndexFunc(e.rcpts, func(r Recipient) bool { return r.Addr == res.Rcpt })
		for i >= 0 && !e.claimed[i] {
			// The same address twice in one envelope: find the claimed one.
			j := slices.IndexFunc(e.rcpts[i+1:], func(r Recipient) bool { return r.Addr == res.Rcpt })
			if j < 0 {
				i = -1
				break
			}
			i += 1 + j
		}
		if i < 0 {
			q.mu.Unlock()
			return fmt.Errorf("%w: %s in %s", ErrNotClaimed, res.Rcpt, id)
		}
		r := &e.rcpts[i]
		r.Status, r.Reply, r.Updated = res.Status, res.Reply, now
		r.Attempts++
		r.Next = time.Time{}
		if res.Status == Deferred {
			r.Next = res.Next
		}
		e.claimed[i] = false
		if res.DelayNotified {
			e.delayed = true
		}
	}
	// Recipients claimed by this job without a result go back as they were.
	// (Claims are per recipient; a job always reports for all of its own.)
	done := allFinal(e.rcpts)
	if done {
		e.deleted = true
	}
	snap := e.state()
	q.mu.Unlock()

	if done {
		return q.drop(ctx, id)
	}
	err := q.writeState(ctx, id, snap)
	q.signal() // a deferred recipient may be due at once (Next in the past)
	return err
}

// Unclaim implements Queue.
func (q *File) Unclaim(id string, rcpts []string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	e, ok := q.msgs[id]
	if !ok {
		return
	}
	for _, a := range rcpts {
		for i, r := range e.rcpts {
			if r.Addr == a && e.claimed[i] {
				e.claimed[i] = false
				break
			}
		}
	}
	q.signal()
}

// writeState replaces the state file of id durably.
func (q *File) writeState(ctx context.Context, id string, s state) error {
	b, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	tmp := filepath.Join(q.tmpDir, id+stateExt)
	if err := writeFile(tmp, b, q.fsyncEach); err != nil {
		return err
	}
	if err := q.commit(ctx, []rename{{tmp, filepath.Join(q.msgDir, id+stateExt)}}); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

func writeFile(path string, b []byte, sync bool) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, filePerm)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	_, err = f.Write(b)
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("queue: writing %s: %w", path, err)
	}
	return nil
}

// drop removes a finished or deleted message durably: the message file
// goes first, so a crash leaves at most a state file, which Open removes.
func (q *File) drop(ctx context.Context, id string) error {
	if err := os.Remove(filepath.Join(q.msgDir, id)); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("queue: %w", err)
	}
	err := q.commit(ctx, nil) // the folder's fsync makes the removal durable
	os.Remove(filepath.Join(q.msgDir, id+stateExt))
	q.mu.Lock()
	delete(q.msgs, id)
	q.mu.Unlock()
	return err
}

// remove drops a message found finished at Open.
func (q *File) remove(id string) {
	os.Remove(filepath.Join(q.msgDir, id))
	os.Remove(filepath.Join(q.msgDir, id+stateExt))
}

func allFinal(rs []Recipient) bool {
	for _, r := range rs {
		if !r.Status.Final() {
			return false
		}
	}
	return true
}

// NewID returns a queue ID: the time in nanoseconds and 32 random bits, in
// hexadecimal, so IDs sort roughly by arrival. Every implementation names
// messages this way, so that IDs read the same whichever queue holds them.
func NewID(now time.Time) string {
	var rb [4]byte
	rand.Read(rb[:])
	return fmt.Sprintf("%016x%08x", uint64(now.UnixNano()), binary.BigEndian.Uint32(rb[:]))
}

// ValidID accepts what NewID makes: lower-case hex, nothing a path could
// use.
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	return len(bytes.Trim([]byte(id), "0123456789abcdef")) == 0
}
