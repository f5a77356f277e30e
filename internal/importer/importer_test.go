package importer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agua-mail/agua/internal/mailstore"
	"github.com/agua-mail/agua/internal/mailstore/memstore"
)

// fakeSource is an IMAP-like source in memory: folders of messages with
// ascending UIDs under a UIDVALIDITY.
type fakeSource struct {
	validity uint32
	folders  []Folder
	msgs     map[string][]Message
	bodies   map[string][]byte // by Message-ID
	fetched  int
	// failAfter makes Fetch fail after this many messages (0: never).
	failAfter int
}

var errInjected = errors.New("connection lost")

func (s *fakeSource) ID() string                                { return "fake://source" }
func (s *fakeSource) Close() error                              { return nil }
func (s *fakeSource) Folders(context.Context) ([]Folder, error) { return s.folders, nil }
func (s *fakeSource) Messages(_ context.Context, f Folder) (uint32, []Message, error) {
	return s.validity, s.msgs[f.Name], nil
}

func (s *fakeSource) Fetch(_ context.Context, _ Folder, msgs []Message, fn func(Message, io.Reader, int64) error) error {
	for _, m := range msgs {
		if s.failAfter > 0 && s.fetched >= s.failAfter {
			return errInjected
		}
		s.fetched++
		b := s.bodies[m.MessageID]
		if err := fn(m, bytes.NewReader(b), int64(len(b))); err != nil {
			return err
		}
	}
	return nil
}

func newFake(perFolder int) *fakeSource {
	s := &fakeSource{validity: 7, msgs: map[string][]Message{}, bodies: map[string][]byte{}}
	base := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	n := 0
	for _, f := range []Folder{{"INBOX", ""}, {"Lists/Go", "Lists.Go"}} {
		s.folders = append(s.folders, f)
		for i := range perFolder {
			n++
			id := fmt.Sprintf("m%d@test", n)
			body := []byte(fmt.Sprintf("Message-ID: <%s>\r\nSubject: %d\r\n\r\nbody %d\r\n", id, n, n))
			s.bodies[id] = body
			s.msgs[f.Name] = append(s.msgs[f.Name], Message{UID: uint32(10 + 2*i), Flags: "S", Date: base.Add(time.Duration(n) * time.Hour),
				Size: int64(len(body)), MessageID: id, Deleted: i == 3})
		}
	}
	return s
}

func count(t *testing.T, st mailstore.Store, user, folder string) int {
	t.Helper()
	f, err := st.Folder(context.Background(), user, folder)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	l, err := f.List()
	if err != nil {
		t.Fatal(err)
	}
	return len(l.Messages)
}

func TestResumeAfterFailureAndCrashWindow(t *testing.T) {
	ctx := context.Background()
	store := memstore.Open(memstore.NewData())
	statePath := filepath.Join(t.TempDir(), "state.json")
	opts := Options{Store: store, User: "u@test", StatePath: statePath, Batch: 4, Verify: true}
	src := newFake(20) // 19 to copy per folder (one \Deleted)

	// A connection lost after 11 messages: the state covers what was done.
	src.failAfter = 11
	if _, err := Run(ctx, src, opts); !errors.Is(err, errInjected) {
		t.Fatalf("first run: %v", err)
	}
	if n := count(t, store, "u@test", ""); n != 11 {
		t.Fatalf("after the failure INBOX has %d messages, want 11", n)
	}
	// A state file from before the last batch was saved stands for a crash
	// between an append and the state's save.
	old, err := os.ReadFile(statePath)
	if err != nil {
		t.Fatal(err)
	}
	src.failAfter = 0
	sum, err := Run(ctx, src, opts)
	if err != nil {
		t.Fatal(err)
	}
	if tot := sum.Totals(); tot.Copied != 38-11 || tot.Present != 11 || tot.Deleted != 2 || tot.Missing != 0 {
		t.Fatalf("resumed: %+v", tot)
	}
	// Put back the state of the failed run: the resumed run's appends are
	// now unrecorded, as after a kill -9 before the state was saved.
	if !bytes.Contains(old, []byte(`"last_uid": 32`)) || !bytes.Contains(old, []byte(`"target_mark": 12`)) {
		t.Fatalf("state after 11 messages (UIDs 10..32, 16 deleted): %s", old)
	}
	if err := os.WriteFile(statePath, old, 0o600); err != nil {
		t.Fatal(err)
	}
	// The saved mark says where unrecorded appends can be: not copied again.
	sum, err = Run(ctx, src, opts)
	if err != nil {
		t.Fatal(err)
	}
	if tot := sum.Totals(); tot.Copied != 0 || tot.Present != 38 {
		t.Fatalf("after a lost state save: %+v", tot)
	}
	for _, f := range []string{"", "Lists.Go"} {
		if n := count(t, store, "u@test", f); n != 19 {
			t.Fatalf("folder %q: %d messages, want 19", f, n)
		}
	}

	// A new UIDVALIDITY on the source: the folder starts over and finds
	// every message already there.
	src.validity = 8
	for name, ms := range src.msgs {
		for i := range ms {
			ms[i].UID += 1000
		}
		src.msgs[name] = ms
	}
	sum, err = Run(ctx, src, opts)
	if err != nil {
		t.Fatal(err)
	}
	if tot := sum.Totals(); tot.Copied != 0 || tot.Present != 38 || !sum.Folders[0].Restarted {
		t.Fatalf("after a UIDVALIDITY change: %+v %+v", tot, sum.Folders)
	}

	// Two imports of one source into one mailbox never run at once.
	unlock, err := lockState(statePath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Run(ctx, src, opts); !errors.Is(err, ErrBusy) {
		t.Fatalf("a second import at once: %v", err)
	}
	unlock()

	// A state of another source is refused.
	if _, err := loadState(statePath, "imap://other@host:993", "u@test"); err == nil {
		t.Fatal("a state file of another source was accepted")
	}
}

func TestVerifyFindsMissing(t *testing.T) {
	ctx := context.Background()
	data := memstore.NewData()
	store := memstore.Open(data)
	opts := Options{Store: store, User: "u@test", StatePath: filepath.Join(t.TempDir(), "s.json"), Verify: true}
	src := newFake(5)
	if _, err := Run(ctx, src, opts); err != nil {
		t.Fatal(err)
	}
	f, err := store.Folder(ctx, "u@test", "Lists.Go")
	if err != nil {
		t.Fatal(err)
	}
	l, _ := f.List()
	if err := f.Delete([]uint32{l.Messages[0].UID}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	sum, err := Run(ctx, src, opts)
	if !errors.Is(err, ErrVerify) || sum.Totals().Missing != 1 {
		t.Fatalf("verify after a message vanished: %v, %+v", err, sum.Totals())
	}
}

// writeMaildir writes a Dovecot-style Maildir++ tree.
func writeMaildir(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for _, d := range []string{"", ".Sent", ".Foo.Bar", ".Entw&APw-rfe", ".INBOX.Old"} {
		for _, sub := range []string{"cur", "new", "tmp"} {
			if err := os.MkdirAll(filepath.Join(root, d, sub), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := os.WriteFile(filepath.Join(root, "dovecot-keywords"), []byte("0 $Forwarded\n1 Important\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, body := range files {
		p := filepath.Join(root, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		when := time.Unix(1700000000+int64(len(name)), 0)
		os.Chtimes(p, when, when)
	}
}

func TestMaildirSource(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	files := map[string]string{
		"cur/1700000001.M1P1.host,S=40:2,FRS":     "Message-ID: <a@x>\nSubject: a\n\nbody a\n",
		"cur/1700000002.M2P1.host,S=40:2,Sab":     "Message-ID: <b@x>\nSubject: b\n\nbody b\n",
		"cur/1700000003.M3P1.host:2,ST":           "Message-ID: <c@x>\n\ngone\n",
		"new/1700000004.M4P1.host":                "Subject: no id\n\nnew\n",
		".Sent/cur/1700000005.M5P1.host:2,S":      "Message-ID: <d@x>\r\n\r\nsent\r\n",
		".Foo.Bar/cur/1700000006.M6P1.host:2,":    "Message-ID: <e@x>\n\nnested\n",
		".Entw&APw-rfe/new/1700000007.M7P1.host":  "Message-ID: <f@x>\n\ndraft\n",
		".INBOX.Old/cur/1700000008.M8P1.host:2,D": "Message-ID: <g@x>\n\nold\n",
	}
	writeMaildir(t, root, files)
	src, err := OpenMaildir(root)
	if err != nil {
		t.Fatal(err)
	}
	fs, err := src.Folders(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range fs {
		got = append(got, f.Name+"->"+f.Target)
	}
	want := []string{"INBOX->", "Entwürfe->Entwürfe", "Foo/Bar->Foo.Bar", "INBOX/Old->Old", "Sent->Sent"}
	if !slices.Equal(got, want) {
		t.Fatalf("folders %q, want %q", got, want)
	}
	data := memstore.NewData()
	store := memstore.Open(data)
	opts := Options{Store: store, User: "u@test", StatePath: filepath.Join(t.TempDir(), "s.json"), Verify: true}
	sum, err := Run(ctx, src, opts)
	if err != nil {
		t.Fatal(err)
	}
	if tot := sum.Totals(); tot.Copied != 7 || tot.Deleted != 1 || tot.Missing != 0 || sum.Dropped["Important"] != 1 {
		t.Fatalf("summary %+v, dropped %v", tot, sum.Dropped)
	}
	inbox, err := store.Folder(ctx, "u@test", "")
	if err != nil {
		t.Fatal(err)
	}
	defer inbox.Close()
	l, _ := inbox.List()
	var flags []string
	for _, m := range l.Messages {
		flags = append(flags, m.Flags)
		r, size, err := inbox.Open(m.UID)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(r)
		r.Close()
		if int64(len(b)) != size || strings.Contains(strings.ReplaceAll(string(b), "\r\n", ""), "\n") {
			t.Fatalf("message %d is not CRLF: %q", m.UID, b)
		}
		date, _ := inbox.ModTime(m.UID)
		if date.Unix() < 1700000000 || date.Unix() > 1700000100 {
			t.Fatalf("message %d: internal date %v, want the file's", m.UID, date)
		}
	}
	// The $Forwarded keyword ("a" in dovecot-keywords) is P.
	if !slices.Equal(flags, []string{"FRS", "PS", ""}) {
		t.Fatalf("INBOX flags %q", flags)
	}
	// Resume by file names: a second run copies nothing, a new file only.
	os.WriteFile(filepath.Join(root, "new", "1700000009.M9P1.host"), []byte("Message-ID: <h@x>\n\nlate\n"), 0o644)
	sum, err = Run(ctx, src, opts)
	if err != nil {
		t.Fatal(err)
	}
	if tot := sum.Totals(); tot.Copied != 1 || tot.Present != 7 {
		t.Fatalf("second run: %+v", tot)
	}
}

func TestTargetName(t *testing.T) {
	for _, tc := range []struct {
		levels []string
		attrs  []string
		want   string
		skip   bool
	}{
		{[]string{"INBOX"}, nil, "", false},
		{[]string{"Sent Items"}, nil, "Sent", false},
		{[]string{"Sent Items"}, []string{}, "Sent Items", false}, // the server marks its special folders: not this one
		{[]string{"Enviados"}, []string{`\HasNoChildren`, `\Sent`}, "Sent", false},
		{[]string{"[Gmail]", "All Mail"}, []string{`\All`}, "", true},
		{[]string{"INBOX", "Spam"}, nil, "Junk", false},
		{[]string{"a.b", "c/d"}, nil, "a_b.c_d", false},
		{[]string{"INBOX", "INBOX"}, nil, "INBOX_", false},
		{[]string{"x", " "}, nil, "x._", false},
	} {
		got, skip := targetName(tc.levels, tc.attrs)
		if got != tc.want || skip != tc.skip {
			t.Errorf("targetName(%q, %q) = %q, %v; want %q, %v", tc.levels, tc.attrs, got, skip, tc.want, tc.skip)
		}
	}
	for in, want := range map[string]string{"Entw&APw-rfe": "Entwürfe", "A&-B": "A&B", "&ZeVnLIqe-": "日本語", "plain": "plain"} {
		if got, err := decodeMUTF7(in); err != nil || got != want {
			t.Errorf("decodeMUTF7(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"&", "&AB", "caf\xc3\xa9", "&!!-"} {
		if _, err := decodeMUTF7(bad); err == nil {
			t.Errorf("decodeMUTF7(%q) accepted", bad)
		}
	}
}

func TestProgress(t *testing.T) {
	var b bytes.Buffer
	p := NewProgress(&b, false, time.Hour)
	clock := time.Unix(0, 0)
	p.now = func() time.Time { return clock }
	p.start(10)
	for range 4 {
		clock = clock.Add(time.Second)
		p.add("INBOX", 1)
	}
	clock = clock.Add(2 * time.Hour)
	p.add("Sent", 1)
	p.finish()
	want := "import: 10 messages to copy\nimport: 1/10 messages (10%) 1 msg/s, folder INBOX\nimport: 5/10 messages (50%) 0 msg/s, folder Sent\nimport: 5/10 messages (50%) 0 msg/s, folder Sent\n"
	if b.String() != want {
		t.Fatalf("progress lines:\n%s\nwant\n%s", b.String(), want)
	}
	b.Reset()
	p = NewProgress(&b, true, 0)
	p.now = func() time.Time { return clock }
	p.start(4)
	p.add("INBOX", 2)
	p.finish()
	if !strings.Contains(b.String(), "\r[###############...............]  50% 2/4") || !strings.HasSuffix(b.String(), "\n") {
		t.Fatalf("bar: %q", b.String())
	}
	// Nothing to copy, or stopped before the first message: no line
	// naming a folder ("folder " with no name).
	for total, want := range map[int]string{
		0: "import: 0 messages to copy\n",
		3: "import: 3 messages to copy\nimport: 0/3 messages (0%)\n",
	} {
		b.Reset()
		p = NewProgress(&b, false, time.Hour)
		p.start(total)
		p.finish()
		if b.String() != want {
			t.Fatalf("%d to copy, none copied: %q, want %q", total, b.String(), want)
		}
	}
}
