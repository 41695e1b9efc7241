package conformance

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/internal/sftptest"
	"github.com/messor-sync/messor/protocol"
)

// nobody is the user the unprivileged sftp-server runs as: the tests run as
// root, whom file modes do not stop.
const nobody = 65534

// startSFTPServerAsNobody serves dir with OpenSSH's sftp-server running as
// nobody, so that modes are enforced as for any user but root. dir is
// given to nobody, and the directories above it opened to be passed
// through.
func startSFTPServerAsNobody(t *testing.T, dir string, keys []ssh.PublicKey) Host {
	const bin = "/usr/lib/openssh/sftp-server"
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("OpenSSH's sftp-server is needed: %v", err)
	}
	giveToNobody(t, dir)
	for up := filepath.Dir(dir); up != "/" && up != "."; up = filepath.Dir(up) {
		fi, err := os.Stat(up)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(up, fi.Mode().Perm()|0o011); err != nil {
			t.Fatal(err)
		}
	}
	return sftptest.Start(t, keys, "SSH-2.0-OpenSSH_9.6p1", func(ch ssh.Channel) {
		cmd := exec.Command(bin)
		cmd.Dir = dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
		cmd.Stdin = ch
		cmd.Stdout = ch
		cmd.Stderr = io.Discard
		cmd.Run()
	})
}

// giveToNobody makes nobody the owner of everything under dir.
func giveToNobody(t *testing.T, dir string) {
	err := filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, nobody, nobody)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestReadOnlyPartialResumed: a carrier killed after it set a partial to
// its read-only (or 0000) source's mode, before putting it in place, leaves a
// partial its host's user cannot write; the next visit still delivers the
// file, with its mode, on a host whose sftp-server enforces modes.
func TestReadOnlyPartialResumed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		size int
		perm os.FileMode
	}{{"small", 100, 0o444}, {"big", 3 << 20, 0o444}, {"small0000", 100, 0}, {"big0000", 3 << 20, 0}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // each with its own hosts
			size := tc.size
			e := NewEnv(t, SSHD(false), "alpha")
			e.Start = startSFTPServerAsNobody
			e.AddHost("beta", true)
			content := make([]byte, size)
			for i := range content {
				content[i] = byte(i * 7)
			}
			e.Outbox("alpha", "beta", map[string][]byte{"ro.bin": content})
			src := filepath.Join(e.Dirs["alpha"], filepath.FromSlash(protocol.OutboxDir("beta")), "ro.bin")
			if err := os.Chmod(src, tc.perm); err != nil {
				t.Fatal(err)
			}
			c := e.Carrier(1<<30, carrier.Options{})
			MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
			ents, err := c.Buffer().Entries()
			if err != nil || len(ents) != 1 {
				t.Fatalf("buffer: %v, %v", ents, err)
			}
			// What a carrier killed between the chmod and the rename
			// leaves: the whole partial, mode 0444.
			inbox := filepath.Join(e.Dirs["beta"], filepath.FromSlash(protocol.InboxDir("alpha")))
			partial := filepath.Join(inbox, protocol.PartialName("ro.bin", ents[0].Hash, c.Buffer().ID()))
			if err := os.MkdirAll(inbox, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(partial, content, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(partial, tc.perm); err != nil {
				t.Fatal(err)
			}
			giveToNobody(t, e.Dirs["beta"])
			MustOK(t, e.Dropoff(c, "beta"))
			SameTree(t, "inbox", e.Inbox("beta", "alpha"), map[string][]byte{"ro.bin": content})
			if fi, err := os.Stat(filepath.Join(inbox, "ro.bin")); err != nil || fi.Mode().Perm() != tc.perm {
				t.Errorf("arrived: %v, %v; want mode %v", fi, err, tc.perm)
			}
			if ents, _ := c.Buffer().Entries(); len(ents) != 0 {
				t.Errorf("the buffer still holds %d entries", len(ents))
			}
		})
	}
}

// TestUnreadableDeliveredFound: a file delivered with a 0000 or
// write-only source's mode, whose entry was kept (a carrier killed before
// the directory sync, a host that cannot sync), is found and counted as
// delivered by the next visit, though its host's user cannot read it; it
// keeps its mode.
func TestUnreadableDeliveredFound(t *testing.T) {
	t.Parallel()
	for _, perm := range []os.FileMode{0, 0o200} {
		t.Run(perm.String(), func(t *testing.T) {
			t.Parallel() // each with its own hosts
			e := NewEnv(t, SSHD(false), "alpha")
			e.Start = startSFTPServerAsNobody
			e.AddHost("beta", true)
			files := map[string][]byte{"small.bin": []byte("small\n"), "big.bin": make([]byte, 3<<20)}
			e.Outbox("alpha", "beta", files)
			for name := range files {
				src := filepath.Join(e.Dirs["alpha"], filepath.FromSlash(protocol.OutboxDir("beta")), name)
				if err := os.Chmod(src, perm); err != nil {
					t.Fatal(err)
				}
			}
			c := e.Carrier(1<<30, carrier.Options{})
			MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
			// What a carrier killed after the renames, before the
			// directory sync, leaves.
			inbox := filepath.Join(e.Dirs["beta"], filepath.FromSlash(protocol.InboxDir("alpha")))
			testenvWrite(t, inbox, files, perm)
			giveToNobody(t, e.Dirs["beta"])
			rs := e.Dropoff(c, "beta")
			MustOK(t, rs)
			if rs[0].Already != len(files) {
				t.Errorf("dropoff: %s, want all %d found", rs[0].Summary(), len(files))
			}
			if ents, _ := c.Buffer().Entries(); len(ents) != 0 {
				t.Errorf("the buffer still holds %d entries", len(ents))
			}
			SameTree(t, "inbox", e.Inbox("beta", "alpha"), files)
			for name := range files {
				if fi, err := os.Stat(filepath.Join(inbox, name)); err != nil || fi.Mode().Perm() != perm {
					t.Errorf("%s: %v, %v; want mode %v", name, fi, err, perm)
				}
			}
		})
	}
}

// testenvWrite writes files into dir with mode perm.
func testenvWrite(t *testing.T, dir string, files map[string][]byte, perm os.FileMode) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, perm); err != nil {
			t.Fatal(err)
		}
	}
}
