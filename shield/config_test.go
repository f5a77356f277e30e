package shield

import (
	"fmt"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

// configFields flattens Config into toml key -> (default value, doc).
func configFields(t *testing.T) (keys []string, defaults, docs map[string]string) {
	defaults, docs = map[string]string{}, map[string]string{}
	var walk func(prefix string, v reflect.Value)
	walk = func(prefix string, v reflect.Value) {
		for i := 0; i < v.NumField(); i++ {
			f := v.Type().Field(i)
			if !f.IsExported() {
				continue // not configuration
			}
			key, doc := f.Tag.Get("toml"), f.Tag.Get("doc")
			if key == "" || doc == "" {
				t.Errorf("%s%s: missing toml or doc tag", prefix, f.Name)
				continue
			}
			fv := v.Field(i)
			if f.Type.Kind() == reflect.Struct {
				walk(prefix+key+".", fv)
				continue
			}
			if f.Type.Kind() == reflect.Map { // thresholds, by behaviour name
				names := fv.MapKeys()
				sort.Slice(names, func(i, j int) bool { return names[i].String() < names[j].String() })
				for _, n := range names {
					if strings.Contains(n.String(), "test_") || strings.Contains(n.String(), "spf_fail") {
						continue // behaviours registered by tests and examples only
					}
					if fv.Type().Elem().Kind() != reflect.Struct { // reputation weights, by input
						full := prefix + key + "." + n.String()
						keys = append(keys, full)
						defaults[full] = fmt.Sprint(fv.MapIndex(n).Interface())
						docs[full] = fv.Interface().(interface{ DocOf(string) string }).DocOf(n.String())
						continue
					}
					walk(prefix+key+"."+n.String()+".", fv.MapIndex(n))
				}
				continue
			}
			full := prefix + key
			keys = append(keys, full)
			docs[full] = doc
			switch x := fv.Interface().(type) {
			case time.Duration:
				defaults[full] = fmt.Sprintf("%q", x.String())
			case Action:
				defaults[full] = fmt.Sprintf("%q", x.String())
			case []string:
				defaults[full] = "[]"
			default:
				defaults[full] = fmt.Sprint(x)
			}
		}
	}
	walk("", reflect.ValueOf(DefaultConfig()))
	return keys, defaults, docs
}

func TestConfigTagsAndREADME(t *testing.T) {
	keys, defaults, docs := configFields(t)
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		row := fmt.Sprintf("| `%s` | `%s` | %s |", k, defaults[k], docs[k])
		if !strings.Contains(string(readme), row) {
			t.Errorf("README.md lacks the row %s", row)
		}
	}
}

func TestDefaultConfigValid(t *testing.T) {
	if errs := DefaultConfig().Validate(); len(errs) != 0 {
		t.Fatal(errs)
	}
}

func TestZeroConfigNamesEveryField(t *testing.T) {
	errs := Config{}.Validate()
	text := fmt.Sprint(errs)
	for _, want := range []string{"limits.per_ip_conns: must be > 0", "table_size: must be > 0", "ban_ttl: must be > 0",
		"thresholds.auth_failure.count: must be > 0", "thresholds.recipient.window: must be > 0", "default_action: must be",
		"ipv4_prefix: must be between"} {
		if !strings.Contains(text, want) {
			t.Errorf("missing %q in %s", want, text)
		}
	}
	if _, err := New(Config{}, Options{}); err == nil {
		t.Fatal("New accepted a zero config: zero must never mean unlimited")
	}
	cfg := DefaultConfig()
	cfg.Rules = []string{"deny 10.0.0.1", "deny nonsense"}
	cfg.Allow = []string{"10.0.0.0/99"}
	text = fmt.Sprint(cfg.Validate())
	if !strings.Contains(text, "rules[1]:") || !strings.Contains(text, "allow[0]:") {
		t.Fatal(text)
	}
}

// TestREADMEExampleParses decodes the TOML example of README.md over the
// defaults, as agua does with its [shield] section.
func TestREADMEExampleParses(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```toml\n(.*?)```").FindAllSubmatch(readme, -1)
	if len(m) == 0 {
		t.Fatal("no toml example in README.md")
	}
	for _, ex := range m {
		var wrap struct {
			Shield Config `toml:"shield"`
		}
		wrap.Shield = DefaultConfig()
		md, err := toml.Decode(string(ex[1]), &wrap)
		if err != nil {
			t.Fatalf("README example: %v\n%s", err, ex[1])
		}
		if und := md.Undecoded(); len(und) > 0 {
			t.Fatalf("README example has unknown keys %v", und)
		}
		if errs := wrap.Shield.Validate(); len(errs) > 0 {
			t.Fatalf("README example invalid: %v", errs)
		}
		if wrap.Shield.BanTTL != 15*time.Minute || wrap.Shield.Thresholds["auth_failure"].Window != 10*time.Minute ||
			wrap.Shield.BanAction != Drop {
			t.Fatalf("durations/actions not decoded: %+v", wrap.Shield)
		}
	}
}

// TestPrintDefaultsTable prints the README table (go test -run PrintDefaults -v).
func TestPrintDefaultsTable(t *testing.T) {
	if os.Getenv("SHIELD_PRINT_DEFAULTS") == "" {
		t.Skip("set SHIELD_PRINT_DEFAULTS=1")
	}
	keys, defaults, docs := configFields(t)
	for _, k := range keys {
		fmt.Printf("| `%s` | `%s` | %s |\n", k, defaults[k], docs[k])
	}
}
