package carrier_test

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"testing"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/internal/conformance"
)

// hashBatchEnv puts n small files in alpha's outbox (alpha an agent that
// logs its requests into the returned buffer) and returns a carrier.
func hashBatchEnv(t *testing.T, n int) (*conformance.Env, *carrier.Carrier, *syncBuffer, map[string][]byte) {
	agentLog := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(agentLog, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e := conformance.NewEnv(t, conformance.AgentLogging(log), "alpha")
	files := map[string][]byte{}
	for i := range n {
		files[fmt.Sprintf("d%d/f%03d", i%7, i)] = fmt.Appendf(nil, "small file %d\n", i)
	}
	e.Outbox("alpha", "beta", files)
	return e, e.Carrier(1<<30, carrier.Options{}), agentLog, files
}

var (
	batchLine = regexp.MustCompile(`msg="hash-batch answered".* items=(\d+)`)
	rangeLine = regexp.MustCompile(`msg="hash-range answered"`)
)

// A pickup from an agent verifies every small file at the source
// (VerifySource) in batched hash requests, not one global request (one
// round trip, answered one at a time) a file: every file is hashed by the
// agent, in fewer requests than files.
func TestAgentHashBatch(t *testing.T) {
	t.Parallel()
	const n = 300
	e, c, agentLog, files := hashBatchEnv(t, n)
	conformance.MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
	log := agentLog.String()
	batches, items := 0, 0
	for _, m := range batchLine.FindAllStringSubmatch(log, -1) {
		k, _ := strconv.Atoi(m[1])
		batches++
		items += k
	}
	if singles := len(rangeLine.FindAllString(log, -1)); singles != 0 || items != n || batches == 0 || batches >= n {
		t.Fatalf("%d files verified at the source by %d hash-range requests and %d hash-batch requests of %d items; want all %d in fewer batches than files",
			len(files), singles, batches, items, n)
	}
}

// An agent that does not know hash-batch (older than it): each file is
// verified with its own hash-range request, and all are carried.
func TestAgentHashBatchRefused(t *testing.T) {
	t.Parallel()
	const n = 100
	e, c, agentLog, _ := hashBatchEnv(t, n)
	carrier.SetBatchRequest(c, "hash-batch-unknown@messor")
	rs := c.Pickup(context.Background(), e.Resolve("alpha"))
	conformance.MustOK(t, rs)
	if rs[0].Files != n {
		t.Fatalf("carried %d files, want %d", rs[0].Files, n)
	}
	if singles := len(rangeLine.FindAllString(agentLog.String(), -1)); singles != n {
		t.Fatalf("%d hash-range requests, want one for each of the %d files", singles, n)
	}
}
