package dkim

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	msgdkim "github.com/emersion/go-msgauth/dkim"
)

// fixture is a data folder with keys for three domains, made once for the
// package's tests (RSA key generation is the slow part).
type fixture struct {
	data    string
	records map[string][]string // DNS name -> TXT strings
}

var (
	fixOnce sync.Once
	fix     fixture
	fixErr  error
)

// testKeys: example.org signs with both key types, ed.example with
// ed25519 only, rsa.example with RSA only.
func testFixture(t testing.TB) fixture {
	t.Helper()
	fixOnce.Do(func() {
		fix.data, fixErr = os.MkdirTemp("", "agua-dkim-test-")
		if fixErr != nil {
			return
		}
		fix.records = map[string][]string{}
		for _, dk := range []struct {
			domain string
			algo   Algo
		}{{"example.org", Ed25519}, {"example.org", RSA}, {"ed.example", Ed25519}, {"rsa.example", RSA}, {"bücher.example", Ed25519}} {
			k, err := Keygen(fix.data, dk.domain, dk.algo, "", time.Time{})
			if err != nil {
				fixErr = err
				return
			}
			fix.records[k.Name()] = k.RecordStrings()
		}
	})
	if fixErr != nil {
		t.Fatal(fixErr)
	}
	return fix
}

func TestMain(m *testing.M) {
	code := m.Run()
	if fix.data != "" {
		os.RemoveAll(fix.data)
	}
	os.Exit(code)
}

// lookupTXT serves records the way a resolver does: the strings of the one
// TXT record joined.
func lookupTXT(records map[string][]string) func(string) ([]string, error) {
	return func(name string) ([]string, error) {
		if !strings.HasSuffix(name, ".") {
			name += "."
		}
		parts, ok := records[name]
		if !ok {
			return nil, fmt.Errorf("no such name %s", name)
		}
		return []string{strings.Join(parts, "")}, nil
	}
}

// goVerify verifies with go-msgauth and returns "pass d=... a=..." or
// "fail ..." per signature.
func goVerify(t testing.TB, records map[string][]string, msg []byte) []string {
	t.Helper()
	if !bytes.Contains(msg, []byte("\r\n\r\n")) {
		// go-msgauth's verifier needs the blank line that ends the header
		// (it reports EOF otherwise); dkimpy checks the bytes unchanged.
		msg = append(msg[:len(msg):len(msg)], "\r\n"...)
	}
	vs, err := msgdkim.VerifyWithOptions(bytes.NewReader(msg), &msgdkim.VerifyOptions{LookupTXT: lookupTXT(records)})
	if err != nil {
		t.Fatalf("go-msgauth verify: %v", err)
	}
	var out []string
	for _, v := range vs {
		if v.Err != nil {
			out = append(out, "fail "+v.Err.Error())
		} else {
			out = append(out, "pass d="+v.Domain)
		}
	}
	return out
}

// python finds a python3 that has dkimpy. With CI=true a missing one fails
// the test (CI installs python3-dkim), elsewhere it skips.
func python(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		path, err := exec.LookPath(p)
		if err != nil {
			continue
		}
		if exec.Command(path, "-c", "import dkim, nacl").Run() == nil {
			return path
		}
	}
	msg := "python3 with the dkim module not found (Debian: apt-get install python3-dkim): independent DKIM verification not run"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip("SKIP: " + msg)
	return ""
}

// pyVerify verifies every message with dkimpy in one python run and returns
// its lines per message name.
func pyVerify(t *testing.T, records map[string][]string, msgs map[string][]byte) map[string][]string {
	t.Helper()
	py := python(t)
	dir := t.TempDir()
	keys, _ := json.Marshal(records)
	keyFile := filepath.Join(dir, "keys.json")
	if err := os.WriteFile(keyFile, keys, 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{filepath.Join("testdata", "verify.py"), keyFile}
	for name, m := range msgs {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, m, 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, p)
	}
	out, err := exec.Command(py, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("verify.py: %v\n%s", err, out)
	}
	res := map[string][]string{}
	for line := range strings.Lines(string(out)) {
		name, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
		res[name] = append(res[name], rest)
	}
	return res
}

// signed is msg as it goes on the wire, with the signature fields on top.
func signed(t *testing.T, s *Signer, envFrom string, msg []byte) []byte {
	t.Helper()
	h, err := s.Sign(envFrom, msg)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if h == nil {
		t.Fatalf("Sign: no signature for env %q", envFrom)
	}
	return append(h, dotWire(t, msg)...)
}

// dotWire is what an SMTP client sends for msg, read back by the server:
// net/textproto's DotWriter (go-smtp's and net/smtp's DATA writer), then
// the terminating "." removed and the dot-stuffing undone.
func dotWire(t testing.TB, msg []byte) []byte {
	var b bytes.Buffer
	w := textproto.NewWriter(bufio.NewWriter(&b))
	dw := w.DotWriter()
	if _, err := dw.Write(msg); err != nil {
		t.Fatal(err)
	}
	if err := dw.Close(); err != nil {
		t.Fatal(err)
	}
	stuffed := bytes.TrimSuffix(b.Bytes(), []byte(".\r\n"))
	out := make([]byte, 0, len(stuffed))
	lineStart := true
	for i, c := range stuffed {
		if lineStart && c == '.' && i+1 < len(stuffed) {
			lineStart = false
			continue
		}
		out = append(out, c)
		lineStart = c == '\n'
	}
	return out
}
