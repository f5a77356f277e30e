package passwd

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/agua-mail/agua/internal/accounts"
)

// maxFileErrors bounds the problems ReadPasswdFile lists.
const maxFileErrors = 20

// maxFileLine bounds one line of a passwd-file.
const maxFileLine = 64 << 10

// ErrPasswdFile is the kind of every problem ReadPasswdFile reports.
var ErrPasswdFile = errors.New("bad passwd-file")

// ReadPasswdFile reads users with stored hashes, for `agua user import`, in
// Dovecot's passwd-file format (one user a line, fields split by ':'):
//
//	ADDRESS:{SCHEME}HASH[:uid:gid:gecos:home:shell:extra]
//
// Only the first two fields are read. The scheme prefix is optional and, when
// given, must be one whose hashes agua verifies: {ARGON2ID} (an argon2id PHC
// string), {BLF-CRYPT} or {CRYPT} with a bcrypt hash; the hash must pass
// CheckHash. Blank lines and lines starting with '#' are skipped. Every quota
// is quota. It reports every bad line (the first maxFileErrors) with its
// number, and then returns no users at all.
func ReadPasswdFile(r io.Reader, quota int64) ([]accounts.ImportedUser, error) {
	var users []accounts.ImportedUser
	var problems []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), maxFileLine)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimRight(sc.Text(), "\r")
		if t := strings.TrimSpace(line); t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		u, err := passwdLine(line)
		if err != nil {
			if len(problems) < maxFileErrors {
				problems = append(problems, fmt.Sprintf("line %d: %v", n, err))
			} else if len(problems) == maxFileErrors {
				problems = append(problems, "(more lines not listed)")
			}
			continue
		}
		u.Quota = quota
		users = append(users, u)
	}
	if err := sc.Err(); err != nil {
		problems = append(problems, fmt.Sprintf("after line %d: %v", n, err))
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w:\n  %s", ErrPasswdFile, strings.Join(problems, "\n  "))
	}
	return users, nil
}

func passwdLine(line string) (accounts.ImportedUser, error) {
	addr, rest, ok := strings.Cut(line, ":")
	if !ok {
		return accounts.ImportedUser{}, errors.New("no ':' after the address")
	}
	hash, _, _ := strings.Cut(rest, ":")
	if strings.HasPrefix(hash, "{") {
		scheme, h, ok := strings.Cut(hash[1:], "}")
		if !ok {
			return accounts.ImportedUser{}, errors.New("unterminated {SCHEME} prefix")
		}
		switch s := strings.ToUpper(scheme); {
		case s == "ARGON2ID" && strings.HasPrefix(h, "$argon2id$"),
			(s == "BLF-CRYPT" || s == "CRYPT") && strings.HasPrefix(h, "$2"):
		default:
			// The scheme itself is safe to show; the hash is not.
			return accounts.ImportedUser{}, fmt.Errorf("password scheme {%.20s} with this hash is not one agua verifies (ARGON2ID, or BLF-CRYPT/CRYPT with a bcrypt hash)", scheme)
		}
		hash = h
	}
	if _, _, err := accounts.NormaliseAddress(addr); err != nil {
		return accounts.ImportedUser{}, err
	}
	if err := CheckHash(hash); err != nil {
		return accounts.ImportedUser{}, fmt.Errorf("%s: %w", strings.ToLower(addr), err)
	}
	return accounts.ImportedUser{Address: addr, Hash: hash}, nil
}
