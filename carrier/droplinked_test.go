package carrier_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/internal/conformance"
	"github.com/messor-sync/messor/internal/sftptest"
	"github.com/messor-sync/messor/internal/sshdtest"
	"github.com/messor-sync/messor/protocol"
)

// TestPartialLinkedToDelivered: a partial left by an earlier visit that is
// a hard link to the file delivered under its final name (a carrier killed
// between the link that placed it and the removal of the partial, or a
// host that crashed inside its own rename), which the destination's user
// has since changed, is never written through: that file keeps what the
// user wrote, and the carrier's copy arrives beside it; where the user
// left it as it was, the partial is not left behind. For many small files
// (proven in batches), for one (proven by itself), and for a big one.
func TestPartialLinkedToDelivered(t *testing.T) {
	big := map[string][]byte{"a b/f000.txt": bytes.Repeat([]byte("carried\n"), 1<<17)}
	for _, tc := range []struct {
		name      string
		files     map[string][]byte
		unchanged bool // the user left the file delivered as it was
	}{{"batched", dropFiles(40), false}, {"single", map[string][]byte{"a b/f000.txt": []byte("carried\n")}, false},
		{"big", big, false}, {"big-unchanged", big, true}} {
		t.Run(tc.name, func(t *testing.T) {
			de := newDropEnv(t, "", tc.files)
			ents, err := de.c.Buffer().Entries()
			if err != nil {
				t.Fatal(err)
			}
			const rel = "a b/f000.txt"
			inbox := filepath.Join(de.Dirs["beta"], filepath.FromSlash(protocol.InboxDir("alpha")))
			final := filepath.Join(inbox, filepath.FromSlash(rel))
			edited := []byte("the user's own words, written in place\n")
			if tc.unchanged {
				edited = tc.files[rel]
			}
			for _, e := range ents {
				if e.Path != rel {
					continue
				}
				if err := os.MkdirAll(filepath.Dir(final), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(final, edited, 0o644); err != nil {
					t.Fatal(err)
				}
				partial := filepath.Join(filepath.Dir(final), protocol.PartialName(rel, e.Hash, de.c.Buffer().ID()))
				if err := os.Link(final, partial); err != nil {
					t.Fatal(err)
				}
			}
			conformance.MustOK(t, de.Dropoff(de.c, "beta"))
			if got, err := os.ReadFile(final); err != nil || !bytes.Equal(got, edited) {
				t.Fatalf("%s holds %q (%v), want what its user wrote", rel, got, err)
			}
			want := map[string][]byte{}
			for p, b := range tc.files {
				want[p] = b
			}
			if !tc.unchanged {
				want[rel] = edited
				want[protocol.ConflictName(rel, 2)] = tc.files[rel]
			}
			conformance.SameTree(t, "inbox", de.Inbox("beta", "alpha"), want)
		})
	}
}

// TestPartialSymlinkNotFollowed: a symbolic link found where a partial is
// to be made (put there on the host) is never written through: the file
// it points to, outside the inbox, stays as it was, and the file is
// delivered.
func TestPartialSymlinkNotFollowed(t *testing.T) {
	for _, tc := range []struct {
		name    string
		content []byte
	}{{"small", []byte("carried\n")}, {"big", bytes.Repeat([]byte("carried\n"), 1<<17)}} {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string][]byte{"d/f.txt": tc.content}
			de := newDropEnv(t, "", files)
			ents, err := de.c.Buffer().Entries()
			if err != nil || len(ents) != 1 {
				t.Fatalf("buffer: %v, %v", ents, err)
			}
			outside := filepath.Join(de.Dirs["beta"], "outside.txt")
			precious := []byte("not the carrier's to write\n")
			if err := os.WriteFile(outside, precious, 0o600); err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(de.Dirs["beta"], filepath.FromSlash(protocol.InboxDir("alpha")), "d")
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(outside, filepath.Join(dir, protocol.PartialName("d/f.txt", ents[0].Hash, de.c.Buffer().ID()))); err != nil {
				t.Fatal(err)
			}
			conformance.MustOK(t, de.Dropoff(de.c, "beta"))
			if got, err := os.ReadFile(outside); err != nil || !bytes.Equal(got, precious) {
				t.Fatalf("the file a partial's name linked to holds %.40q (%v), want it as it was", got, err)
			}
			conformance.SameTree(t, "inbox", de.Inbox("beta", "alpha"), files)
		})
	}
}

// TestPartialLinkedToConflictName: a big file's partial left by an earlier
// visit that is a hard link to the file delivered under a conflict name
// ("name (2)": its name was taken then, and is free now), or under a name
// its user gave it since, which that user may have changed, is never
// written through or cut: that file keeps what it holds, the carrier's copy
// arrives under the free name, and no partial is left. On a stock host and
// the agent.
func TestPartialLinkedToConflictName(t *testing.T) {
	const rel = "a b/f000.txt"
	content := bytes.Repeat([]byte("carried\n"), 1<<17)
	edited := []byte("the user's own words, written in place\n")
	for _, h := range sliceHosts {
		for _, tc := range []struct {
			name string
			link string // the name in "a b" linked to the partial
			held []byte // what it holds when the visit comes
		}{
			{"edited", protocol.ConflictName("f000.txt", 2), edited},
			{"unchanged", protocol.ConflictName("f000.txt", 2), content},
			{"renamed", "mine.txt", edited},
		} {
			t.Run(h.name+"/"+tc.name, func(t *testing.T) {
				e := conformance.NewEnv(t, h.start, "alpha", "beta")
				e.Outbox("alpha", "beta", map[string][]byte{rel: content})
				c := e.Carrier(1<<30, carrier.Options{})
				conformance.MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
				ents, err := c.Buffer().Entries()
				if err != nil || len(ents) != 1 {
					t.Fatalf("buffer: %v, %v", ents, err)
				}
				dir := filepath.Join(e.Dirs["beta"], filepath.FromSlash(protocol.InboxDir("alpha")), "a b")
				linked := filepath.Join(dir, tc.link)
				if err := os.MkdirAll(dir, 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(linked, tc.held, 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Link(linked, filepath.Join(dir, protocol.PartialName(rel, ents[0].Hash, c.Buffer().ID()))); err != nil {
					t.Fatal(err)
				}
				conformance.MustOK(t, e.Dropoff(c, "beta"))
				conformance.SameTree(t, "inbox", e.Inbox("beta", "alpha"), map[string][]byte{
					rel: content, "a b/" + tc.link: tc.held})
			})
		}
	}
}

// TestPartialLinkedOutsideInbox: a big file's partial left as a second name
// of its delivered file (a kill between link and remove, a host crash
// inside its rename), whose user then moved it out of the inbox and added
// to it, is not resumed: the listing of the inbox cannot see it, the
// partial's link count (asked on a host with exec) does. The moved file
// stays as its user left it, and the file is delivered afresh.
func TestPartialLinkedOutsideInbox(t *testing.T) {
	const rel = "a b/f000.txt"
	carried := bytes.Repeat([]byte("carried\n"), 1<<17)
	de := newDropEnv(t, "", map[string][]byte{rel: carried})
	ents, err := de.c.Buffer().Entries()
	if err != nil || len(ents) != 1 {
		t.Fatalf("buffer: %d entries, %v", len(ents), err)
	}
	inbox := filepath.Join(de.Dirs["beta"], filepath.FromSlash(protocol.InboxDir("alpha")))
	dir := filepath.Join(inbox, "a b")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	moved := filepath.Join(de.Dirs["beta"], "kept elsewhere.txt")
	edited := append(append([]byte{}, carried...), "and the user's own words after it\n"...)
	if err := os.WriteFile(moved, edited, 0o644); err != nil {
		t.Fatal(err)
	}
	partial := filepath.Join(dir, protocol.PartialName(rel, ents[0].Hash, de.c.Buffer().ID()))
	if err := os.Link(moved, partial); err != nil {
		t.Fatal(err)
	}
	conformance.MustOK(t, de.Dropoff(de.c, "beta"))
	if got, err := os.ReadFile(moved); err != nil || !bytes.Equal(got, edited) {
		t.Fatalf("the moved file holds %d bytes (%v), want the %d its user left: the partial was written through", len(got), err, len(edited))
	}
	conformance.SameTree(t, "inbox", de.Inbox("beta", "alpha"), map[string][]byte{rel: carried})
}

// relayedHost starts hosts as start does, behind a relay that shows every
// SFTP request of the carrier to the hook set last (none: passed on).
type relayedHost struct {
	mu   sync.Mutex
	hook sftptest.Hook
}

func (h *relayedHost) set(hook sftptest.Hook) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hook = hook
}

func (h *relayedHost) see(r sftptest.Request) bool {
	h.mu.Lock()
	hook := h.hook
	h.mu.Unlock()
	return hook != nil && hook(r)
}

// startGoSFTP is start for pkg/sftp's server (no exec; it offers
// hardlink@openssh.com, and is not OpenSSH's: the carrier links, then
// removes the partial).
func (h *relayedHost) startGoSFTP(t *testing.T, dir string, keys []ssh.PublicKey) conformance.Host {
	signer, _ := sshdtest.NewKey(t)
	s := sftptest.Start(t, append(keys, signer.PublicKey()), "", func(ch ssh.Channel) {
		if srv, err := sftp.NewServer(ch, sftp.WithServerWorkingDirectory(dir)); err == nil {
			srv.Serve()
		}
	})
	host, port := s.Addr()
	return sftptest.StartRelay(t, keys, net.JoinHostPort(host, strconv.Itoa(port)), "root", signer, h.see)
}

func (h *relayedHost) start(noExec bool) conformance.StartFunc {
	return func(t *testing.T, dir string, keys []ssh.PublicKey) conformance.Host {
		signer, _ := sshdtest.NewKey(t)
		s := sshdtest.Start(t, sshdtest.Options{LoginDir: dir, AuthorizedKeys: append(keys, signer.PublicKey()), NoExec: noExec})
		return sftptest.StartRelay(t, keys, net.JoinHostPort(s.Host, strconv.Itoa(s.Port)), "root", signer, h.see)
	}
}

// isPlacing reports whether r puts a delivered file's partial in place
// (a rename of a partial in an inbox; receipts aside).
func isPlacing(r sftptest.Request) bool {
	return r.Type == sftptest.FxpRename && strings.HasPrefix(r.Path, protocol.Inbox+"/") &&
		!strings.Contains(r.Path, protocol.ReceiptsDirName) && strings.HasPrefix(path.Base(r.Path), protocol.PartialPrefix)
}

// placingNotes lists the notes of partials being placed that the buffer in
// dir holds (what each says).
func placingNotes(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(filepath.Join(dir, "placing"), func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // none yet, or removed while listed
		}
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		out = append(out, string(b))
		return err
	})
	if err != nil {
		t.Error(err)
	}
	return out
}

// notedFor reports whether one of notes names the partial p.
func notedFor(notes []string, p string) bool {
	for _, n := range notes {
		if strings.Contains(n, "\npartial "+p+"\n") {
			return true
		}
	}
	return false
}

// TestPlacingCutNoExec: a big file's partial that a visit was putting in
// place on a host without exec when it was cut off, after the host linked
// the final name and before the partial was unlinked, is a second name of
// the file delivered: a stock sshd with internal-sftp only that crashed
// inside OpenSSH's rename (link, then unlink), and a server offering
// hardlink@openssh.com (pkg/sftp's; no exec) that the carrier left
// between its link and its removal of the partial. Its user moves that file
// to another directory of the same filesystem and adds to it: no listing of
// the inbox shows it, and SFTP shows no link counts. The next visit finds
// the carrier's note that it was placing that partial, and does not resume
// it: the moved file keeps every byte its user wrote, and the file is
// delivered afresh into the inbox (a second copy of the carried content
// beside the user's: expected, the carrier cannot tell the user's file came
// from it). No note is left.
func TestPlacingCutNoExec(t *testing.T) {
	for _, k := range []struct {
		name  string
		start func(*relayedHost) conformance.StartFunc
		at    func(beta string, r sftptest.Request) bool
	}{
		{"sshd-internal-sftp", func(rh *relayedHost) conformance.StartFunc { return rh.start(true) }, crashInRename},
		{"hardlink", func(rh *relayedHost) conformance.StartFunc { return rh.startGoSFTP }, cutBeforeRemove},
	} {
		t.Run(k.name, func(t *testing.T) { testPlacingCut(t, k.start, k.at) })
	}
}

func testPlacingCut(t *testing.T, start func(*relayedHost) conformance.StartFunc, at func(string, sftptest.Request) bool) {
	const rel = "a b/f000.txt"
	carried := bytes.Repeat([]byte("carried\n"), 1<<17)
	rh := &relayedHost{}
	e := conformance.NewEnv(t, rh.start(true), "alpha")
	e.Start = start(rh)
	e.AddHost("beta", true)
	e.Outbox("alpha", "beta", map[string][]byte{rel: carried})
	c := e.Carrier(1<<30, carrier.Options{})
	conformance.MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
	cutPlacing(t, rh, e, c, at)
	beta := e.Dirs["beta"]
	final := filepath.Join(beta, filepath.FromSlash(protocol.InboxDir("alpha")), filepath.FromSlash(rel))
	// Its user moves the file out of the inbox, and adds to it.
	moved := filepath.Join(beta, "kept elsewhere.txt")
	if err := os.Rename(final, moved); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(moved, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	own := []byte("and the user's own words after it\n")
	if _, err := f.Write(own); err != nil {
		t.Fatal(err)
	}
	f.Close()
	edited := append(append([]byte{}, carried...), own...)

	conformance.MustOK(t, e.Dropoff(c, "beta"))
	if got, err := os.ReadFile(moved); err != nil || !bytes.Equal(got, edited) {
		t.Fatalf("the moved file holds %d bytes (%v), want the %d its user left: the partial was written through", len(got), err, len(edited))
	}
	conformance.SameTree(t, "inbox", e.Inbox("beta", "alpha"), map[string][]byte{rel: carried})
	if n := placingNotes(t, e.Buf); len(n) > 0 {
		t.Errorf("notes left after the visit: %q", n)
	}
}

// crashInRename acts as a host that crashes inside OpenSSH's rename of a
// partial into place, after its link: it links the final name, and cuts.
func crashInRename(beta string, r sftptest.Request) bool {
	if !isPlacing(r) {
		return false
	}
	if err := os.Link(filepath.Join(beta, filepath.FromSlash(r.Path)), filepath.Join(beta, filepath.FromSlash(r.Target))); err != nil {
		panic(err)
	}
	return true
}

// cutBeforeRemove cuts before the removal of a partial in an inbox: where
// the server offers hardlink@openssh.com (and is not OpenSSH's), the
// partial was linked to its final name just before.
func cutBeforeRemove(beta string, r sftptest.Request) bool {
	return r.Type == sftptest.FxpRemove && strings.HasPrefix(r.Path, protocol.Inbox+"/") &&
		!strings.Contains(r.Path, protocol.ReceiptsDirName) && strings.HasPrefix(path.Base(r.Path), protocol.PartialPrefix)
}

// cutPlacing runs a dropoff to beta that is cut at the first request at
// says to cut at (after it acted on beta's files).
func cutPlacing(t *testing.T, rh *relayedHost, e *conformance.Env, c *carrier.Carrier, at func(beta string, r sftptest.Request) bool) {
	t.Helper()
	beta := e.Dirs["beta"]
	var mu sync.Mutex
	var cutAt string
	rh.set(func(r sftptest.Request) bool {
		mu.Lock()
		defer mu.Unlock()
		if cutAt != "" || !at(beta, r) {
			return false
		}
		cutAt = r.Path
		return true
	})
	rs := e.Dropoff(c, "beta")
	rh.set(nil)
	mu.Lock()
	defer mu.Unlock()
	if cutAt == "" {
		t.Fatalf("the visit was not cut: %s", rs[0].Summary())
	}
	t.Logf("cut at %s: %s", cutAt, rs[0].Summary())
}

// TestPlacingNoteOfDropped: the note of a partial being placed when the
// visit was cut, whose entry is then dropped from the buffer, is settled by
// the next dropoff visit to that host: the partial, a second name of the
// file delivered, is removed (the file stays), and so is the note.
func TestPlacingNoteOfDropped(t *testing.T) {
	const rel = "a b/f000.txt"
	carried := bytes.Repeat([]byte("carried\n"), 1<<17)
	rh := &relayedHost{}
	e := conformance.NewEnv(t, rh.start(true), "alpha", "beta")
	e.Outbox("alpha", "beta", map[string][]byte{rel: carried})
	c := e.Carrier(1<<30, carrier.Options{})
	conformance.MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
	cutPlacing(t, rh, e, c, crashInRename)
	if n := placingNotes(t, e.Buf); len(n) != 1 {
		t.Errorf("after the cut, notes %q, want one", n)
	}
	ents, err := c.Buffer().Entries()
	if err != nil || len(ents) != 1 {
		t.Fatalf("buffer: %v, %v", ents, err)
	}
	if err := c.Buffer().Drop(ents); err != nil {
		t.Fatal(err)
	}
	e.Outbox("alpha", "beta", map[string][]byte{"later.txt": []byte("later\n")})
	conformance.MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
	conformance.MustOK(t, e.Dropoff(c, "beta"))
	conformance.SameTree(t, "inbox", e.Inbox("beta", "alpha"), map[string][]byte{rel: carried, "later.txt": []byte("later\n")})
	if n := placingNotes(t, e.Buf); len(n) > 0 {
		t.Errorf("notes left after the next visit: %q", n)
	}
}

// TestPlacingNotedAndCleared: every big file's partial is noted in the
// buffer before the request that puts it in place goes to the host (a
// small file's is not: it is never resumed), and a visit that delivers
// everything leaves no note. On a stock host and one without exec.
func TestPlacingNotedAndCleared(t *testing.T) {
	files := map[string][]byte{}
	for i := range 3 {
		files[fmt.Sprintf("big/f%d.bin", i)] = bytes.Repeat([]byte{byte('a' + i)}, 300<<10+i)
	}
	for i := range 3 {
		files[fmt.Sprintf("small/f%d.txt", i)] = []byte(fmt.Sprintf("small %d\n", i))
	}
	for _, noExec := range []bool{false, true} {
		t.Run(fmt.Sprintf("noexec=%v", noExec), func(t *testing.T) {
			rh := &relayedHost{}
			e := conformance.NewEnv(t, rh.start(noExec), "alpha", "beta")
			e.Outbox("alpha", "beta", files)
			c := e.Carrier(1<<30, carrier.Options{})
			conformance.MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
			var mu sync.Mutex
			seen := map[string]bool{} // final name -> noted when its partial was placed
			rh.set(func(r sftptest.Request) bool {
				if isPlacing(r) {
					noted := notedFor(placingNotes(t, e.Buf), r.Path)
					mu.Lock()
					seen[strings.TrimPrefix(r.Target, protocol.InboxDir("alpha")+"/")] = noted
					mu.Unlock()
				}
				return false
			})
			conformance.MustOK(t, e.Dropoff(c, "beta"))
			rh.set(nil)
			conformance.SameTree(t, "inbox", e.Inbox("beta", "alpha"), files)
			mu.Lock()
			defer mu.Unlock()
			for p, b := range files {
				if noted, ok := seen[p]; !ok {
					t.Errorf("%s: no rename of its partial seen", p)
				} else if want := len(b) > 256<<10; noted != want {
					t.Errorf("%s (%d bytes): noted when placed %v, want %v", p, len(b), noted, want)
				}
			}
			if n := placingNotes(t, e.Buf); len(n) > 0 {
				t.Errorf("notes left after delivering everything: %q", n)
			}
		})
	}
}
