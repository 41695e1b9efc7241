package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Host profiles: how the same two sshd hosts treat a login. Every tool runs
// on each selected profile against the same sshd processes.
const (
	profQuick  = "quick"       // benchUser, shell /bin/sh, empty home: no start-up cost
	profHeavy  = "heavy-shell" // slowUser: a login shell that sleeps heavyDelay first
	profNoExec = "no-exec"     // benchUser with a key restricted to internal-sftp
)

var allProfiles = []string{profQuick, profHeavy, profNoExec}

// slowUser is benchUser's twin (same UID and GID, so the same files) whose
// login shell is the heavy-shell wrapper: pyenv, conda, nvm or oh-my-zsh in a
// real ~/.bashrc cost 0.3-1 s per ssh session.
const slowUser = "messorbench-slow"

// heavyDelay is the heavy-shell profile's start-up cost per session.
const heavyDelay = 500 * time.Millisecond

// heavyShellPath is slowUser's login shell. It lives outside any run's
// directory because the password database is shared by every bench run on
// the machine (two `go test ./bench` at once): each run rewrites the same
// content, and its sshd tells the shell where to log (startLogEnv).
const heavyShellPath = "/usr/local/lib/messor-bench/heavy-shell"

// startLogEnv names the file the heavy shell logs each start to; each
// run's sshd sets it for slowUser (SetEnv).
const startLogEnv = "MESSOR_BENCH_SHELL_LOG"

// needsExec lists the tools that cannot work on a key restricted to SFTP.
var needsExec = map[string]string{"rsync": "n/a: rsync runs `rsync --server` on the host, which a key restricted to internal-sftp refuses"}

// profileHosts is what the hosts need for the heavy-shell and no-exec
// profiles.
type profileHosts struct {
	SlowUser string // "" when heavy-shell is not set up
	// Dispatch is the ForceCommand for SlowUser: sshd runs it through the
	// heavy shell for every session, subsystem requests included, and it
	// runs the external sftp-server for those. So each SFTP session pays the
	// start-up once, as on a stock distribution's sshd (Subsystem sftp
	// /usr/lib/openssh/sftp-server, run by the user's shell), while
	// benchUser's sessions keep the in-process internal-sftp.
	Dispatch   string
	Restricted sshPublicKey // nil when no-exec is not set up
	StartLog   string       // one line per heavy-shell start
}

// setupHeavyShell writes the heavy shell (heavyShellPath) and the dispatch
// script under dir, and gives slowUser that shell, creating slowUser when
// missing (root only).
func setupHeavyShell(dir string, acct account) (profileHosts, error) {
	var ph profileHosts
	if os.Geteuid() != 0 {
		return ph, errors.New("heavy-shell profile: needs root (it creates user " + slowUser + "); run with --profile quick,no-exec")
	}
	sftpServer, err := findSFTPServer()
	if err != nil {
		return ph, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return ph, err
	}
	ph.StartLog = filepath.Join(dir, "shell-starts.log")
	if err := os.WriteFile(ph.StartLog, nil, 0o666); err != nil {
		return ph, err
	}
	if err := os.Chown(ph.StartLog, acct.UID, acct.GID); err != nil {
		return ph, err
	}
	shell := heavyShellPath
	script := fmt.Sprintf(`#!/bin/sh
# messor bench heavy-shell profile (go run ./bench): a login shell whose
# start-up costs %s, like pyenv, conda or nvm in ~/.bashrc.
if [ -n "$%[2]s" ]; then
	line=$(printf '%%s' "${SSH_ORIGINAL_COMMAND:-$*}" | tr '\n' ' ' | cut -c1-300)
	printf '%%s\n' "$line" >> "$%[2]s"
fi
sleep %[3]g
exec /bin/sh "$@"
`, heavyDelay, startLogEnv, heavyDelay.Seconds())
	if err := writeFileAtomic(shell, []byte(script), 0o755); err != nil {
		return ph, err
	}
	ph.Dispatch = filepath.Join(dir, "dispatch")
	dispatch := fmt.Sprintf(`#!/bin/sh
# ForceCommand for %s: the subsystem through the shell, as stock sshd runs sftp-server.
case "$SSH_ORIGINAL_COMMAND" in
internal-sftp|internal-sftp\ *) exec %s ${SSH_ORIGINAL_COMMAND#internal-sftp} ;;
"") exec /bin/sh -l ;;
*) exec /bin/sh -c "$SSH_ORIGINAL_COMMAND" ;;
esac
`, slowUser, sftpServer)
	if err := os.WriteFile(ph.Dispatch, []byte(dispatch), 0o755); err != nil {
		return ph, err
	}
	if _, err := user.Lookup(slowUser); err != nil {
		home := "/"
		if u, err := user.Lookup(acct.Name); err == nil {
			home = u.HomeDir
		}
		cmd := exec.Command("useradd", "-o", "-u", strconv.Itoa(acct.UID), "-g", strconv.Itoa(acct.GID), "-M", "-d", home, "-s", shell, slowUser)
		if out, err := cmd.CombinedOutput(); err != nil {
			return ph, fmt.Errorf("useradd %s: %v: %s", slowUser, err, out)
		}
	}
	if out, err := exec.Command("usermod", "-p", "*", "-s", shell, slowUser).CombinedOutput(); err != nil {
		return ph, fmt.Errorf("usermod %s: %v: %s", slowUser, err, out)
	}
	u, err := user.Lookup(slowUser)
	if err != nil {
		return ph, err
	}
	if u.Uid != strconv.Itoa(acct.UID) {
		return ph, fmt.Errorf("user %s has uid %s, want %d (the files belong to %s)", slowUser, u.Uid, acct.UID, acct.Name)
	}
	ph.SlowUser = slowUser
	return ph, nil
}

func findSFTPServer() (string, error) {
	for _, p := range []string{"/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server", "/usr/lib/ssh/sftp-server", "/usr/libexec/sftp-server"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("OpenSSH sftp-server not found (apt-get install openssh-server)")
}

// shellStarts counts the heavy shell's starts so far.
func (ph profileHosts) shellStarts() int {
	if ph.StartLog == "" {
		return 0
	}
	b, err := os.ReadFile(ph.StartLog)
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "\n")
}

// profiles is the --profile list, checked.
func (o options) profiles() ([]string, error) {
	var out []string
	for _, p := range splitList(o.Profiles) {
		if !slices.Contains(allProfiles, p) {
			return nil, fmt.Errorf("unknown profile %q (want %s)", p, strings.Join(allProfiles, ","))
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		out = []string{profQuick}
	}
	return out, nil
}

// writeFileAtomic replaces path with data by a rename, so a concurrent run
// executing the file never sees it half written.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), mode); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
