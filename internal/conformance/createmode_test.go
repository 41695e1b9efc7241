package conformance

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/messor-sync/messor/internal/sftptest"
	"github.com/messor-sync/messor/protocol"
)

// TestPartialCreatedPrivate: in an inbox directory open to the host's other
// users (0755, as older versions made them), a partial is created private
// (0600, asked for in the open) rather than 0666 less the umask and set
// private only by the next request: another user opening it in between
// would keep reading what is written. Every request is watched, so the
// moment between the open and the chmod is seen. Against sshd with and
// without exec, and the agent.
func TestPartialCreatedPrivate(t *testing.T) {
	t.Parallel()
	for _, k := range hostKinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel() // each with its own hosts
			files := map[string][]byte{"one.txt": []byte("private\n"), "two.txt": []byte("private too\n")}
			inbox := ""
			e, h, c := relayedBeta(t, k.start, files, func(e *Env) {
				for name := range files {
					if err := os.Chmod(filepath.Join(e.Dirs["alpha"], filepath.FromSlash(protocol.OutboxDir("beta")), name), 0o600); err != nil {
						t.Fatal(err)
					}
				}
				inbox = filepath.Join(e.Dirs["beta"], filepath.FromSlash(protocol.InboxDir("alpha")))
				if err := os.MkdirAll(inbox, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(inbox, 0o755); err != nil {
					t.Fatal(err)
				}
			})
			var mu sync.Mutex
			seen := map[os.FileMode]int{}
			h.set(func(sftptest.Request) bool {
				parts, _ := filepath.Glob(filepath.Join(inbox, protocol.ReservedPrefix+"*"))
				for _, p := range parts {
					if fi, err := os.Stat(p); err == nil {
						mu.Lock()
						seen[fi.Mode().Perm()]++
						mu.Unlock()
					}
				}
				return false
			})
			MustOK(t, e.Dropoff(c, "beta"))
			SameTree(t, "inbox", e.Inbox("beta", "alpha"), files)
			if len(seen) == 0 {
				t.Fatal("no partial was seen")
			}
			for m, n := range seen {
				if m&0o077 != 0 {
					t.Errorf("a partial of a 0600 file was %v, seen %d times while delivered (all seen: %v)", m, n, seen)
				}
			}
		})
	}
}
