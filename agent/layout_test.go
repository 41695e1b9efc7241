package agent

import (
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/pkg/sftp"
)

// TestOnlyOutboxAndInbox: the agent serves messor/outbox/ and messor/inbox/
// and nothing else under its Root. A carrier's buffer kept there (the
// default on a laptop that is both host and carrier, before it moved) holds
// the index and every carried file: no authorized key may list, read,
// change, remove or rename it, not even through a symbolic link that
// stays under Root.
func TestOnlyOutboxAndInbox(t *testing.T) {
	e := newEnv(t)
	e.start()
	c := e.sftp()
	for _, f := range []string{"buffer/index.db", "buffer/objects/ab/cd", "notes.txt"} {
		p := e.inRoot(f)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("private "+f), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, c, "messor/outbox/real", []byte("inside"))
	mustSymlink(t, "../buffer/index.db", e.inRoot("outbox/to-index"))
	mustSymlink(t, "../buffer", e.inRoot("outbox/to-buffer"))
	mustSymlink(t, "../../notes.txt", e.inRoot("inbox/to-notes"))
	mustSymlink(t, "../inbox", e.inRoot("outbox/to-inbox"))

	if names := dirNames(t, c, "messor"); !slices.Equal(names, []string{"inbox", "outbox", "sent"}) {
		t.Errorf("messor/ lists %v, want [inbox outbox sent]", names)
	}
	unreachable := []string{
		"messor/buffer", "messor/buffer/index.db", "messor/buffer/objects/ab/cd", "messor/notes.txt",
		"messor/outbox/../buffer/index.db", "messor/nothing",
		"messor/outbox/to-index", "messor/outbox/to-buffer", "messor/outbox/to-buffer/index.db",
		"messor/inbox/to-notes", "messor/outbox/to-inbox/x",
	}
	for _, p := range unreachable {
		if _, err := c.Stat(p); err == nil {
			t.Errorf("Stat(%q) succeeded", p)
		}
		if f, err := c.Open(p); err == nil {
			b, _ := io.ReadAll(f)
			f.Close()
			t.Errorf("Open(%q) succeeded, read %q", p, b)
		}
		if f, err := c.OpenFile(p, os.O_RDWR|os.O_CREATE); err == nil {
			f.Close()
			t.Errorf("OpenFile(%q) for writing succeeded", p)
		}
		if _, err := c.ReadDir(p); err == nil {
			t.Errorf("ReadDir(%q) succeeded", p)
		}
		if err := c.Chmod(p, 0o666); err == nil {
			t.Errorf("Chmod(%q) succeeded", p)
		}
		if err := c.Truncate(p, 0); err == nil {
			t.Errorf("Truncate(%q) succeeded", p)
		}
		if err := c.Mkdir(p + "/sub"); err == nil {
			t.Errorf("Mkdir(%q/sub) succeeded", p)
		}
		if link := path.Base(p); strings.HasPrefix(link, "to-") {
			continue // the link itself is in the outbox: it may be renamed or removed
		}
		if err := c.Rename(p, "messor/outbox/stolen"); err == nil {
			t.Errorf("Rename(%q) out succeeded", p)
		}
		if err := c.PosixRename("messor/outbox/real", p); err == nil {
			t.Errorf("PosixRename into %q succeeded", p)
			writeFile(t, c, "messor/outbox/real", []byte("inside"))
		}
		{
			if err := c.Remove(p); err == nil {
				t.Errorf("Remove(%q) succeeded", p)
			}
			if err := c.RemoveDirectory(p); err == nil {
				t.Errorf("RemoveDirectory(%q) succeeded", p)
			}
		}
	}
	for _, p := range []string{"messor/buffer2", "messor/x.txt"} {
		if f, err := c.Create(p); err == nil {
			f.Close()
			t.Errorf("Create(%q) succeeded", p)
		}
		if err := c.Mkdir(p); err == nil {
			t.Errorf("Mkdir(%q) succeeded", p)
		}
	}
	// The layout's own directories stay.
	for _, p := range []string{"messor/outbox", "messor/inbox"} {
		if err := c.RemoveDirectory(p); err == nil {
			t.Errorf("RemoveDirectory(%q) succeeded", p)
		}
		if err := c.Rename(p, "messor/inbox/moved"); err == nil {
			t.Errorf("Rename(%q) succeeded", p)
		}
		if err := c.Chmod(p, 0o777); err == nil {
			t.Errorf("Chmod(%q) succeeded", p)
		}
	}
	for _, f := range []string{"buffer/index.db", "buffer/objects/ab/cd", "notes.txt"} {
		fi, err := os.Stat(e.inRoot(f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s after the session: %v, %v", f, fi, err)
			continue
		}
		if b, _ := os.ReadFile(e.inRoot(f)); string(b) != "private "+f {
			t.Errorf("%s changed: %q", f, b)
		}
	}
	if got := readFile(t, c, "messor/outbox/real"); string(got) != "inside" {
		t.Errorf("outbox file reads %q", got)
	}
}

// TestModes: what a client creates is private unless it asks otherwise
// (files 0600, directories 0700: the carrier then sets each file's mode to
// its source's); chmod is honoured on files and directories, without
// setuid, setgid or sticky; times are set.
func TestModes(t *testing.T) {
	e, c := withInboxFile(t)
	f, err := c.OpenFile("messor/inbox/src/b", os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	mode := func(rel string) os.FileMode {
		t.Helper()
		fi, err := os.Stat(e.inRoot(rel))
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode() & (os.ModePerm | os.ModeSetuid | os.ModeSetgid | os.ModeSticky)
	}
	if m := mode("inbox/src"); m != 0o700 {
		t.Errorf("mkdir made %v, want 0700", m)
	}
	for _, f := range []string{"inbox/src/a", "inbox/src/b"} {
		if m := mode(f); m != 0o600 {
			t.Errorf("%s created %v, want 0600", f, m)
		}
	}
	if err := c.Chmod("messor/inbox/src/a", 0o755|os.ModeSetuid|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	if m := mode("inbox/src/a"); m != 0o755 {
		t.Errorf("chmod 04755 gave %v, want 0755", m)
	}
	if err := c.Chmod("messor/inbox/src", 0o750); err != nil {
		t.Errorf("chmod of a directory: %v", err)
	} else if m := mode("inbox/src"); m != 0o750 {
		t.Errorf("chmod 0750 of a directory gave %v", m)
	}
}

// TestFsyncDirectory: a directory opened for reading can be synced with
// fsync@openssh.com (as on OpenSSH's sftp-server): that is how a carrier
// makes the name of a file it just put in place durable. Reading from it
// fails, and nothing outside the layout can be opened that way.
func TestFsyncDirectory(t *testing.T) {
	e, c := withInboxFile(t)
	if err := c.Rename("messor/inbox/src/a", "messor/inbox/src/b"); err != nil {
		t.Fatal(err)
	}
	d, err := c.OpenFile("messor/inbox/src", os.O_RDONLY)
	if err != nil {
		t.Fatalf("open a directory for reading: %v", err)
	}
	if err := d.Sync(); err != nil {
		t.Fatalf("fsync a directory: %v", err)
	}
	if _, err := d.Read(make([]byte, 10)); err == nil {
		t.Error("read from a directory succeeded")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`msg="sftp fsync" .*path=/messor/inbox/src `).MatchString(e.log.String()) {
		t.Errorf("the agent's log shows no sync of the directory:\n%s", e.log.String())
	}
	for _, p := range []string{"messor/inbox/src", "messor/outbox"} {
		if f, err := c.OpenFile(p, os.O_WRONLY); err == nil {
			f.Close()
			t.Errorf("open %s for writing succeeded", p)
		}
	}
}

// TestModesAsked: an SSH_FXP_OPEN or SSH_FXP_MKDIR that asks for
// permissions gets them (the rwx bits, less the umask), as on OpenSSH's
// sftp-server.
func TestModesAsked(t *testing.T) {
	e := newEnv(t)
	e.start()
	r := newRawSFTP(t, e.dial())
	r.send(fxpInit, 0, uint32(3))
	r.recv()
	const pflags = 0x02 | 0x08 // write, creat
	r.send(fxpMkdir, 1, "messor/inbox/asked", uint32(attrPermissions), uint32(0o4751))
	r.send(fxpOpen, 2, "messor/inbox/asked/f", uint32(pflags), uint32(attrSize|attrPermissions), uint64(0), uint32(0o2640))
	r.send(fxpOpen, 3, "messor/inbox/asked/g", uint32(pflags), uint32(0))
	for range 3 {
		typ, id, rest := r.recv()
		if typ != fxpHandle && (typ != fxpStatus || r.status(rest) != fxOK) {
			t.Fatalf("request %d: type %d %q", id, typ, rest)
		}
	}
	u := umask(t)
	for rel, want := range map[string]os.FileMode{"inbox/asked": 0o751 &^ u, "inbox/asked/f": 0o640 &^ u, "inbox/asked/g": 0o600 &^ u} {
		fi, err := os.Stat(e.inRoot(rel))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode() & (os.ModePerm | os.ModeSetuid | os.ModeSetgid | os.ModeSticky); got != want {
			t.Errorf("%s made %v, want %v", rel, got, want)
		}
	}
}

// withInboxFile starts an agent and makes messor/inbox/src/a over SFTP.
func withInboxFile(t *testing.T) (*testEnv, *sftp.Client) {
	e := newEnv(t)
	e.start()
	c := e.sftp()
	if err := c.Mkdir("messor/inbox/src"); err != nil {
		t.Fatal(err)
	}
	writeFile(t, c, "messor/inbox/src/a", []byte("a"))
	return e, c
}

// testTree makes the areas in a new directory and opens them.
func testTree(t *testing.T) (*tree, string) {
	top := t.TempDir()
	for _, a := range areas {
		if err := os.Mkdir(filepath.Join(top, a), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	tr, err := openTree(top)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr, top
}
