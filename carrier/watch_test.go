package carrier_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/discovery"
)

// emptyFinder finds nothing and counts the rounds that asked it.
type emptyFinder struct{ rounds *atomic.Int32 }

func (emptyFinder) Configured() []discovery.Host                                 { return nil }
func (emptyFinder) Agents() ([]discovery.Host, []discovery.Refusal)              { return nil, nil }
func (emptyFinder) Dests(context.Context, []string, func(discovery.Host, error)) {}
func (emptyFinder) Close()                                                       {}

// TestWatchWakeBounded: a LAN that re-announces a pinned agent's name
// (advert, goodbye, advert ...) wakes watch at most once per interval; it
// cannot make watch run round after round.
func TestWatchWakeBounded(t *testing.T) {
	b, err := carrier.OpenBuffer(t.TempDir(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	c := carrier.New(b, carrier.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var rounds atomic.Int32
	wake := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- c.Watch(ctx, carrier.WatchConfig{
			Interval: time.Hour,
			Wake:     wake,
			Find: func(context.Context) (carrier.Finder, error) {
				rounds.Add(1)
				return emptyFinder{&rounds}, nil
			},
		})
	}()
	const wakes = 50
	for range wakes {
		select {
		case wake <- struct{}{}:
		case <-ctx.Done():
			t.Fatalf("watch stopped taking wakes: %v", ctx.Err())
		}
	}
	cancel()
	<-done
	if n := rounds.Load(); n > 2 {
		t.Errorf("%d wakes within one interval ran %d rounds, want at most 2 (the first round and one woken)", wakes, n)
	}
}
