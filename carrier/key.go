package carrier

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

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
	if err := writeNewFile(file, pem.EncodeToMemory(block)); err != nil { // 0600
		return nil, fmt.Errorf("generate key %s: %w", file, err)
	}
	pubLine := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))) + " " + comment + "\n"
	if err := os.WriteFile(file+".pub", []byte(pubLine), 0o644); err != nil {
		return nil, fmt.Errorf("generate key %s.pub: %w", file, err)
	}
	return k, nil
}

// withDedicatedKey puts the dedicated key of $HOME, when there is one
// messor can use, before signers (sshd allows a few tries per connection:
// ssh-agent's keys first could use them up), and drops other copies of it.
func withDedicatedKey(signers []ssh.Signer, log *slog.Logger) []ssh.Signer {
	home, err := os.UserHomeDir()
	if err != nil {
		return signers
	}
	b, err := os.ReadFile(DedicatedKeyFile(home))
	if err != nil {
		return signers
	}
	first, err := ssh.ParsePrivateKey(b)
	if err != nil {
		if log != nil {
			log.Debug("dedicated key skipped", "file", DedicatedKeyFile(home), "err", err)
		}
		return signers
	}
	out := []ssh.Signer{first}
	for _, s := range signers {
		if string(s.PublicKey().Marshal()) != string(first.PublicKey().Marshal()) {
			out = append(out, s)
		}
	}
	return out
}
