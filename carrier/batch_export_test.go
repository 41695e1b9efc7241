package carrier

// SetBatchMin sets the fewest small files read in batches, for a test.
func SetBatchMin(n int) (restore func()) {
	old := batchMin
	batchMin = n
	return func() { batchMin = old }
}
