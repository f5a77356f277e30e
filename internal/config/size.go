package config

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
)

// ByteSize is a size in bytes that reads from TOML as an integer or as a
// string with a unit: "512", "64KiB", "25MiB", "1GiB", "10MB" (powers of 1000
// for KB/MB/GB, of 1024 for KiB/MiB/GiB and for the short forms K/M/G).
type ByteSize int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40},
	{"b", 1},
}

// ParseByteSize parses a size such as "25MiB".
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	if t == "" {
		return 0, fmt.Errorf("empty size")
	}
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(t, u.suffix) {
			t = strings.TrimSpace(strings.TrimSuffix(t, u.suffix))
			mult = u.mult
			break
		}
	}
	n, err := strconv.ParseFloat(t, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid size %q (use e.g. 25MiB, 1GiB, 4096)", s)
	}
	v := n * float64(mult)
	if v > 1<<62 {
		return 0, fmt.Errorf("size %q too large", s)
	}
	return ByteSize(v), nil
}

// UnmarshalTOML implements toml.Unmarshaler for both integers and strings.
func (b *ByteSize) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case int64:
		if x < 0 {
			return fmt.Errorf("size must not be negative")
		}
		*b = ByteSize(x)
		return nil
	case string:
		n, err := ParseByteSize(x)
		if err != nil {
			return err
		}
		*b = n
		return nil
	default:
		return errors.New(wrongType(`a number of bytes or a size such as "25MiB"`, tomlValue(reflect.ValueOf(v)), fmt.Sprintf("%T", v)))
	}
}

// UnmarshalText lets flags and other text decoders read sizes.
func (b *ByteSize) UnmarshalText(p []byte) error {
	n, err := ParseByteSize(string(p))
	if err != nil {
		return err
	}
	*b = n
	return nil
}

// String formats the size with the largest binary unit that divides it.
func (b ByteSize) String() string {
	n := int64(b)
	for _, u := range []struct {
		s string
		m int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.m == 0 {
			return strconv.FormatInt(n/u.m, 10) + u.s
		}
	}
	return strconv.FormatInt(n, 10)
}

// MarshalText writes the size as String does.
func (b ByteSize) MarshalText() ([]byte, error) { return []byte(b.String()), nil }
