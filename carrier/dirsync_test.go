package carrier

import (
	"errors"
	"sync"
	"testing"
)

// TestDirSyncRecovers: a directory whose sync failed in one batch (a lane's
// channel died) and synced in a later one holds back only the files of the
// failed batch: those of the later batch, in it or below it, are released.
func TestDirSyncRecovers(t *testing.T) {
	lost := errors.New("connection lost")
	var mu sync.Mutex
	failing := true
	d := newDirSyncer()
	d.sync = func(_ *Session, dir string) error {
		mu.Lock()
		defer mu.Unlock()
		if failing && dir == "messor/inbox" {
			return lost
		}
		return nil
	}
	defer d.close()
	wait := func(dir string) error {
		got := make(chan error, 1)
		d.after(nil, dir, func(err error) { got <- err })
		d.kick <- struct{}{}
		return <-got
	}
	if err := wait("messor/inbox/alpha/a"); !errors.Is(err, lost) {
		t.Fatalf("first batch: %v, want the failed sync of messor/inbox", err)
	}
	mu.Lock()
	failing = false
	mu.Unlock()
	for _, dir := range []string{"messor/inbox/alpha/a", "messor/inbox/alpha"} {
		if err := wait(dir); err != nil {
			t.Errorf("a later batch, %s: %v, want nil (every directory on the way synced)", dir, err)
		}
	}
}
