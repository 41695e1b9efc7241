package carrier

import "time"

// SetSliceWritten sets a hook called once a slice of an upload verified
// slice by slice is written, before the host hashes it.
func SetSliceWritten(c *Carrier, f func(partial string, start, end int64)) { c.sliceWritten = f }

// SetProbeGate sets a hook that each of c's sessions calls before probing
// the host's capabilities (a slow login shell, held as long as it runs).
func SetProbeGate(c *Carrier, f func()) { c.probeGate = f }

// SetSliceRequest makes c's sessions ask for slice hashes with the global
// request name (one the agent does not know plays an older agent).
func SetSliceRequest(c *Carrier, name string) { c.sliceRequest = name }

// SmallBuffersPeak returns the most small files' buffers held at once
// since the last call, and starts counting again.
func SmallBuffersPeak() int64 { return smallHeld.peak.Swap(smallHeld.n.Load()) }

// SetBatchRequest makes c's sessions ask for batched hashes with the global
// request name (an agent that does not know it plays an older agent).
func SetBatchRequest(c *Carrier, name string) { c.batchRequest = name }

// setHashSlack sets what a host hashing for us may take besides its bytes'
// time (hashTime), until restore.
func setHashSlack(d time.Duration) (restore func()) {
	old := hashSlack
	hashSlack = d
	return func() { hashSlack = old }
}
