package carrier

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// IndexHealthy reports whether the buffer at dir has an index that opens
// and verifies, and how many carried files it lists: `messor recover` has
// nothing to do then. A busy buffer is an error (ErrBufferBusy); a damaged
// or missing index with records to rebuild it from is not healthy.
func IndexHealthy(dir string) (healthy bool, files int, err error) {
	if _, err := os.Stat(filepath.Join(dir, "index.db")); errors.Is(err, fs.ErrNotExist) {
		return false, 0, nil
	}
	b, err := OpenBufferReadOnly(dir)
	switch {
	case errors.Is(err, ErrBufferBusy):
		return false, 0, err
	case err != nil:
		return false, 0, nil
	}
	defer b.Close()
	ents, err := b.Entries()
	if err != nil {
		return false, 0, nil
	}
	return true, len(ents), nil
}
