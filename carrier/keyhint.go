package carrier

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/messor-sync/messor/discovery"
)

// KeyError: a host refused the login, or there was no key to offer. It
// says which keys were offered and why the others could not be, so that a
// passphrase-protected key is not mistaken for a missing authorized_keys
// line. It wraps the *AuthError.
type KeyError struct {
	Host, User string
	Offered    []string  // keys offered, as "~/.ssh/id_ed25519 (SHA256:...)"
	Unusable   []KeyNote // keys that could not be offered, and why
	Err        error
}

// KeyNote is a key file messor could not offer, and why.
type KeyNote struct {
	File string // shown with ~ for the home directory
	Why  string // "is passphrase-protected: add it to ssh-agent with ssh-add"
}

func (e *KeyError) Error() string {
	var b strings.Builder
	if len(e.Offered) == 0 {
		fmt.Fprintf(&b, "host %s: no usable SSH key to log in as %s", e.Host, e.User)
	} else {
		fmt.Fprintf(&b, "host %s: login as %s refused: offered %s", e.Host, e.User, strings.Join(e.Offered, ", "))
	}
	for _, n := range e.Unusable {
		fmt.Fprintf(&b, "; %s %s", n.File, n.Why)
	}
	if len(e.Offered) == 0 {
		b.WriteString(" (or make a key for messor with `messor key --generate`)")
	} else {
		b.WriteString(" (is this carrier's public key in the host's authorized_keys? `messor key` prints the line to add)")
	}
	return b.String()
}

func (e *KeyError) Unwrap() error { return e.Err }

// Passphrase-protected keys, unlocked once per run (Options.Passphrase).
type unlocked struct {
	mu      sync.Mutex
	signers map[string]ssh.Signer // by file; nil: not unlocked
	asked   map[string]bool
}

// unlockKeys returns the signers of h's passphrase-protected key files
// that ssh-agent does not hold, asking Options.Passphrase for each once
// per run (three tries, like ssh). Nil without Options.Passphrase.
func (c *Carrier) unlockKeys(h discovery.Host) []ssh.Signer {
	if c.opts.Passphrase == nil {
		return nil
	}
	held := agentKeys()
	c.keys.mu.Lock()
	defer c.keys.mu.Unlock()
	if c.keys.signers == nil {
		c.keys.signers, c.keys.asked = map[string]ssh.Signer{}, map[string]bool{}
	}
	var out []ssh.Signer
	for _, f := range keyFiles(h) {
		if s := c.keys.signers[f]; s != nil {
			out = append(out, s)
			continue
		}
		b, err := os.ReadFile(f)
		var pm *ssh.PassphraseMissingError
		if err != nil || c.keys.asked[f] {
			continue
		}
		if _, err := ssh.ParsePrivateKey(b); !errors.As(err, &pm) || pm.PublicKey == nil || held[string(pm.PublicKey.Marshal())] {
			continue
		}
		c.keys.asked[f] = true
		for range 3 {
			pass, err := c.opts.Passphrase(f)
			if err != nil {
				break
			}
			if s, err := ssh.ParsePrivateKeyWithPassphrase(b, pass); err == nil {
				c.keys.signers[f] = s
				out = append(out, s)
				break
			}
		}
	}
	return out
}

// keyFiles are the key files offered to h: the dedicated key, then h's
// identity files.
func keyFiles(h discovery.Host) []string {
	var out []string
	if home, err := os.UserHomeDir(); err == nil {
		out = append(out, DedicatedKeyFile(home))
	}
	for _, f := range h.IdentityFiles {
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out
}

// agentKeys are the public keys ssh-agent holds (SSH_AUTH_SOCK), by wire
// form.
func agentKeys() map[string]bool {
	held := map[string]bool{}
	sock := os.Getenv("SSH_AUTH_SOCK")
	if sock == "" {
		return held
	}
	conn, err := net.Dial("unix", sock)
	if err != nil {
		return held
	}
	defer conn.Close()
	keys, _ := agent.NewClient(conn).List()
	for _, k := range keys {
		held[string(k.Marshal())] = true
	}
	return held
}

// keyError explains ae: the keys offered to h and why the others were not.
func (c *Carrier) keyError(h discovery.Host, ae *AuthError) *KeyError {
	e := &KeyError{Host: h.Name, User: h.User, Err: ae}
	held := agentKeys()
	if len(held) > 0 {
		e.Offered = append(e.Offered, fmt.Sprintf("%d key(s) from ssh-agent", len(held)))
	}
	home, _ := os.UserHomeDir()
	c.keys.mu.Lock()
	defer c.keys.mu.Unlock()
	for _, f := range keyFiles(h) {
		shown := f
		if home != "" && strings.HasPrefix(f, home+string(filepath.Separator)) {
			shown = "~" + f[len(home):]
		}
		b, err := os.ReadFile(f)
		if errors.Is(err, fs.ErrNotExist) {
			if f != DedicatedKeyFile(home) {
				e.Unusable = append(e.Unusable, KeyNote{shown, "does not exist"})
			}
			continue
		}
		if err != nil {
			e.Unusable = append(e.Unusable, KeyNote{shown, "cannot be read: " + err.Error()})
			continue
		}
		s, err := ssh.ParsePrivateKey(b)
		var pm *ssh.PassphraseMissingError
		switch {
		case err == nil:
			e.Offered = append(e.Offered, shown+" ("+ssh.FingerprintSHA256(s.PublicKey())+")")
		case errors.As(err, &pm) && pm.PublicKey != nil && held[string(pm.PublicKey.Marshal())]:
			// offered through ssh-agent
		case errors.As(err, &pm) && c.keys.signers[f] != nil:
			e.Offered = append(e.Offered, shown+" ("+ssh.FingerprintSHA256(c.keys.signers[f].PublicKey())+", unlocked)")
		case errors.As(err, &pm) && c.keys.asked[f]:
			e.Unusable = append(e.Unusable, KeyNote{shown, "is passphrase-protected and was not unlocked: add it to ssh-agent with ssh-add"})
		case errors.As(err, &pm):
			e.Unusable = append(e.Unusable, KeyNote{shown, "is passphrase-protected: add it to ssh-agent with ssh-add"})
		default:
			e.Unusable = append(e.Unusable, KeyNote{shown, "cannot be used: " + err.Error()})
		}
	}
	return e
}
