package carrier_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/internal/conformance"
)

// TestSmallBuffersBounded: a dropoff of many small files holds at most 64
// of them in memory at once (16 MiB), written or read back, even where
// the batched dropoff's 1,024 workers all deliver file by file (a stock
// host without an exec helper).
func TestSmallBuffersBounded(t *testing.T) {
	t.Cleanup(carrier.SetBatchMin(batchMin))
	e := conformance.NewEnv(t, conformance.SSHD(true), "alpha", "beta")
	files := map[string][]byte{}
	for i := range 400 {
		files[fmt.Sprintf("d%d/f%03d", i%7, i)] = bytes.Repeat([]byte{byte(i)}, 64<<10+i)
	}
	e.Outbox("alpha", "beta", files)
	c := e.Carrier(1<<30, carrier.Options{})
	conformance.MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
	carrier.SmallBuffersPeak()
	conformance.MustOK(t, e.Dropoff(c, "beta"))
	if n := carrier.SmallBuffersPeak(); n > 64 {
		t.Errorf("%d small files' buffers held at once, want at most 64", n)
	}
	conformance.SameTree(t, "inbox", e.Inbox("beta", "alpha"), files)
}
