package carrier

import "time"

// SetBatchMin sets the fewest small files read in batches, for a test.
func SetBatchMin(n int) (restore func()) {
	old := batchMin
	batchMin = n
	return func() { batchMin = old }
}

// SetBatchCapsWait sets how long a run waits for the exec helper before
// reading small files one by one: the batch tests wait longer, so that a
// login shell slow under a loaded test machine does not make them read
// file by file.
func SetBatchCapsWait(d time.Duration) (restore func()) {
	old := batchCapsWait
	batchCapsWait = d
	return func() { batchCapsWait = old }
}

// SetBatchIdle sets how long an archive may send nothing, for a test.
func SetBatchIdle(d time.Duration) (restore func()) {
	old := batchIdle
	batchIdle = d
	return func() { batchIdle = old }
}
