package carrier

import (
	"strings"
	"testing"

	"github.com/messor-sync/messor/protocol"
)

// TestTakesName: a name's conflict names are known for its own, however
// the name is made (an extension, none, a dot file, a stem cut to fit), and
// other files' names are not.
func TestTakesName(t *testing.T) {
	long := strings.Repeat("é", protocol.MaxNameLen/2) + ".jpg"
	for _, name := range []string{"photo.jpg", "photo (2).jpg", "notes", ".bashrc", "a (b).tar.gz", long} {
		for _, n := range []int{2, 3, 17, maxConflicts} {
			if c := protocol.ConflictName(name, n); !takesName(name, c) {
				t.Errorf("%q: conflict name %q not known", name, c)
			}
		}
		if !takesName(name, name) {
			t.Errorf("%q: not its own name", name)
		}
	}
	for _, tc := range [][2]string{
		{"photo.jpg", "photo (1).jpg"}, {"photo.jpg", "photo (+2).jpg"}, {"photo.jpg", "photo (2).png"},
		{"photo.jpg", "other (2).jpg"}, {"photo.jpg", "photo (2)"}, {"photo.jpg", "photo (1001).jpg"},
		{"notes", "notes (2).txt"}, {"photo (2).jpg", "photo.jpg"},
	} {
		if takesName(tc[0], tc[1]) {
			t.Errorf("%q taken for one of %q's names", tc[1], tc[0])
		}
	}
}
