package carrier

import "github.com/messor-sync/messor/carrier/buffer"

// Buffer is the carrier's buffer (package buffer) with what the carrier
// keeps beside it in the same directory: receipts, and notes of the leases
// it wrote.
type Buffer struct{ *buffer.Buffer }

// Entry is one carried file (buffer.Entry).
type Entry = buffer.Entry

// RecoverReport says what RecoverBuffer did (buffer.RecoverReport).
type RecoverReport = buffer.RecoverReport

// LegacyBufferError is buffer.LegacyError.
type LegacyBufferError = buffer.LegacyError

var (
	// ErrBufferBusy is returned by OpenBuffer when another run holds the
	// buffer (buffer.ErrBusy).
	ErrBufferBusy = buffer.ErrBusy
	// ErrIndexCorrupt is returned by OpenBuffer when the index cannot be
	// read (buffer.ErrIndexCorrupt).
	ErrIndexCorrupt = buffer.ErrIndexCorrupt
	// ErrLegacyRecord is buffer.ErrLegacyRecord.
	ErrLegacyRecord = buffer.ErrLegacyRecord
)

// OpenBuffer opens the buffer in dir with the given limit in bytes: see
// buffer.Open.
func OpenBuffer(dir string, limit int64) (*Buffer, error) {
	b, err := buffer.Open(dir, limit)
	if err != nil {
		return nil, err
	}
	return &Buffer{b}, nil
}

// OpenBufferReadOnly opens the buffer for inspection (status): see
// buffer.OpenReadOnly.
func OpenBufferReadOnly(dir string) (*Buffer, error) {
	b, err := buffer.OpenReadOnly(dir)
	if err != nil {
		return nil, err
	}
	return &Buffer{b}, nil
}

// RecoverBuffer rebuilds the buffer index in dir: see buffer.Recover.
func RecoverBuffer(dir string) (*RecoverReport, error) { return buffer.Recover(dir) }

// DefaultBufferDir is where a carrier keeps its buffer unless told
// otherwise: see buffer.DefaultDir.
func DefaultBufferDir(home, xdgDataHome string) string {
	return buffer.DefaultDir(home, xdgDataHome)
}

// LegacyBufferDir is where messor kept its buffer by default before: see
// buffer.LegacyDir.
func LegacyBufferDir(home string) string { return buffer.LegacyDir(home) }

// MoveLegacyBuffer finds the buffer to use by default: see
// buffer.MoveLegacy.
func MoveLegacyBuffer(old, dir string) (string, error) { return buffer.MoveLegacy(old, dir) }
