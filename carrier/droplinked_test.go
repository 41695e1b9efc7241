package carrier_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/internal/conformance"
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
