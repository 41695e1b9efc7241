// Package sshdtest starts a real OpenSSH sshd on loopback for tests.
//
// Each server gets its own generated sshd_config, host key, authorized_keys
// and SFTP login directory, so a test can run several "hosts" side by side.
// The daemon runs as the test's user (root) and that user logs in. sshd's log
// is printed only when the test failed or -v is set.
package sshdtest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// sftpServer is OpenSSH's SFTP server program (Options.SFTPLog; Debian's
// openssh-sftp-server).
const sftpServer = "/usr/lib/openssh/sftp-server"

// startTimeout bounds how long Start waits for sshd to accept connections.
const startTimeout = 15 * time.Second

// Options configures a server.
type Options struct {
	// LoginDir is the directory the SFTP subsystem starts in; relative SFTP
	// paths resolve against it. Required. Exec sessions still start in the
	// user's home directory.
	LoginDir string
	// AuthorizedKeys may log in as the current user (root).
	AuthorizedKeys []ssh.PublicKey
	// KeyOptions, if set, prefixes every AuthorizedKeys line, e.g.
	// `restrict,command="internal-sftp -d /login/dir"` (a forced
	// internal-sftp starts in the user's home, not LoginDir, without -d).
	KeyOptions string
	// HostKey is the server's host key, e.g. an ed25519.PrivateKey. A fresh
	// ed25519 key is generated if nil. Pass the same key to restart a host
	// unchanged, or a different one to simulate a changed host key.
	HostKey crypto.Signer
	// NoExec forces every session to internal-sftp, as on a locked-down
	// host: exec and shell requests never run a command.
	NoExec bool
	// Port to listen on; 0 picks a free port. Set it to restart a host at
	// the address it had (see Server.Port).
	Port int
	// MaxSessions is sshd's limit on sessions (SFTP channels, commands)
	// per connection; 0 means 64.
	MaxSessions int
	// Netns, when set, runs sshd in that network namespace (ip netns
	// exec), listening on ListenAddress, port 22 unless Port says
	// otherwise. Start then waits for sshd to log that it listens, as the
	// test cannot reach it to probe.
	Netns         string
	ListenAddress string // default 127.0.0.1
	// AllowTcpForwarding lets clients open direct-tcpip channels, as a
	// jump host must.
	AllowTcpForwarding bool
	// SFTPLog runs OpenSSH's sftp-server (not internal-sftp) logging every
	// request it handles at level VERBOSE, for Server.SFTPLog. Not with
	// NoExec.
	SFTPLog bool
	// LoginScript, when set, is shell text run before every command (not
	// SFTP), as a login shell's profile is: a banner printed to standard
	// output (`echo Welcome`), a slow start, a PATH without some tools.
	LoginScript string
}

// Server is a running sshd.
type Server struct {
	Addr     string        // "127.0.0.1:port"
	Host     string        // "127.0.0.1"
	Port     int           // the TCP port sshd listens on
	HostKey  ssh.PublicKey // the key sshd presents
	LoginDir string        // absolute SFTP login directory

	netns    string
	logPath  string
	sftpLog  string // with Options.SFTPLog
	cmd      *exec.Cmd
	done     chan struct{} // closed when cmd has been waited for
	stopOnce sync.Once
}

// Start runs sshd with opts and returns once it presents its host key on
// Server.Addr. The server is stopped when the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	sshd := findSSHD(t)
	clearStalePyenvLock()
	if opts.LoginDir == "" {
		t.Fatal("sshdtest: Options.LoginDir is required")
	}
	loginDir, err := filepath.Abs(opts.LoginDir)
	if err != nil {
		t.Fatalf("sshdtest: %v", err)
	}
	// sshd splits Subsystem and ForceCommand lines on white space and
	// drops quotes, so such a path cannot be passed to internal-sftp.
	if strings.ContainsAny(loginDir, " \t\n\"'\\") {
		t.Fatalf("sshdtest: LoginDir %q contains white space or quotes, which sshd_config cannot express", loginDir)
	}
	key := opts.HostKey
	if key == nil {
		_, key, err = ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatalf("sshdtest: generating host key: %v", err)
		}
	}
	signer, err := ssh.NewSignerFromSigner(key)
	if err != nil {
		t.Fatalf("sshdtest: host key: %v", err)
	}

	dir := t.TempDir()
	hostKeyPath := filepath.Join(dir, "ssh_host_key")
	writeFile(t, hostKeyPath, marshalPrivateKey(t, key))
	var authorized bytes.Buffer
	for _, k := range opts.AuthorizedKeys {
		if opts.KeyOptions != "" {
			authorized.WriteString(opts.KeyOptions + " ")
		}
		authorized.Write(ssh.MarshalAuthorizedKey(k))
	}
	authPath := filepath.Join(dir, "authorized_keys")
	writeFile(t, authPath, authorized.Bytes())
	// The privilege separation directory; Debian creates it from a unit
	// file that never ran in a container.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatalf("sshdtest: %v", err)
	}

	listen := opts.ListenAddress
	if listen == "" {
		listen = "127.0.0.1"
	}
	if opts.Netns != "" && opts.Port == 0 {
		opts.Port = 22
	}
	s := &Server{
		Host:     listen,
		netns:    opts.Netns,
		HostKey:  signer.PublicKey(),
		LoginDir: loginDir,
		logPath:  filepath.Join(dir, "sshd.log"),
	}
	sftpLog := ""
	if opts.SFTPLog {
		s.sftpLog = filepath.Join(dir, "sftp-server.log")
		sftpLog = s.sftpLog
	}
	const attempts = 10
	for i := 1; ; i++ {
		port := opts.Port
		if port == 0 {
			port = freePort(t)
		}
		cfg := config(opts, listen, port, dir, hostKeyPath, authPath, loginDir, sftpLog)
		if opts.LoginScript != "" {
			cfg += "ForceCommand " + loginWrapper(t, dir, opts.LoginScript, loginDir) + "\n"
		}
		cfgPath := filepath.Join(dir, "sshd_config")
		writeFile(t, cfgPath, []byte(cfg))
		err := s.launch(sshd, cfgPath, port)
		if err == nil {
			break
		}
		log := s.Log()
		if i < attempts && strings.Contains(log, "Address already in use") {
			time.Sleep(50 * time.Millisecond) // the port was taken after we freed it
			continue
		}
		t.Fatalf("sshdtest: starting sshd: %v\nsshd config:\n%s\nsshd log:\n%s", err, cfg, log)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() || testing.Verbose() {
			t.Logf("sshd log for %s:\n%s", s.Addr, s.Log())
		}
	})
	return s
}

// findSSHD returns the absolute path of sshd (it must be started by an
// absolute path to re-execute itself).
func findSSHD(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"/usr/sbin/sshd", "/usr/local/sbin/sshd"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("sshd"); err == nil {
		if p, err := filepath.Abs(p); err == nil {
			return p
		}
	}
	t.Fatal("sshdtest: OpenSSH sshd not found; install it with `apt-get install openssh-server` (.ci/run does this)")
	return ""
}

func config(opts Options, listen string, port int, dir, hostKey, authKeys, loginDir, sftpLog string) string {
	maxSessions := opts.MaxSessions
	forwarding := "no"
	if opts.AllowTcpForwarding {
		forwarding = "yes"
	}
	if maxSessions <= 0 {
		maxSessions = 64
	}
	sftp := "internal-sftp -d " + strings.ReplaceAll(loginDir, "%", "%%")
	subsystem := sftp
	if sftpLog != "" {
		// sshd runs a subsystem command with the user's shell, which
		// sends sftp-server's log (-e: to stderr) to the file.
		subsystem = sftpServer + " -e -l VERBOSE -d " + strings.ReplaceAll(loginDir, "%", "%%") + " 2>>" + sftpLog
	}
	var b strings.Builder
	for _, kv := range [][2]string{
		{"ListenAddress", listen},
		{"Port", strconv.Itoa(port)},
		{"HostKey", hostKey},
		{"AuthorizedKeysFile", authKeys},
		{"PidFile", filepath.Join(dir, "sshd.pid")},
		{"StrictModes", "no"},
		{"UsePAM", "no"},
		{"PasswordAuthentication", "no"},
		{"KbdInteractiveAuthentication", "no"},
		{"PubkeyAuthentication", "yes"},
		{"PermitRootLogin", "yes"},
		{"AllowTcpForwarding", forwarding},
		{"PrintMotd", "no"},
		{"LogLevel", "VERBOSE"},
		{"MaxSessions", strconv.Itoa(maxSessions)},
		{"MaxStartups", "100"},
		{"Subsystem", "sftp " + subsystem},
		// The test hosts log in as root through root's real shell,
		// init files and all (pyenv here). pyenv's rehash takes a lock
		// file and waits up to 60 s for it; a shell killed while holding
		// it (a cut connection) leaves it behind, and every later login
		// then waits the 60 s. With 0 a login tries for at most a second
		// and goes on without rehashing, as the shims are there already;
		// the init files' cost stays in what the tests see. Start also
		// removes a lock left for over 30 s (clearStalePyenvLock).
		{"SetEnv", "PYENV_REHASH_TIMEOUT=0"},
	} {
		fmt.Fprintf(&b, "%s %s\n", kv[0], kv[1])
	}
	if opts.NoExec {
		fmt.Fprintf(&b, "ForceCommand %s\n", sftp)
	}
	return b.String()
}

// loginWrapper writes a ForceCommand script that runs script before the
// client's command, and serves SFTP with sftp-server without it.
func loginWrapper(t testing.TB, dir, script, loginDir string) string {
	sftpServer := filepath.Join(filepath.Dir(findSSHD(t)), "..", "lib", "openssh", "sftp-server")
	if _, err := os.Stat(sftpServer); err != nil {
		t.Fatalf("sshdtest: LoginScript needs sftp-server: %v", err)
	}
	p := filepath.Join(dir, "login.sh")
	writeFile(t, p, []byte("#!/bin/sh\n"+
		"case \"$SSH_ORIGINAL_COMMAND\" in internal-sftp*) exec "+sftpServer+" -d "+loginDir+";; esac\n"+
		script+"\n"+
		"exec /bin/sh -c \"$SSH_ORIGINAL_COMMAND\"\n"))
	if err := os.Chmod(p, 0o755); err != nil {
		t.Fatalf("sshdtest: %v", err)
	}
	return p
}

// launch starts sshd and waits until it presents s.HostKey on port.
func (s *Server) launch(sshd, cfgPath string, port int) error {
	logFile, err := os.Create(s.logPath)
	if err != nil {
		return err
	}
	defer logFile.Close() // sshd holds its own descriptor
	cmd := exec.Command(sshd, "-D", "-e", "-f", cfgPath)
	if s.netns != "" {
		// ip execs sshd in place: the pid is sshd's.
		cmd = exec.Command("ip", "netns", "exec", s.netns, sshd, "-D", "-e", "-f", cfgPath)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(done) }()
	s.cmd, s.done = cmd, done
	s.Port = port
	s.Addr = net.JoinHostPort(s.Host, strconv.Itoa(port))

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	for {
		select {
		case <-done:
			return fmt.Errorf("sshd exited: %v", waitErr)
		default:
		}
		err := probe(ctx, s.Addr, s.HostKey)
		if s.netns != "" {
			err = s.listening(port)
		}
		if err == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("sshd exited: %v", waitErr)
		case <-ctx.Done():
			s.kill()
			return fmt.Errorf("sshd not ready on %s after %v: %w", s.Addr, startTimeout, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// listening tells from sshd's log whether it listens on port (for a
// server in another network namespace, which the test cannot probe).
func (s *Server) listening(port int) error {
	if strings.Contains(s.Log(), fmt.Sprintf("Server listening on %s port %d", s.Host, port)) {
		return nil
	}
	return errors.New("sshd has not logged that it listens")
}

var errKeyMatched = errors.New("host key matched")

// probe succeeds if the server at addr presents want, which tells our sshd
// from anything else that may have grabbed the port.
func probe(ctx context.Context, addr string, want ssh.PublicKey) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	_, _, _, err = ssh.NewClientConn(conn, addr, &ssh.ClientConfig{
		User: "sshdtest-probe",
		HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			if bytes.Equal(key.Marshal(), want.Marshal()) {
				return errKeyMatched
			}
			return fmt.Errorf("foreign host key %s", ssh.FingerprintSHA256(key))
		},
	})
	if errors.Is(err, errKeyMatched) {
		return nil
	}
	if err == nil {
		return errors.New("unexpected login without credentials")
	}
	return err
}

// Stop kills sshd and every process it started, which cuts all open
// connections. It is safe to call more than once; Start arranges a call
// when the test ends.
func (s *Server) Stop() {
	s.stopOnce.Do(s.kill)
}

func (s *Server) kill() {
	// Freeze the whole tree first, so nothing forks or is reparented while
	// we collect it: per-connection children call setsid and would survive
	// a signal to the process group.
	select {
	case <-s.done:
		return // already exited and reaped: its pid may belong to another process now
	default:
	}
	root := s.cmd.Process.Pid
	stopped := map[int]bool{root: true}
	syscall.Kill(root, syscall.SIGSTOP)
	for {
		var fresh []int
		for _, pid := range descendants(root) {
			if !stopped[pid] {
				fresh = append(fresh, pid)
				stopped[pid] = true
			}
		}
		if len(fresh) == 0 {
			break
		}
		for _, pid := range fresh {
			syscall.Kill(pid, syscall.SIGSTOP)
		}
	}
	for pid := range stopped {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	<-s.done
}

// descendants lists the processes below pid, read from /proc.
func descendants(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	children := map[int][]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may contain spaces and parens.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 2 {
			continue
		}
		if ppid, err := strconv.Atoi(f[1]); err == nil {
			children[ppid] = append(children[ppid], p)
		}
	}
	var out []int
	for queue := children[pid]; len(queue) > 0; queue = queue[1:] {
		out = append(out, queue[0])
		queue = append(queue, children[queue[0]]...)
	}
	return out
}

// Log returns what sshd has logged so far.
func (s *Server) Log() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return fmt.Sprintf("(reading sshd log: %v)", err)
	}
	return string(b)
}

// SFTPLog returns what sftp-server logged (Options.SFTPLog).
func (s *Server) SFTPLog() string {
	b, _ := os.ReadFile(s.sftpLog)
	return string(b)
}

// KnownHostsLine returns a known_hosts line trusting s, for "[127.0.0.1]:port".
func (s *Server) KnownHostsLine() string {
	return knownhosts.Line([]string{knownhosts.Normalize(s.Addr)}, s.HostKey)
}

// NewKey returns a fresh ed25519 client key as a signer and as an OpenSSH
// private key file (PEM, unencrypted).
func NewKey(t testing.TB) (ssh.Signer, []byte) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatalf("sshdtest: %v", err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatalf("sshdtest: %v", err)
	}
	return signer, marshalPrivateKey(t, priv)
}

func marshalPrivateKey(t testing.TB, key crypto.PrivateKey) []byte {
	t.Helper()
	block, err := ssh.MarshalPrivateKey(key, "")
	if err != nil {
		t.Fatalf("sshdtest: marshalling private key: %v", err)
	}
	return pem.EncodeToMemory(block)
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatalf("sshdtest: %v", err)
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("sshdtest: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// clearStalePyenvLock removes the lock file of pyenv's rehash (see the
// SetEnv in config) when a shell killed while holding it left it over 30 s
// ago: a rehash holds it for well under a second.
func clearStalePyenvLock() {
	root := os.Getenv("PYENV_ROOT")
	if root == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return
		}
		root = filepath.Join(home, ".pyenv")
	}
	lock := filepath.Join(root, "shims", ".pyenv-shim")
	if fi, err := os.Stat(lock); err == nil && time.Since(fi.ModTime()) > 30*time.Second {
		os.Remove(lock)
	}
}
