package agent

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pkg/sftp"

	"github.com/messor-sync/messor/protocol"
)

func TestRoundTrip(t *testing.T) {
	e := newEnv(t)
	e.start()
	c := e.sftp()

	if wd, err := c.Getwd(); err != nil || wd != "/" {
		t.Errorf("Getwd = %q, %v; want /", wd, err)
	}
	if err := c.Mkdir("messor/outbox/x"); err != nil {
		t.Fatalf("mkdir: %v", err)
	}
	if fi, err := os.Stat(e.inRoot("outbox/x")); err != nil || fi.Mode().Perm() != 0o700&^umask(t) {
		t.Errorf("outbox/x on disk: %v, %v", fi, err)
	}

	data := randomBytes(t, 100_000)
	writeFile(t, c, "messor/outbox/x/file", data)
	if got := readFile(t, c, "messor/outbox/x/file"); !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, differ from the %d written", len(got), len(data))
	}
	if got, err := os.ReadFile(e.inRoot("outbox/x/file")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("file on disk differs: %v", err)
	}
	if fi, err := os.Stat(e.inRoot("outbox/x/file")); err != nil || fi.Mode().Perm() != 0o600&^umask(t) {
		t.Errorf("file mode on disk: %v, %v", fi, err)
	}

	fi, err := c.Stat("messor/outbox/x/file")
	if err != nil || fi.Size() != int64(len(data)) || !fi.Mode().IsRegular() {
		t.Fatalf("Stat = %v, %v", fi, err)
	}
	// Absolute and relative paths name the same file.
	if fi, err := c.Stat("/messor/outbox/x/file"); err != nil || fi.Size() != int64(len(data)) {
		t.Fatalf("Stat absolute = %v, %v", fi, err)
	}
	entries, err := c.ReadDir("messor/outbox/x")
	if err != nil || len(entries) != 1 || entries[0].Name() != "file" || entries[0].Size() != int64(len(data)) {
		t.Fatalf("ReadDir = %v, %v", entries, err)
	}
	names := dirNames(t, c, "messor")
	if !slices.Equal(names, []string{"inbox", "outbox", "sent"}) {
		t.Errorf("ReadDir messor = %v", names)
	}

	t.Run("resume at offset", func(t *testing.T) {
		p := "messor/outbox/x/" + protocol.PartialName("f", "00", "carrier")
		full := randomBytes(t, 70_000)
		f, err := c.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(full[:30_000]); err != nil {
			t.Fatal(err)
		}
		f.Close()

		// A second O_EXCL create fails; the partial is untouched.
		if _, err := c.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL); err == nil {
			t.Fatal("O_EXCL create of an existing file succeeded")
		}

		f, err = c.OpenFile(p, os.O_WRONLY|os.O_CREATE)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := f.Stat()
		if err != nil || fi.Size() != 30_000 {
			t.Fatalf("partial size = %v, %v", fi, err)
		}
		if _, err := f.WriteAt(full[30_000:], fi.Size()); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatalf("fsync@openssh.com: %v", err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		if got := readFile(t, c, p); !bytes.Equal(got, full) {
			t.Fatalf("resumed file differs (%d bytes)", len(got))
		}

		// O_APPEND is ignored: writes land at their offsets.
		f, err = c.OpenFile(p, os.O_WRONLY|os.O_APPEND)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte("AB"), 0); err != nil {
			t.Fatal(err)
		}
		f.Close()
		want := append([]byte("AB"), full[2:]...)
		if got := readFile(t, c, p); !bytes.Equal(got, want) {
			t.Fatal("write at offset 0 of an O_APPEND handle did not land at 0")
		}

		// O_TRUNC empties.
		f, err = c.OpenFile(p, os.O_WRONLY|os.O_TRUNC)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		if fi, err := c.Stat(p); err != nil || fi.Size() != 0 {
			t.Fatalf("after O_TRUNC: %v, %v", fi, err)
		}
	})

	t.Run("fsync", func(t *testing.T) {
		if v, ok := c.HasExtension("fsync@openssh.com"); !ok || v != "1" {
			t.Fatalf("fsync@openssh.com not offered (%q, %v)", v, ok)
		}
		if _, ok := c.HasExtension("hardlink@openssh.com"); ok {
			t.Error("hardlink@openssh.com offered though links are refused")
		}
		f, err := c.OpenFile("messor/outbox/x/synced", os.O_RDWR|os.O_CREATE)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.Write([]byte("durable")); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatalf("Sync: %v", err)
		}
		// A read-only handle can be synced too, as on OpenSSH.
		r, err := c.Open("messor/outbox/x/synced")
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Sync(); err != nil {
			t.Fatalf("Sync read-only: %v", err)
		}
		r.Close()
	})

	t.Run("statvfs", func(t *testing.T) {
		for _, p := range []string{"messor", "messor/outbox/x/file", "/", "."} {
			st, err := c.StatVFS(p)
			if err != nil {
				t.Fatalf("StatVFS(%q): %v", p, err)
			}
			if st.Blocks == 0 || st.Frsize == 0 || st.FreeSpace() > st.TotalSpace() {
				t.Errorf("StatVFS(%q) = %+v", p, st)
			}
		}
		if _, err := c.StatVFS("messor/outbox/missing"); !isNotExist(err) {
			t.Errorf("StatVFS of a missing path: %v", err)
		}
	})

	t.Run("rename never overwrites", func(t *testing.T) {
		writeFile(t, c, "messor/outbox/x/a", []byte("A"))
		writeFile(t, c, "messor/outbox/x/b", []byte("B"))
		if err := c.Rename("messor/outbox/x/a", "messor/outbox/x/b"); err == nil {
			t.Fatal("Rename onto an existing file succeeded")
		}
		if got := readFile(t, c, "messor/outbox/x/b"); string(got) != "B" {
			t.Fatalf("target changed to %q", got)
		}
		if got := readFile(t, c, "messor/outbox/x/a"); string(got) != "A" {
			t.Fatalf("source changed to %q", got)
		}
		if err := c.Rename("messor/outbox/x/a", "messor/outbox/x/c"); err != nil {
			t.Fatalf("Rename to a free name: %v", err)
		}
		if _, err := c.Stat("messor/outbox/x/a"); !isNotExist(err) {
			t.Fatalf("source still there after rename: %v", err)
		}
		// Directories rename too, and not onto an existing one.
		if err := c.MkdirAll("messor/outbox/d1/sub"); err != nil {
			t.Fatal(err)
		}
		if err := c.Mkdir("messor/outbox/d2"); err != nil {
			t.Fatal(err)
		}
		if err := c.Rename("messor/outbox/d1", "messor/outbox/d2"); err == nil {
			t.Fatal("Rename of a directory onto an existing one succeeded")
		}
		if err := c.Rename("messor/outbox/d1", "messor/outbox/d3"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Stat("messor/outbox/d3/sub"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("posix rename overwrites", func(t *testing.T) {
		if err := c.PosixRename("messor/outbox/x/c", "messor/outbox/x/b"); err != nil {
			t.Fatalf("PosixRename: %v", err)
		}
		if got := readFile(t, c, "messor/outbox/x/b"); string(got) != "A" {
			t.Fatalf("target is %q after PosixRename", got)
		}
		if _, err := c.Stat("messor/outbox/x/c"); !isNotExist(err) {
			t.Fatalf("source still there: %v", err)
		}
	})

	t.Run("setstat", func(t *testing.T) {
		p := "messor/outbox/x/b"
		mt := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
		if err := c.Chtimes(p, mt, mt); err != nil {
			t.Fatalf("Chtimes: %v", err)
		}
		if fi, err := os.Stat(e.inRoot("outbox/x/b")); err != nil || !fi.ModTime().Equal(mt) {
			t.Fatalf("mtime on disk: %v, %v", fi.ModTime(), err)
		}
		if err := c.Chtimes("messor/outbox/x", mt, mt); err != nil {
			t.Fatalf("Chtimes on a directory: %v", err)
		}
		if err := c.Chmod(p, 0o600); err != nil {
			t.Fatalf("Chmod: %v", err)
		}
		if fi, _ := os.Stat(e.inRoot("outbox/x/b")); fi.Mode().Perm() != 0o600 {
			t.Fatalf("mode on disk %v", fi.Mode())
		}
		if err := c.Chmod("messor/outbox/x", 0o750|os.ModeSetgid); err != nil {
			t.Errorf("Chmod of a directory: %v", err)
		} else if fi, _ := os.Stat(e.inRoot("outbox/x")); fi.Mode()&(os.ModePerm|os.ModeSetgid) != 0o750 {
			t.Errorf("directory mode on disk %v, want 0750", fi.Mode())
		}
		if err := c.Chmod("messor/outbox", 0o777); err == nil {
			t.Error("Chmod of the outbox itself succeeded")
		}
		writeFile(t, c, "messor/outbox/x/t", []byte("0123456789"))
		if err := c.Truncate("messor/outbox/x/t", 4); err != nil {
			t.Fatalf("Truncate: %v", err)
		}
		if got := readFile(t, c, "messor/outbox/x/t"); string(got) != "0123" {
			t.Fatalf("after truncate: %q", got)
		}
		if err := c.Chown(p, 0, 0); err == nil {
			t.Error("Chown succeeded")
		}
	})

	t.Run("remove", func(t *testing.T) {
		if err := c.Remove("messor/outbox/x/t"); err != nil {
			t.Fatal(err)
		}
		if err := c.RemoveDirectory("messor/outbox/x"); err == nil {
			t.Fatal("RemoveDirectory of a non-empty directory succeeded")
		}
		if err := c.RemoveDirectory("messor/outbox/d2"); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(e.inRoot("outbox/d2")); !os.IsNotExist(err) {
			t.Fatalf("d2 still on disk: %v", err)
		}
	})

	t.Run("large concurrent transfer", func(t *testing.T) {
		fast := e.sftp(sftp.UseConcurrentWrites(true), sftp.UseConcurrentReads(true),
			sftp.MaxPacketUnchecked(maxTxPacket))
		big := randomBytes(t, 5<<20+123)
		f, err := fast.Create("messor/inbox/big")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.ReadFrom(bytes.NewReader(big)); err != nil {
			t.Fatalf("upload: %v", err)
		}
		if err := f.Sync(); err != nil {
			t.Fatalf("sync: %v", err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		g, err := fast.Open("messor/inbox/big")
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		var got bytes.Buffer
		if _, err := g.WriteTo(&got); err != nil {
			t.Fatalf("download: %v", err)
		}
		if !bytes.Equal(got.Bytes(), big) {
			t.Fatalf("downloaded %d bytes differ from the %d uploaded", got.Len(), len(big))
		}
	})
}

func TestServerVersion(t *testing.T) {
	e := newEnv(t)
	e.start()
	conn := e.dial()
	if got := string(conn.ServerVersion()); got != protocol.AgentServerVersion {
		t.Fatalf("server version %q, want %q", got, protocol.AgentServerVersion)
	}
	if !strings.Contains(string(conn.ServerVersion()), protocol.AgentVersionTag) {
		t.Fatal("version lacks the agent tag")
	}
}

func dirNames(t *testing.T, c *sftp.Client, p string) []string {
	t.Helper()
	entries, err := c.ReadDir(p)
	if err != nil {
		t.Fatalf("ReadDir(%q): %v", p, err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestConfinement(t *testing.T) {
	e := newEnv(t)
	e.start()
	c := e.sftp()
	writeFile(t, c, "messor/outbox/real", []byte("inside"))

	// Symbolic links made on the host, pointing out of Root.
	mustSymlink(t, filepath.Join(e.outside, "secret"), e.inRoot("outbox/abs-link"))
	mustSymlink(t, "../../../outside/secret", e.inRoot("outbox/rel-link"))
	mustSymlink(t, e.outside, e.inRoot("outbox/dir-link"))
	mustSymlink(t, filepath.Join(e.outside, "new"), e.inRoot("outbox/dangling-link"))
	// A link that stays inside Root is followed, as os.Root allows.
	mustSymlink(t, "real", e.inRoot("outbox/inside-link"))

	t.Run("root lists only messor", func(t *testing.T) {
		for _, p := range []string{"/", ".", "", "..", "/..", "../..", "messor/.."} {
			if names := dirNames(t, c, p); !slices.Equal(names, []string{"messor"}) {
				t.Errorf("ReadDir(%q) = %v, want [messor]", p, names)
			}
		}
		if fi, err := c.Stat("/"); err != nil || !fi.IsDir() {
			t.Errorf("Stat / = %v, %v", fi, err)
		}
		if fi, err := c.Stat("messor"); err != nil || !fi.IsDir() {
			t.Errorf("Stat messor = %v, %v", fi, err)
		}
	})

	t.Run("paths outside the layout", func(t *testing.T) {
		for _, p := range []string{
			"../../etc/passwd", "/../../etc/passwd", "/etc/passwd", "messor/../../../etc/passwd",
			"messor/outbox/../../../etc/passwd", "/home", "/tmp", e.outside + "/secret",
			"messor/../outside/secret", "messor/" + strings.Repeat("../", 10) + e.outside[1:] + "/secret",
		} {
			if _, err := c.Stat(p); err == nil {
				t.Errorf("Stat(%q) succeeded", p)
			}
			if f, err := c.Open(p); err == nil {
				f.Close()
				t.Errorf("Open(%q) succeeded", p)
			}
			if f, err := c.OpenFile(p, os.O_WRONLY|os.O_CREATE); err == nil {
				f.Close()
				t.Errorf("OpenFile(%q) for writing succeeded", p)
			}
			if _, err := c.ReadDir(p); err == nil {
				t.Errorf("ReadDir(%q) succeeded", p)
			}
			if err := c.Remove(p); err == nil {
				t.Errorf("Remove(%q) succeeded", p)
			}
		}
		for _, p := range []string{"/x", "x", "/etc/x", e.outside + "/new"} {
			if f, err := c.Create(p); err == nil {
				f.Close()
				t.Errorf("Create(%q) succeeded", p)
			}
			if err := c.Mkdir(p); err == nil {
				t.Errorf("Mkdir(%q) succeeded", p)
			}
		}
		if err := c.Rename("messor/outbox/real", "/stolen"); err == nil {
			t.Error("Rename out of messor succeeded")
		}
		if err := c.PosixRename("messor/outbox/real", "../stolen"); err == nil {
			t.Error("PosixRename out of messor succeeded")
		}
		for _, p := range []string{"messor", "/messor", "/"} {
			if err := c.RemoveDirectory(p); err == nil {
				t.Errorf("RemoveDirectory(%q) succeeded", p)
			}
			if err := c.Rename(p, "messor/outbox/moved"); err == nil {
				t.Errorf("Rename(%q) succeeded", p)
			}
		}
		if err := c.Mkdir("messor"); err == nil {
			t.Error("Mkdir messor succeeded")
		}
	})

	t.Run("symlinks out of root", func(t *testing.T) {
		for _, l := range []string{"abs-link", "rel-link", "dangling-link"} {
			p := "messor/outbox/" + l
			if f, err := c.Open(p); err == nil {
				b, _ := io.ReadAll(f)
				f.Close()
				t.Errorf("Open(%q) succeeded, read %q", p, b)
			}
			if f, err := c.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC); err == nil {
				f.Write([]byte("pwned"))
				f.Close()
				t.Errorf("OpenFile(%q) for writing succeeded", p)
			}
			if _, err := c.Stat(p); err == nil {
				t.Errorf("Stat(%q) followed the link out", p)
			}
			if err := c.Chmod(p, 0o600); err == nil {
				t.Errorf("Chmod(%q) succeeded", p)
			}
			if err := c.Truncate(p, 0); err == nil {
				t.Errorf("Truncate(%q) succeeded", p)
			}
			if _, err := c.ReadLink(p); err == nil {
				t.Errorf("ReadLink(%q) succeeded", p)
			}
		}
		for _, p := range []string{"messor/outbox/dir-link", "messor/outbox/dir-link/secret", "messor/outbox/dir-link/new"} {
			if _, err := c.ReadDir(p); err == nil && p == "messor/outbox/dir-link" {
				t.Errorf("ReadDir(%q) succeeded", p)
			}
			if f, err := c.Create(p); err == nil {
				f.Close()
				t.Errorf("Create(%q) succeeded", p)
			}
			if f, err := c.Open(p); err == nil {
				f.Close()
				t.Errorf("Open(%q) succeeded", p)
			}
		}
		if err := c.Mkdir("messor/outbox/dir-link/sub"); err == nil {
			t.Error("Mkdir through a link out succeeded")
		}
		if err := c.Rename("messor/outbox/real", "messor/outbox/dir-link/stolen"); err == nil {
			t.Error("Rename through a link out succeeded")
		}
		if err := c.PosixRename("messor/outbox/real", "messor/outbox/dir-link/stolen"); err == nil {
			t.Error("PosixRename through a link out succeeded")
		}
		// The outside is untouched.
		if b, err := os.ReadFile(filepath.Join(e.outside, "secret")); err != nil || string(b) != "secret" {
			t.Fatalf("outside secret changed: %q, %v", b, err)
		}
		entries, _ := os.ReadDir(e.outside)
		if len(entries) != 1 {
			t.Fatalf("something was created outside: %v", entries)
		}
		// Removing the link itself is fine: it is inside.
		if fi, err := c.Lstat("messor/outbox/abs-link"); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("Lstat of the link: %v, %v", fi, err)
		}
		if err := c.Remove("messor/outbox/abs-link"); err != nil {
			t.Errorf("Remove of the link: %v", err)
		}
		if got := readFile(t, c, "messor/outbox/inside-link"); string(got) != "inside" {
			t.Errorf("link inside Root read %q", got)
		}
	})

	t.Run("no links can be made", func(t *testing.T) {
		if err := c.Symlink("real", "messor/outbox/new-link"); !isPermission(err) {
			t.Errorf("Symlink: %v, want permission denied", err)
		}
		if err := c.Symlink("/etc/passwd", "messor/outbox/new-link"); err == nil {
			t.Error("Symlink to /etc/passwd succeeded")
		}
		if err := c.Link("messor/outbox/real", "messor/outbox/hard"); !isPermission(err) {
			t.Errorf("Link: %v, want permission denied", err)
		}
		if _, err := os.Lstat(e.inRoot("outbox/new-link")); !os.IsNotExist(err) {
			t.Error("a link was created")
		}
		if _, err := os.Lstat(e.inRoot("outbox/hard")); !os.IsNotExist(err) {
			t.Error("a hard link was created")
		}
	})

	t.Run("reserved names", func(t *testing.T) {
		if err := os.WriteFile(e.inRoot("outbox/.messor-state"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{
			"messor/outbox/.messor-foo", "messor/.messor", "messor/.messor-dir/x",
			"messor/outbox/.messor-state", "messor/outbox/.messorx",
			// as a case-insensitive disk or Windows would read them
			"messor/outbox/.MESSOR-state", "messor/outbox/.Messor", `messor/outbox/a\.messor-x`,
		} {
			if f, err := c.Create(p); !isPermission(err) {
				if err == nil {
					f.Close()
				}
				t.Errorf("Create(%q): %v, want permission denied", p, err)
			}
			if err := c.Mkdir(p); !isPermission(err) {
				t.Errorf("Mkdir(%q): %v, want permission denied", p, err)
			}
		}
		p := "messor/outbox/.messor-state"
		if _, err := c.Stat(p); !isPermission(err) {
			t.Errorf("Stat(%q): %v", p, err)
		}
		if f, err := c.Open(p); !isPermission(err) {
			if err == nil {
				f.Close()
			}
			t.Errorf("Open(%q): %v", p, err)
		}
		if err := c.Remove(p); !isPermission(err) {
			t.Errorf("Remove(%q): %v", p, err)
		}
		if err := c.Rename("messor/outbox/real", "messor/outbox/.messor-x"); !isPermission(err) {
			t.Errorf("Rename to a reserved name: %v", err)
		}
		if slices.Contains(dirNames(t, c, "messor/outbox"), ".messor-state") {
			t.Error("listing shows a reserved name")
		}

		// Delivery partials are allowed all through their life.
		part := "messor/inbox/src/" + protocol.PartialName("a.txt", "ab", "carrier")
		if err := c.MkdirAll("messor/inbox/src"); err != nil {
			t.Fatal(err)
		}
		writeFile(t, c, part, []byte("partial"))
		if fi, err := c.Stat(part); err != nil || fi.Size() != 7 {
			t.Fatalf("Stat partial: %v, %v", fi, err)
		}
		if !slices.Contains(dirNames(t, c, "messor/inbox/src"), filepath.Base(part)) {
			t.Error("listing hides the partial")
		}
		if err := c.Rename(part, "messor/inbox/src/a.txt"); err != nil {
			t.Fatalf("Rename partial into place: %v", err)
		}
		writeFile(t, c, "messor/inbox/src/.messor.part.xyz", []byte("x"))
		if err := c.Remove("messor/inbox/src/.messor.part.xyz"); err != nil {
			t.Fatalf("Remove partial: %v", err)
		}

		// So are outbox claims: claimed, listed, looked at, put back,
		// claimed again and removed; a claim never replaces a file.
		if err := c.MkdirAll("messor/outbox/dst"); err != nil {
			t.Fatal(err)
		}
		writeFile(t, c, "messor/outbox/dst/f.txt", []byte("v1"))
		claimName, err := protocol.ClaimName("f.txt", "abc123", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		claim := "messor/outbox/dst/" + claimName
		if err := c.Rename("messor/outbox/dst/f.txt", claim); err != nil {
			t.Fatalf("claim: %v", err)
		}
		if !slices.Contains(dirNames(t, c, "messor/outbox/dst"), claimName) {
			t.Error("listing hides the claim")
		}
		if fi, err := c.Lstat(claim); err != nil || fi.Size() != 2 {
			t.Fatalf("Lstat claim: %v, %v", fi, err)
		}
		writeFile(t, c, "messor/outbox/dst/f.txt", []byte("v2"))
		if err := c.Rename(claim, "messor/outbox/dst/f.txt"); err == nil {
			t.Fatal("putting the claim back replaced a newer file")
		}
		if err := c.Rename("messor/outbox/dst/f.txt", claim); err == nil {
			t.Fatal("a claim replaced another")
		}
		if err := c.Remove(claim); err != nil {
			t.Fatalf("Remove claim: %v", err)
		}
		if b, err := os.ReadFile(e.inRoot("outbox/dst/f.txt")); err != nil || string(b) != "v2" {
			t.Errorf("the newer file: %q, %v", b, err)
		}
	})
}

func mustSymlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func umask(t *testing.T) os.FileMode {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "probe")
	if err := os.WriteFile(p, nil, 0o777); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return 0o777 &^ fi.Mode().Perm()
}

func TestResolve(t *testing.T) {
	tr, _ := testTree(t)
	for _, tc := range []struct {
		in    string
		place place
		area  string
		rel   string
		bad   bool
	}{
		{"/", virtualRoot, "", "", false},
		{"", virtualRoot, "", "", false},
		{"..", virtualRoot, "", "", false},
		{"messor", messorDir, "", "", false},
		{"/messor/", messorDir, "", "", false},
		{"messor/outbox", inArea, "outbox", ".", false},
		{"messor/outbox/a/b", inArea, "outbox", "a/b", false},
		{"/messor/x/../../messor/inbox/y", inArea, "inbox", "y", false},
		{"/messor/y", outside, "", "", true},
		{"/messor/buffer/index.db", outside, "", "", true},
		{"/etc/passwd", outside, "", "", true},
		{"messorx", outside, "", "", true},
		{"/messor/../etc", outside, "", "", true},
		{"messor/inbox/.messor-x/b", outside, "", "", true},
		{"messor/inbox/a/.messor.part.0123", inArea, "inbox", "a/.messor.part.0123", false},
		{"messor/inbox/a/.messor.partial", outside, "", "", true},
		{"messor/outbox/a/.messor.claim.ab.cd.x", inArea, "outbox", "a/.messor.claim.ab.cd.x", false},
		{"messor/outbox/a/.messor.claimx", outside, "", "", true},
		{"messor/inbox/a\x00b", outside, "", "", true},
	} {
		l, err := tr.resolve("test", tc.in)
		if l.place != tc.place || l.area != tc.area || l.rel != tc.rel || (err != nil) != tc.bad {
			t.Errorf("resolve(%q) = %v, %q, %q, %v", tc.in, l.place, l.area, l.rel, err)
		}
	}
}
