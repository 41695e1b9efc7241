package carrier

import "time"

// SetBatchMin sets the fewest small files read in batches, for a test.
func SetBatchMin(n int) (restore func()) {
	old := batchMin
	batchMin = n
	return func() { batchMin = old }
}

// SetBatchIdle sets how long an archive may send nothing, for a test.
func SetBatchIdle(d time.Duration) (restore func()) {
	old := batchIdle
	batchIdle = d
	return func() { batchIdle = old }
}
