package agent

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/crypto/ssh"
)

// LoadOrCreateHostKey returns the SSH host key stored at path. When there is
// no file at path it generates an ed25519 key, writes it there in OpenSSH
// PEM format with mode 0600 (creating missing parent directories with mode
// 0700) and returns it. An existing key is never replaced; a key file that
// group or others may read is refused, as sshd refuses it.
//
// Creation is atomic: the key is written to a temporary file in the same
// directory and linked into place, so a crash never leaves a truncated key
// and two agents started at once end up with the same key.
func LoadOrCreateHostKey(path string) (ssh.Signer, error) {
	if path == "" {
		return nil, errors.New("agent: host key file: empty path")
	}
	signer, err := loadHostKey(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return signer, err
	}
	if err := createHostKey(path); err != nil {
		return nil, err
	}
	return loadHostKey(path)
}

func loadHostKey(path string) (ssh.Signer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("agent: open host key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("agent: stat host key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("agent: host key %s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("agent: host key %s: permissions %#o are too open (want 0600)", path, perm)
	}
	if ok, uid := ownerOK(fi); !ok {
		return nil, fmt.Errorf("agent: host key %s: owned by uid %d, not by the user the agent runs as or root", path, uid)
	}
	data, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("agent: read host key %s: %w", path, err)
	}
	signer, err := ssh.ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("agent: parse host key %s: %w", path, err)
	}
	return signer, nil
}

func createHostKey(path string) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("agent: create host key directory: %w", err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("agent: generate host key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "messor agent host key")
	if err != nil {
		return fmt.Errorf("agent: encode host key: %w", err)
	}
	data := pem.EncodeToMemory(block)
	tmp, err := os.CreateTemp(dir, ".messor-hostkey-*")
	if err != nil {
		return fmt.Errorf("agent: create host key: %w", err)
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}()
	if err := writeKeyFile(tmp, data); err != nil {
		return err
	}
	// Link, not rename: never replace a key another process created meanwhile.
	switch err := os.Link(tmp.Name(), path); {
	case err == nil, errors.Is(err, fs.ErrExist):
	default:
		// A file system without hard links: create in place, exclusively.
		f, err2 := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err2, fs.ErrExist) {
			return nil
		}
		if err2 != nil {
			return fmt.Errorf("agent: install host key: %w", errors.Join(err, err2))
		}
		if err := writeKeyFile(f, data); err != nil {
			os.Remove(path)
			return err
		}
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// writeKeyFile makes f private, writes data, syncs and closes f.
func writeKeyFile(f *os.File, data []byte) error {
	defer f.Close()
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("agent: create host key: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("agent: write host key %s: %w", f.Name(), err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("agent: sync host key %s: %w", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("agent: write host key %s: %w", f.Name(), err)
	}
	return nil
}
