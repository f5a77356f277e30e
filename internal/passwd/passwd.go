// Package passwd is the password work every accounts backend shares: argon2id
// hashes in the PHC string format (RFC 9106, OWASP minimum parameters
// m=19456 KiB, t=2, p=1), verification of those and of imported bcrypt
// hashes ($2a$, $2b$, $2y$), a semaphore that bounds the memory hashing
// holds at once (Hasher), and the cache of recent successful logins
// (Cache). It knows nothing of where the hashes are stored.
package passwd

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strings"
	"sync"

	"github.com/agua-mail/agua/internal/accounts"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// argon2id parameters: the OWASP minimum (m=19 MiB, t=2, p=1). Memory is
// kept modest on purpose: a login flood makes many verifications at once,
// and the hasher semaphore multiplies this figure by its size.
const (
	argonMemory  = 19456 // KiB
	argonTime    = 2
	argonThreads = 1
	argonSaltLen = 16
	argonKeyLen  = 32
)

// Bounds on parameters read from stored hashes, so that one odd imported hash
// cannot make a verification take gigabytes or minutes.
const (
	maxArgonMemory  = 256 * 1024 // KiB
	maxArgonTime    = 16
	maxArgonThreads = 16
)

// MaxLen bounds the work an attacker can make us do per attempt.
const MaxLen = 1024

var b64 = base64.RawStdEncoding

// Hash returns the argon2id PHC string of password.
func Hash(password string) (string, error) {
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("reading random salt: %w", err)
	}
	key := argon2.IDKey([]byte(password), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, argonMemory, argonTime, argonThreads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// Verify reports whether password matches the stored hash, which is
// an argon2id PHC string or a bcrypt hash. An unsupported or malformed hash
// is an error, not a mismatch, so that the operator hears of it.
func Verify(hash, password string) (bool, error) {
	switch {
	case strings.HasPrefix(hash, "$argon2id$"):
		return verifyArgon2id(hash, password)
	case strings.HasPrefix(hash, "$2a$"), strings.HasPrefix(hash, "$2b$"), strings.HasPrefix(hash, "$2y$"):
		// bcrypt only looks at the first 72 bytes; GenerateFromPassword
		// refuses longer ones but Compare silently truncates, which is what
		// the system that made the hash did too.
		err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(password))
		switch err {
		case nil:
			return true, nil
		case bcrypt.ErrMismatchedHashAndPassword:
			return false, nil
		default:
			return false, fmt.Errorf("bcrypt hash: %w", err)
		}
	default:
		return false, fmt.Errorf("unsupported password hash scheme %q", schemeOf(hash))
	}
}

// schemeOf returns the "$scheme$" prefix of a hash for error messages,
// never the hash itself.
func schemeOf(hash string) string {
	if !strings.HasPrefix(hash, "$") {
		return "(none)"
	}
	if i := strings.IndexByte(hash[1:], '$'); i >= 0 {
		return hash[:i+2]
	}
	return "(malformed)"
}

// CheckHash reports whether hash is a stored hash Verify can check: an
// argon2id PHC string with parameters in the supported range, or a bcrypt
// hash. It computes nothing: `agua user import` uses it to refuse a bad line
// before anything is stored.
func CheckHash(hash string) error {
	switch {
	case strings.HasPrefix(hash, "$argon2id$"):
		_, err := parseArgon2id(hash)
		return err
	case strings.HasPrefix(hash, "$2a$"), strings.HasPrefix(hash, "$2b$"), strings.HasPrefix(hash, "$2y$"):
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return fmt.Errorf("bcrypt hash: %w", err)
		}
		if len(hash) != 60 {
			return fmt.Errorf("bcrypt hash: %d characters, want 60", len(hash))
		}
		return nil
	default:
		return fmt.Errorf("unsupported password hash scheme %q (want argon2id or bcrypt)", schemeOf(hash))
	}
}

// argon2Params is a parsed argon2id PHC string.
type argon2Params struct {
	m, t       uint32
	p          uint8
	salt, want []byte
}

func parseArgon2id(hash string) (argon2Params, error) {
	// $argon2id$v=19$m=19456,t=2,p=1$salt$hash
	var a argon2Params
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[0] != "" {
		return a, fmt.Errorf("malformed argon2id hash")
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return a, fmt.Errorf("argon2id hash has unsupported version %q", parts[2])
	}
	var m, t, p uint32
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil {
		return a, fmt.Errorf("argon2id hash has malformed parameters %q", parts[3])
	}
	if m == 0 || t == 0 || p == 0 || m > maxArgonMemory || t > maxArgonTime || p > maxArgonThreads {
		return a, fmt.Errorf("argon2id hash parameters %q are out of the supported range", parts[3])
	}
	salt, err := b64.DecodeString(parts[4])
	if err != nil || len(salt) < 8 {
		return a, fmt.Errorf("argon2id hash has a malformed salt")
	}
	want, err := b64.DecodeString(parts[5])
	if err != nil || len(want) < 16 || len(want) > 128 {
		return a, fmt.Errorf("argon2id hash has a malformed key")
	}
	return argon2Params{m: m, t: t, p: uint8(p), salt: salt, want: want}, nil
}

func verifyArgon2id(hash, password string) (bool, error) {
	a, err := parseArgon2id(hash)
	if err != nil {
		return false, err
	}
	got := argon2.IDKey([]byte(password), a.salt, a.t, a.m, a.p, uint32(len(a.want)))
	return subtle.ConstantTimeCompare(got, a.want) == 1, nil
}

// HashSlot is the memory one verification of agua's own argon2id hashes
// holds: the unit of the hasher's memory budget.
const HashSlot = argonMemory << 10

// DefaultHashMemory is the usual hash memory budget:
// three verifications at once.
const DefaultHashMemory = 64 << 20

// hasher bounds the hash computations running at once. Each argon2id call
// holds its m parameter in memory (19 MiB for agua's hashes), so a login
// flood queues here rather than exhaust memory and CPU: the semaphore has
// one slot per 19 MiB of the memory budget, and no more slots than cores.
// A stored hash with a larger m (an imported one) takes as many slots as
// its memory needs, at most all of them.
type Hasher struct {
	sem chan struct{}
	big sync.Mutex // held while taking several slots, so two such never deadlock
	// observe, when set (tests), is called for every hash computed.
	Observe func()
	drain   *drainRelease // hands the work memory back when the queue drains (idle.go)
}

// NewHasher sizes the semaphore from a memory budget in bytes and the
// number of cores.
func NewHasher(budget int64, cores int) *Hasher {
	n := int(min(budget/HashSlot, int64(cores)))
	return &Hasher{sem: make(chan struct{}, max(n, 1)), drain: newDrainRelease()}
}

// slots returns how many slots verifying against hash takes.
func (h *Hasher) Slots(hash string) int {
	m := argonMemoryOf(hash)
	return min(max(int((m<<10+HashSlot-1)/HashSlot), 1), cap(h.sem))
}

// argonMemoryOf returns the m parameter (KiB) of an argon2id PHC string, or
// 0 for anything else.
func argonMemoryOf(hash string) int64 {
	if !strings.HasPrefix(hash, "$argon2id$") {
		return 0
	}
	_, params, ok := strings.Cut(hash, "$m=")
	if !ok {
		return 0
	}
	var m int64
	for i := 0; i < len(params) && params[i] >= '0' && params[i] <= '9' && m <= maxArgonMemory; i++ {
		m = m*10 + int64(params[i]-'0')
	}
	return min(m, maxArgonMemory)
}

// acquire waits for n slots, honouring ctx, and returns the function that
// gives them back.
func (h *Hasher) Acquire(ctx context.Context, n int) (release func(), err error) {
	h.drain.enter()
	if n > 1 {
		h.big.Lock()
		defer h.big.Unlock()
	}
	taken := 0
	give := func() {
		for range taken {
			<-h.sem
		}
	}
	for taken < n {
		select {
		case h.sem <- struct{}{}:
			taken++
		case <-ctx.Done():
			give()
			h.drain.leave(false)
			return nil, ctx.Err()
		}
	}
	if h.Observe != nil {
		h.Observe()
	}
	return sync.OnceFunc(func() {
		give()
		h.drain.leave(true)
	}), nil
}

// Cap is the number of slots.
func (h *Hasher) Cap() int { return cap(h.sem) }

// InUse is the number of slots taken now.
func (h *Hasher) InUse() int { return len(h.sem) }

// Hash hashes password in one slot.
func (h *Hasher) Hash(ctx context.Context, password string) (string, error) {
	release, err := h.Acquire(ctx, 1)
	if err != nil {
		return "", err
	}
	defer release()
	return Hash(password)
}

// Verify checks password against hash in the slots hash needs.
func (h *Hasher) Verify(ctx context.Context, hash, password string) (bool, error) {
	release, err := h.Acquire(ctx, h.Slots(hash))
	if err != nil {
		return false, err
	}
	defer release()
	return Verify(hash, password)
}

// Usable says whether password can be checked at all: not empty, not over
// MaxLen. An unusable one still costs a verification in Check.
func Usable(password string) bool { return password != "" && len(password) <= MaxLen }

// dummyHash is what Check verifies when there is no stored hash, so that an
// unknown user costs what a wrong password does: agua's own parameters, a
// fixed salt and a key no password is known to give (it never matters:
// Check fails an unknown user whatever the outcome). A constant, not a
// hash computed at start: that cost every server and CLI start one hash
// and 19 MiB that stayed in the process's RSS until the runtime returned it.
var dummyHash = fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
	b64.EncodeToString([]byte("agua-dummy-salt!")), b64.EncodeToString([]byte("no password is known to hash to.")))

// Check is the password check of every backend's Authenticate. usable says
// the address is valid and the password Usable; lookup, called only then,
// reads the stored hash (found false for an unknown user). It verifies
// exactly once in every case, against dummyHash when there is no stored hash
// and with a password cut to MaxLen, so that timing does not tell an
// unknown user from a wrong password. It returns the stored hash that
// matched; accounts.ErrAuthFailed for a wrong password or an unknown user;
// the error of lookup, or of a verification that could not run (ctx, a
// corrupt stored hash), as it is: the operator's problem, not the client's.
func (h *Hasher) Check(ctx context.Context, password string, usable bool, lookup func() (stored string, found bool, err error)) (string, error) {
	hash, found := dummyHash, false
	if usable {
		stored, ok, err := lookup()
		if err != nil {
			return "", err
		}
		if ok {
			hash, found = stored, true
		}
	}
	if len(password) > MaxLen {
		password = password[:MaxLen]
	}
	ok, err := h.Verify(ctx, hash, password)
	if err != nil {
		return "", fmt.Errorf("verifying a password: %w", err)
	}
	if !ok || !found {
		return "", accounts.ErrAuthFailed
	}
	return hash, nil
}

// CheckNew validates a password being set.
func CheckNew(password string) error {
	if password == "" {
		return accounts.NewError(accounts.ErrInvalid, "password is empty")
	}
	if len(password) > MaxLen {
		return accounts.NewError(accounts.ErrInvalid, fmt.Sprintf("password is longer than %d bytes", MaxLen))
	}
	return nil
}
