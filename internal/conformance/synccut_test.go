package conformance

import (
	"context"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/internal/sftptest"
	"github.com/messor-sync/messor/protocol"
)

// TestSyncCut: the link dies at a directory sync, after files were put in
// place: no entry whose directory was not synced is released, and the next
// visit finds the files there, syncs, and releases them without a second
// copy. Against sshd with and without exec, and the agent.
func TestSyncCut(t *testing.T) {
	t.Parallel()
	for _, k := range hostKinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel() // each with its own hosts
			e, h, c := relayedBeta(t, k.start, durableFiles, nil)
			var cuts atomic.Int32
			var cutDir atomic.Value
			// inPlace counts the files in place in or below dir ("" for
			// the whole inbox).
			inPlace := func(dir string) (n int) {
				for name := range durableFiles {
					in := path.Dir(path.Join(protocol.InboxDir("alpha"), name))
					if dir != "" && in != dir && !strings.HasPrefix(in, dir+"/") {
						continue
					}
					if _, err := os.Stat(filepath.Join(h.local(protocol.InboxDir("alpha")), filepath.FromSlash(name))); err == nil {
						n++
					}
				}
				return n
			}
			h.set(func(r sftptest.Request) bool {
				// The only opens of a directory are its syncs. The
				// first ones may be of directories the carrier made,
				// before any file below them is in place (a batch runs
				// every 100 ms, which a loaded machine's dropoff
				// outlasts): the cut is at the first sync of a
				// directory with a file in place in or below it, or
				// the check of what was kept below would hold nothing.
				dir := strings.TrimPrefix(r.Path, "/")
				isDir := r.Type == sftptest.FxpOpen && strings.HasPrefix(r.Path, protocol.Inbox) &&
					!strings.HasPrefix(path.Base(r.Path), protocol.ReservedPrefix) && path.Ext(r.Path) != ".txt"
				if isDir && inPlace(dir) > 0 && cuts.Add(1) == 1 {
					cutDir.Store(dir)
					return true
				}
				return false
			})
			rs := e.Dropoff(c, "beta")
			if cuts.Load() == 0 {
				t.Fatal("no directory sync was seen")
			}
			ents, _ := c.Buffer().Entries()
			t.Logf("cut visit: %s; %d entries kept", rs[0].Summary(), len(ents))
			if inPlace("") == 0 {
				t.Fatal("no file was in place when the link died")
			}
			// Every file in or below the directory whose sync was cut
			// is still held.
			kept := map[string]bool{}
			for _, en := range ents {
				kept[en.Path] = true
			}
			dir := cutDir.Load().(string)
			for name := range durableFiles {
				in := path.Dir(path.Join(protocol.InboxDir("alpha"), name))
				if (in == dir || strings.HasPrefix(in, dir+"/")) && !kept[name] {
					t.Errorf("%s released though the sync of %s was cut", name, dir)
				}
			}
			h.set(nil)
			rs = e.Dropoff(c, "beta")
			MustOK(t, rs)
			SameTree(t, "inbox", e.Inbox("beta", "alpha"), durableFiles)
			if ents, _ := c.Buffer().Entries(); len(ents) != 0 {
				t.Errorf("after the second visit the buffer holds %d entries", len(ents))
			}
		})
	}
}

// relayedBeta starts alpha, and beta behind a relay whose hook the test
// sets, both with start; carries files from alpha's outbox for beta into
// a new carrier's buffer, calling prepare (if not nil) before the pickup.
func relayedBeta(t *testing.T, start StartFunc, files map[string][]byte, prepare func(e *Env)) (*Env, *relayHost, *carrier.Carrier) {
	h := &relayHost{}
	e := NewEnv(t, start, "alpha")
	e.Start = relayed(start, h)
	e.AddHost("beta", true)
	e.Outbox("alpha", "beta", files)
	if prepare != nil {
		prepare(e)
	}
	c := e.Carrier(1<<30, carrier.Options{})
	MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
	return e, h, c
}
