// Package dovecottest runs a real Dovecot IMAP server for tests: its own
// `dovecot -F -c CONFIG` process with everything (configuration, runtime
// sockets, state, Maildirs) in a temporary folder, a passwd-file user
// database, and one listener on a loopback address; no system service is
// used or started. Tests skip when Dovecot is not installed (Debian
// package dovecot-imapd, which .ci/run installs).
package dovecottest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Server is a running Dovecot.
type Server struct {
	Addr     string // host:port of its IMAP listener (no TLS)
	User     string // the one user's login
	Password string
	Mail     string // the user's Maildir (Maildir++ layout)

	cmd  *exec.Cmd
	log  *syncBuffer
	done chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Start starts Dovecot listening on ip (a 127.0.0.0/8 address). Its
// special-use folders are "Enviados" (\Sent: a name that only the
// attribute can tell is the Sent folder), "Drafts" (\Drafts),
// "Deleted Messages" (\Trash) and "Spam" (\Junk); the hierarchy separator
// is "/". It stops when the test ends.
func Start(t testing.TB, ip string) *Server {
	t.Helper()
	bin, err := exec.LookPath("dovecot")
	if err != nil {
		for _, p := range []string{"/usr/sbin/dovecot", "/usr/local/sbin/dovecot"} {
			if _, serr := os.Stat(p); serr == nil {
				bin, err = p, nil
				break
			}
		}
	}
	if err != nil {
		t.Skip("dovecot is not installed (Debian: apt-get install dovecot-imapd; .ci/run installs it)")
	}
	// Its own folder outside t.TempDir: Dovecot's processes own files in it
	// that the test's cleanup must be able to remove after it stopped.
	dir, err := os.MkdirTemp("", "dovecottest-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	s := &Server{User: "olduser", Password: "old password 1", Mail: filepath.Join(dir, "mail", "olduser"), log: &syncBuffer{}, done: make(chan struct{})}
	t.Cleanup(func() { os.RemoveAll(dir) })

	// Who runs what. As root (CI), Dovecot refuses to run its login
	// processes as root (default_login_user) and mail processes as UID 0
	// (the userdb's uid): they run as the package's dovenull and dovecot
	// users, and mail as nobody, who owns the mail folder. As anyone else,
	// everything runs as that user.
	loginUser, internalUser, internalGroup := "", "", ""
	mailUID, mailGID := os.Getuid(), os.Getgid()
	if me, err := user.Current(); err == nil {
		loginUser, internalUser = me.Username, me.Username
		if g, err := user.LookupGroupId(me.Gid); err == nil {
			internalGroup = g.Name
		}
	}
	if os.Geteuid() == 0 {
		loginUser, internalUser, internalGroup = "dovenull", "dovecot", "dovecot"
		for _, n := range []string{loginUser, internalUser} {
			if _, err := user.Lookup(n); err != nil {
				t.Skipf("dovecot's system user %s is missing (is dovecot-core installed?): %v", n, err)
			}
		}
		mailUID, mailGID = 65534, 65534 // nobody
	}
	mailRoot := filepath.Join(dir, "mail")
	for _, d := range []string{"run", "state", "mail"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(mailRoot, mailUID, mailGID); err != nil {
		t.Fatal(err)
	}
	passwd := filepath.Join(dir, "passwd")
	if err := os.WriteFile(passwd, []byte(s.User+":{PLAIN}"+s.Password+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t, ip)
	s.Addr = net.JoinHostPort(ip, strconv.Itoa(port))
	conf := fmt.Sprintf(config, dir, ip, internalUser, internalGroup, loginUser, mailRoot, passwd, mailUID, mailGID, mailRoot, ip, port)
	confPath := filepath.Join(dir, "dovecot.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	s.cmd = exec.Command(bin, "-F", "-c", confPath)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.cmd.Wait(); close(s.done) }()
	t.Cleanup(s.Stop)
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
		if err == nil {
			buf := make([]byte, 64)
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, _ := c.Read(buf)
			c.Close()
			if strings.HasPrefix(string(buf[:n]), "* OK") {
				break
			}
		}
		select {
		case <-s.done:
			t.Fatalf("dovecot exited:\n%s", s.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("dovecot did not answer on %s: %v\n%s", s.Addr, err, s.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return s
}

// Stop stops Dovecot and waits for it (its process group: master and
// children).
func (s *Server) Stop() {
	select {
	case <-s.done:
		return
	default:
	}
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	}
}

// Log returns what Dovecot logged.
func (s *Server) Log() string { return s.log.String() }

func freePort(t testing.TB, ip string) int {
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// config is dovecot.conf; mail_fsync=never because the test's mail is
// thrown away (and seeding 1,000 messages stays quick).
const config = `base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = /dev/stderr
protocols = imap
listen = %[2]s
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = %[3]s
default_internal_group = %[4]s
default_login_user = %[5]s
first_valid_uid = 0
first_valid_gid = 0
mail_location = maildir:%[6]s/%%u
mail_fsync = never
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%%u %[7]s
}
userdb {
  driver = static
  args = uid=%[8]d gid=%[9]d home=%[10]s/%%u
}
service imap-login {
  inet_listener imap {
    address = %[11]s
    port = %[12]d
  }
  inet_listener imaps {
    port = 0
  }
}
service pop3-login {
  inet_listener pop3 {
    port = 0
  }
}
service anvil {
  chroot =
}
namespace inbox {
  inbox = yes
  separator = /
  mailbox Enviados {
    special_use = \Sent
  }
  mailbox Drafts {
    special_use = \Drafts
  }
  mailbox "Deleted Messages" {
    special_use = \Trash
  }
  mailbox Spam {
    special_use = \Junk
  }
}
`
