package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
)

// benchUser is the account the bench hosts log in as: a plain /bin/sh
// shell and an empty home, so that scp and rsync (which exec a remote
// command) do not pay for root's interactive shell start-up (pyenv and the
// like in ~/.bashrc). Every tool, messor included, logs in as this user.
const benchUser = "messorbench"

// account is the user the hosts' files belong to and that logs in.
type account struct {
	Name     string
	UID, GID int
	Shell    string
	Note     string // how it was chosen, for the report
}

// ensureAccount returns benchUser, creating it when we are root and it is
// missing. Not root: the current user, with a note that its shell start-up
// is part of every exec.
func ensureAccount() (account, error) {
	if os.Geteuid() != 0 {
		u, err := user.Current()
		if err != nil {
			return account{}, err
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return account{Name: u.Username, UID: uid, GID: gid, Shell: loginShell(u.Username),
			Note: "not root: hosts log in as the current user, whose shell start-up is part of every remote exec"}, nil
	}
	note := "existing user " + benchUser
	if _, err := user.Lookup(benchUser); err != nil {
		if out, err := exec.Command("useradd", "-m", "-s", "/bin/sh", benchUser).CombinedOutput(); err != nil {
			return account{}, fmt.Errorf("useradd %s: %v: %s", benchUser, err, out)
		}
		note = "created user " + benchUser + " (useradd -m -s /bin/sh)"
	}
	// sshd refuses a locked account ("!" in shadow) even for key logins
	// when PAM is off; "*" means "no password" without locking.
	if out, err := exec.Command("usermod", "-p", "*", benchUser).CombinedOutput(); err != nil {
		return account{}, fmt.Errorf("usermod %s: %v: %s", benchUser, err, out)
	}
	u, err := user.Lookup(benchUser)
	if err != nil {
		return account{}, err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return account{Name: u.Username, UID: uid, GID: gid, Shell: loginShell(benchUser), Note: note}, nil
}

func loginShell(name string) string {
	b, err := os.ReadFile("/etc/passwd")
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ":")
		if len(f) == 7 && f[0] == name {
			return f[6]
		}
	}
	return "?"
}

// chownTree gives dir and everything below it to acct.
func (a account) chownTree(dir string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	return filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, a.UID, a.GID)
	})
}

// sshdHost is one OpenSSH sshd on loopback with its own config, host key
// and SFTP login directory.
type sshdHost struct {
	Name     string // ssh alias the tools use: "hosta", "hostb"
	Port     int
	LoginDir string // absolute; internal-sftp -d starts here
	HostKey  ssh.PublicKey
	dir      string // config, keys, log
	cmd      *exec.Cmd
	done     chan struct{}
}

func findSSHD() (string, error) {
	for _, p := range []string{"/usr/sbin/sshd", "/usr/local/sbin/sshd"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("sshd"); err == nil {
		return filepath.Abs(p)
	}
	return "", errors.New("OpenSSH sshd not found; install it with `apt-get install openssh-server`")
}

// startSSHD starts sshd for name, with dir for its files and loginDir as
// the SFTP login directory, authorising clientKey for acct (and ph's
// restricted key and slow user, when set).
func startSSHD(name, dir, loginDir string, acct account, clientKey ssh.PublicKey, ph profileHosts, logLevel string) (*sshdHost, error) {
	sshd, err := findSSHD()
	if err != nil {
		return nil, err
	}
	if strings.ContainsAny(loginDir, " \t\n\"'\\%") {
		return nil, fmt.Errorf("login dir %q: sshd_config cannot express it", loginDir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil { // privilege separation dir
		return nil, err
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return nil, err
	}
	hostKey := filepath.Join(dir, "ssh_host_ed25519_key")
	if err := os.WriteFile(hostKey, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, err
	}
	// Read by sshd as the logged-in user.
	auth := filepath.Join(dir, "authorized_keys")
	keys := ssh.MarshalAuthorizedKey(clientKey)
	if ph.Restricted != nil {
		// As `messor key` prints it; the -d stands in for the home a real
		// host's internal-sftp starts in.
		line := fmt.Sprintf(`restrict,command="internal-sftp -d %s" `, loginDir)
		keys = append(keys, append([]byte(line), ssh.MarshalAuthorizedKey(ph.Restricted)...)...)
	}
	if err := os.WriteFile(auth, keys, 0o644); err != nil {
		return nil, err
	}
	h := &sshdHost{Name: name, LoginDir: loginDir, HostKey: signer.PublicKey(), dir: dir}
	for attempt := 1; ; attempt++ {
		h.Port, err = freePort()
		if err != nil {
			return nil, err
		}
		cfg := sshdConfig(h.Port, dir, hostKey, auth, loginDir, acct.Name, ph, logLevel)
		cfgPath := filepath.Join(dir, "sshd_config")
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
			return nil, err
		}
		err = h.launch(sshd, cfgPath)
		if err == nil {
			return h, nil
		}
		if attempt < 5 && strings.Contains(h.Log(), "Address already in use") {
			continue
		}
		return nil, fmt.Errorf("sshd %s: %w\n%s", name, err, h.Log())
	}
}

func sshdConfig(port int, dir, hostKey, auth, loginDir, userName string, ph profileHosts, logLevel string) string {
	var b strings.Builder
	users := userName
	if ph.SlowUser != "" {
		users += " " + ph.SlowUser
	}
	for _, kv := range [][2]string{
		{"ListenAddress", "127.0.0.1"},
		{"Port", strconv.Itoa(port)},
		{"HostKey", hostKey},
		{"AuthorizedKeysFile", auth},
		{"PidFile", filepath.Join(dir, "sshd.pid")},
		{"StrictModes", "no"},
		{"UsePAM", "no"},
		{"UseDNS", "no"},
		{"PasswordAuthentication", "no"},
		{"KbdInteractiveAuthentication", "no"},
		{"PubkeyAuthentication", "yes"},
		{"PermitRootLogin", "yes"}, // only for the not-root fallback's sake; AllowUsers decides
		{"AllowUsers", users},
		{"AllowTcpForwarding", "no"},
		{"X11Forwarding", "no"},
		{"PrintMotd", "no"},
		{"PrintLastLog", "no"},
		{"LogLevel", logLevel},
		{"MaxSessions", "64"},
		{"MaxStartups", "100"},
		{"Subsystem", "sftp internal-sftp -d " + loginDir},
	} {
		fmt.Fprintf(&b, "%s %s\n", kv[0], kv[1])
	}
	if ph.SlowUser != "" {
		fmt.Fprintf(&b, "Match User %s\n ForceCommand %s\n SetEnv %s=%s\n", ph.SlowUser, ph.Dispatch, startLogEnv, ph.StartLog)
	}
	return b.String()
}

func (h *sshdHost) logPath() string { return filepath.Join(h.dir, "sshd.log") }

// Log returns what sshd logged.
func (h *sshdHost) Log() string {
	b, _ := os.ReadFile(h.logPath())
	return string(b)
}

// Addr is "127.0.0.1:port".
func (h *sshdHost) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(h.Port)) }

func (h *sshdHost) launch(sshd, cfgPath string) error {
	logf, err := os.Create(h.logPath())
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(sshd, "-D", "-e", "-f", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(done) }()
	h.cmd, h.done = cmd, done
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-done:
			return fmt.Errorf("sshd exited: %v", waitErr)
		default:
		}
		err := probe(h.Addr(), h.HostKey)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			h.Stop()
			return fmt.Errorf("not ready after 15s: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var errKeyMatched = errors.New("host key matched")

// probe succeeds when the server at addr presents want.
func probe(addr string, want ssh.PublicKey) error {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	_, _, _, err = ssh.NewClientConn(conn, addr, &ssh.ClientConfig{
		User: "probe",
		HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			if bytes.Equal(key.Marshal(), want.Marshal()) {
				return errKeyMatched
			}
			return errors.New("foreign host key")
		},
	})
	if errors.Is(err, errKeyMatched) {
		return nil
	}
	if err == nil {
		return errors.New("login without credentials")
	}
	return err
}

// Stop ends the listening sshd; per-connection children end with their
// connections (every tool has exited by then).
func (h *sshdHost) Stop() {
	if h.cmd == nil {
		return
	}
	select {
	case <-h.done:
		return
	default:
	}
	h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.done:
	case <-time.After(3 * time.Second):
		h.cmd.Process.Kill()
		<-h.done
	}
}

var kexLine = regexp.MustCompile(`kex: client->server cipher: (\S+)`)

// Ciphers lists the client->server ciphers negotiated so far (LogLevel
// DEBUG1 logs them).
func (h *sshdHost) Ciphers() []string {
	var out []string
	for _, m := range kexLine.FindAllStringSubmatch(h.Log(), -1) {
		out = append(out, m[1])
	}
	return out
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// clientHome is a carrier HOME: ~/.ssh/config naming the hosts, known_hosts
// and a key. The same config serves messor (through HOME) and the OpenSSH
// tools (ssh -F).
type clientHome struct {
	Dir    string
	Config string // ~/.ssh/config
	Hosts  string // messor pickup hosts file
}

// writeClientHome writes dir/.ssh for hosts reached at ports (host name ->
// port, the sshd's own or a link proxy's).
func writeClientHome(dir string, keyPEM []byte, hosts []*sshdHost, ports map[string]int, userName, cipher string) (*clientHome, error) {
	sshDir := filepath.Join(dir, ".ssh")
	if err := os.MkdirAll(sshDir, 0o700); err != nil {
		return nil, err
	}
	id := filepath.Join(sshDir, "id_ed25519")
	kh := filepath.Join(sshDir, "known_hosts")
	if err := os.WriteFile(id, keyPEM, 0o600); err != nil {
		return nil, err
	}
	var cfg, known strings.Builder
	for _, h := range hosts {
		fmt.Fprintf(&cfg, "Host %s\n HostName 127.0.0.1\n Port %d\n User %s\n IdentityFile %s\n IdentitiesOnly yes\n"+
			" UserKnownHostsFile %s\n GlobalKnownHostsFile /dev/null\n StrictHostKeyChecking yes\n"+
			" BatchMode yes\n ControlMaster no\n ControlPath none\n LogLevel ERROR\n",
			h.Name, ports[h.Name], userName, id, kh)
		if cipher != "" {
			fmt.Fprintf(&cfg, " Ciphers %s\n", cipher)
		}
		// Not HostKeyAlias: the carrier passes an alias without a port to
		// knownhosts, which rejects it ("missing port in address").
		fmt.Fprintf(&known, "[127.0.0.1]:%d %s", ports[h.Name], ssh.MarshalAuthorizedKey(h.HostKey))
	}
	c := &clientHome{Dir: dir, Config: filepath.Join(sshDir, "config"), Hosts: filepath.Join(dir, ".messor_pickup_hosts")}
	if err := os.WriteFile(c.Config, []byte(cfg.String()), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(kh, []byte(known.String()), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(c.Hosts, []byte("hosta\n"), 0o600); err != nil {
		return nil, err
	}
	return c, nil
}

// env is the environment for tools run against this home: no ssh-agent,
// HOME set, mDNS off for messor (it would wait --mdns-timeout, 2 s, for
// agents on the LAN after serving the hosts-file hosts), nothing else
// changed.
func (c *clientHome) env() []string {
	return append(c.envMDNS(), "MESSOR_NO_MDNS=1")
}

// envMDNS is env with messor's mDNS browsing left on.
func (c *clientHome) envMDNS() []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "SSH_AUTH_SOCK=") || strings.HasPrefix(kv, "HOME=") || strings.HasPrefix(kv, "MESSOR_") {
			continue
		}
		out = append(out, kv)
	}
	return append(out, "HOME="+c.Dir)
}

// newClientKey returns an ed25519 key as a public key and an OpenSSH PEM.
func newClientKey() (ssh.PublicKey, []byte, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return nil, nil, err
	}
	return signer.PublicKey(), pem.EncodeToMemory(block), nil
}

// runCtx bounds one tool invocation.
func runCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 20*time.Minute)
}

type sshPublicKey = ssh.PublicKey
