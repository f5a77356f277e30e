package accounts

import "fmt"

// CheckedUser is an ImportedUser whose address is normalised and whose
// domain is split off.
type CheckedUser struct {
	ImportedUser
	Domain string
}

// CheckImported is what every backend's ImportUsers checks before it
// writes: each address valid and given once, each quota >= 0, each hash
// accepted by checkHash (passwd.CheckHash, passed in because passwd builds
// on this package). The error names the address (and the position, from 1)
// of the first bad entry.
func CheckImported(users []ImportedUser, checkHash func(string) error) ([]CheckedUser, error) {
	out := make([]CheckedUser, 0, len(users))
	seen := make(map[string]bool, len(users))
	for i, u := range users {
		addr, domain, err := NormaliseAddress(u.Address)
		if err != nil {
			return nil, fmt.Errorf("user %d (%q): %w", i+1, u.Address, err)
		}
		if seen[addr] {
			return nil, NewError(ErrInvalid, fmt.Sprintf("user %d: %s is given twice", i+1, addr))
		}
		seen[addr] = true
		if u.Quota < 0 {
			return nil, NewError(ErrInvalid, fmt.Sprintf("user %d (%s): quota must not be negative (0 means the default quota)", i+1, addr))
		}
		if err := checkHash(u.Hash); err != nil {
			return nil, NewError(ErrInvalid, fmt.Sprintf("user %d (%s): %v", i+1, addr, err))
		}
		out = append(out, CheckedUser{ImportedUser: ImportedUser{Address: addr, Hash: u.Hash, Quota: u.Quota}, Domain: domain})
	}
	return out, nil
}
