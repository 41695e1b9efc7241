package carrier

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/messor-sync/messor/discovery"
	"github.com/messor-sync/messor/internal/durable"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// DedicatedKeyName is the file, in ~/.ssh, of the key made for messor alone
// (GenerateKey). When it is there messor offers it before any other key.
const DedicatedKeyName = "id_messor_ed25519"

// RestrictedOptions are the authorized_keys options for a carrier's key:
// SFTP and nothing else (no shell, no commands, no pty, no forwarding).
const RestrictedOptions = `restrict,command="internal-sftp"`

// defaultIdentities are OpenSSH's default identity files, in its order, as
// discovery resolves them for a host without IdentityFile.
var defaultIdentities = []string{"id_ed25519", "id_ecdsa", "id_rsa"}

// CarrierKey is the key a carrier logs in with.
type CarrierKey struct {
	File      string // the private key file
	Public    ssh.PublicKey
	Comment   string // from File.pub, or the generated one
	Dedicated bool   // File is the dedicated key (DedicatedKeyName)
	// NeedsAgent: File has a passphrase, so messor can use the key only
	// through ssh-agent (it never asks for passphrases).
	NeedsAgent bool
}

// AuthorizedLine is the line for a host's authorized_keys that lets k do
// SFTP and nothing else: RestrictedOptions, the key, its comment.
func (k *CarrierKey) AuthorizedLine() string {
	line := RestrictedOptions + " " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k.Public)))
	if c := strings.Join(strings.Fields(k.Comment), " "); c != "" {
		line += " " + c
	}
	return line
}

// ErrNoKey: FindKey found no key file messor could log in with.
var ErrNoKey = errors.New("no SSH key for messor")

// DedicatedKeyFile is where home keeps the dedicated key.
func DedicatedKeyFile(home string) string { return filepath.Join(home, ".ssh", DedicatedKeyName) }

// FindKey returns the key messor logs in with from home: the dedicated key
// if present, else the first of identityFiles (nil: OpenSSH's defaults,
// ~/.ssh/id_ed25519, id_ecdsa, id_rsa) that holds a private key. The
// error wraps ErrNoKey when there is none.
func FindKey(home string, identityFiles []string) (*CarrierKey, error) {
	if identityFiles == nil {
		for _, f := range defaultIdentities {
			identityFiles = append(identityFiles, filepath.Join(home, ".ssh", f))
		}
	}
	dedicated := DedicatedKeyFile(home)
	var skipped []string
	for _, f := range append([]string{dedicated}, identityFiles...) {
		k, err := readKey(f)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			skipped = append(skipped, err.Error())
			continue
		}
		k.Dedicated = f == dedicated
		return k, nil
	}
	if len(skipped) > 0 {
		return nil, fmt.Errorf("%w (%s)", ErrNoKey, strings.Join(skipped, "; "))
	}
	return nil, fmt.Errorf("%w: none of %s exists", ErrNoKey, strings.Join(append([]string{dedicated}, identityFiles...), ", "))
}

// readKey reads the private key file f and its public half.
func readKey(f string) (*CarrierKey, error) {
	b, err := os.ReadFile(f)
	if err != nil {
		return nil, err
	}
	k := &CarrierKey{File: f}
	signer, err := ssh.ParsePrivateKey(b)
	var pm *ssh.PassphraseMissingError
	switch {
	case err == nil:
		k.Public = signer.PublicKey()
	case errors.As(err, &pm) && pm.PublicKey != nil:
		k.Public, k.NeedsAgent = pm.PublicKey, true
	default:
		return nil, fmt.Errorf("key %s: %w", f, err)
	}
	if pub, err := os.ReadFile(f + ".pub"); err == nil {
		if p, comment, _, _, err := ssh.ParseAuthorizedKey(pub); err == nil && string(p.Marshal()) == string(k.Public.Marshal()) {
			k.Comment = comment
		}
	}
	return k, nil
}

// GenerateKey makes the dedicated key in home's .ssh (created 0700 if
// missing): a new ed25519 key without passphrase (messor runs unattended),
// the private file 0600, the public one 0644 beside it, with comment. It
// never replaces a key: if the file exists the error wraps fs.ErrExist.
// Neither file is written through a link; both are made, or neither.
func GenerateKey(home, comment string) (*CarrierKey, error) {
	file := DedicatedKeyFile(home)
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	k := &CarrierKey{File: file, Public: sshPub, Comment: comment, Dedicated: true}
	if err := durable.WriteNew(file, pem.EncodeToMemory(block)); err != nil { // 0600
		return nil, fmt.Errorf("generate key %s: %w", file, err)
	}
	pubLine := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))) + " " + comment + "\n"
	if err := replaceFile(file+".pub", []byte(pubLine), 0o644); err != nil {
		os.Remove(file) // both files or neither
		return nil, fmt.Errorf("generate key %s.pub: %w", file, err)
	}
	return k, nil
}

// replaceFile puts data at p with mode perm by renaming a new file over
// it: whatever was at p (a stale file, a symlink) is replaced, never
// written through.
func replaceFile(p string, data []byte, perm os.FileMode) error {
	tmp := p + ".tmp"
	os.Remove(tmp)
	if err := durable.WriteNew(tmp, data); err != nil {
		return err
	}
	if err := os.Chmod(tmp, perm); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// dedicatedSigner is the dedicated key of $HOME, nil when there is none
// messor can use (absent, or with a passphrase: ssh-agent offers it then).
func dedicatedSigner(log *slog.Logger) ssh.Signer {
	home, err := os.UserHomeDir()
	if err != nil {
		return nil
	}
	b, err := os.ReadFile(DedicatedKeyFile(home))
	if err != nil {
		return nil
	}
	s, err := ssh.ParsePrivateKey(b)
	if err != nil {
		if log != nil {
			log.Debug("dedicated key skipped", "file", DedicatedKeyFile(home), "err", err)
		}
		return nil
	}
	return s
}

// withDedicatedKey drops the copies of dedicated (nil: none) from signers
// and, if first, puts it before them: sshd allows a few tries per
// connection (MaxAuthTries), which ssh-agent's keys first could use up.
func withDedicatedKey(signers []ssh.Signer, dedicated ssh.Signer, first bool) []ssh.Signer {
	if dedicated == nil {
		return signers
	}
	var out []ssh.Signer
	if first {
		out = append(out, dedicated)
	}
	for _, s := range signers {
		if string(s.PublicKey().Marshal()) != string(dedicated.PublicKey().Marshal()) {
			out = append(out, s)
		}
	}
	return out
}

// dialWithKeys dials h offering Signers' keys, the dedicated one first.
// When the host cuts the tries short (sshd's MaxAuthTries, 6 by default)
// with the dedicated key among them, it dials once more without it: the
// key the host authorizes may be the one the dedicated key pushed past the
// limit.
func dialWithKeys(ctx context.Context, h discovery.Host, policy ssh.HostKeyCallback, hops hopPolicy, timeout time.Duration, log *slog.Logger) (*Session, error) {
	return dialWithExtraKeys(ctx, h, policy, hops, timeout, log, nil)
}

// dialWithExtraKeys is dialWithKeys offering extra (keys unlocked with a
// passphrase) after the others.
func dialWithExtraKeys(ctx context.Context, h discovery.Host, policy ssh.HostKeyCallback, hops hopPolicy, timeout time.Duration, log *slog.Logger, extra []ssh.Signer) (*Session, error) {
	signers, done := keySigners(h, log, true)
	s, err := dial(ctx, h, policy, hops, withExtra(signers, extra), timeout, log)
	done()
	var ae *AuthError
	if !errors.As(err, &ae) || !tooManyTries(ae.Err) || dedicatedSigner(log) == nil || ctx.Err() != nil {
		return s, err
	}
	if log != nil {
		log.Info("host cut the key tries short after the dedicated key; trying the other keys without it", "host", h.Name)
	}
	signers, done = keySigners(h, log, false)
	defer done()
	return dial(ctx, h, policy, hops, withExtra(signers, extra), timeout, log)
}

// withExtra offers extra after signers' keys.
func withExtra(signers func() ([]ssh.Signer, error), extra []ssh.Signer) func() ([]ssh.Signer, error) {
	if len(extra) == 0 {
		return signers
	}
	return func() ([]ssh.Signer, error) {
		ss, err := signers()
		return append(ss, extra...), err
	}
}
