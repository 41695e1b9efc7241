package agent

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pkg/sftp"

	"github.com/messor-sync/messor/protocol"
)

// carrierPrefixes start the only reserved names a carrier may touch:
// delivery partials, outbox claims, leases, keep markers and receipts.
var carrierPrefixes = []string{protocol.PartialPrefix, protocol.ClaimPrefix,
	protocol.LeasePrefix, protocol.KeepMarker, protocol.ReceiptsDirName}

// Modes of what clients create when they ask for none (pkg/sftp's client
// never does): private to the agent's user. A carrier sets each delivered
// file's mode to its source's; the agent makes its own layout the same way.
const (
	fileMode = 0o600
	dirMode  = 0o700
)

// areas are the directories under Root the agent serves; nothing else there
// (a carrier's buffer, say) is reachable.
var areas = []string{"inbox", "outbox", "sent"}

// appendArea is the area whose files are opened for appending when an open
// asks for it (SSH_FXF_APPEND): the ledgers, to which two carriers may
// append at once. Elsewhere writes land at their offsets.
const appendArea = "sent"

// tree is what the agent serves: each area of the layout is an os.Root of
// its own, so that no path, not even a symbolic link that stays under Root,
// reaches from one area into anything else.
type tree struct {
	top   *os.Root            // Root itself: only for its attributes
	areas map[string]*os.Root // by name
}

// openTree opens the areas under dir. An area may be a symbolic link the
// host's user made (an inbox on another disk): it is followed here, once,
// and confines what is served through it from then on.
func openTree(dir string) (*tree, error) {
	top, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	t := &tree{top: top, areas: make(map[string]*os.Root, len(areas))}
	for _, a := range areas {
		r, err := os.OpenRoot(filepath.Join(dir, a))
		if err != nil {
			t.Close()
			return nil, err
		}
		t.areas[a] = r
	}
	return t, nil
}

// Close closes every root of t.
func (t *tree) Close() error {
	for _, r := range t.areas {
		r.Close()
	}
	return t.top.Close()
}

// place says where an SFTP path lands.
type place int

const (
	outside     place = iota // not in the layout: nothing there
	virtualRoot              // "/": the login directory, holding only "messor"
	messorDir                // "/messor": holding only the areas
	inArea                   // "/messor/<area>" or below
)

// loc is where an SFTP path lands: for inArea, rel is relative to the
// area's root ("." for the area itself).
type loc struct {
	place place
	area  string
	root  *os.Root
	rel   string
}

// cleanSFTPPath makes p absolute ("/"-rooted, relative paths are relative to
// the login directory) and clean, as the request server does.
func cleanSFTPPath(p string) string {
	return path.Clean("/" + p)
}

// resolve maps an SFTP path into the tree. The path is cleaned first, so
// ".." can never climb above "/"; what lies outside the areas does not
// exist. A component beginning with ".messor" that is neither a delivery
// partial nor an outbox claim is refused with EACCES.
func (t *tree) resolve(op, p string) (loc, error) {
	clean := cleanSFTPPath(p)
	if strings.ContainsRune(clean, 0) {
		return loc{}, &os.PathError{Op: op, Path: p, Err: syscall.EINVAL}
	}
	switch {
	case clean == "/":
		return loc{place: virtualRoot}, nil
	case clean == "/"+protocol.Root:
		return loc{place: messorDir}, nil
	case !strings.HasPrefix(clean, "/"+protocol.Root+"/"):
		return loc{}, &os.PathError{Op: op, Path: clean, Err: syscall.ENOENT}
	}
	rel := clean[len("/"+protocol.Root+"/"):]
	for c := range strings.SplitSeq(rel, "/") {
		if reservedName(c) {
			return loc{}, &os.PathError{Op: op, Path: clean, Err: syscall.EACCES}
		}
	}
	area, below, _ := strings.Cut(rel, "/")
	r := t.areas[area]
	if r == nil {
		return loc{}, &os.PathError{Op: op, Path: clean, Err: syscall.ENOENT}
	}
	if below == "" {
		below = "."
	}
	return loc{place: inArea, area: area, root: r, rel: below}, nil
}

// reservedName reports whether the name component c is one of messor's own
// (".messor*", neither a delivery partial nor a claim). It compares as a case-insensitive
// filesystem would (macOS, Windows: ".MESSOR-x" is ".messor-x" there), and
// takes "\" for a separator too (Windows).
func reservedName(c string) bool {
	for part := range strings.SplitSeq(c, `\`) {
		if hasPrefixFold(part, protocol.ReservedPrefix) &&
			!slices.ContainsFunc(carrierPrefixes, func(p string) bool { return hasPrefixFold(part, p) }) {
			return true
		}
	}
	return false
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// resolveInArea is resolve for operations that need a path in an area:
// "/" and "/messor" are refused (EACCES), paths outside the areas do not
// exist (ENOENT).
func (t *tree) resolveInArea(op, p string) (loc, error) {
	l, err := t.resolve(op, p)
	if err != nil {
		return loc{}, err
	}
	if l.place != inArea {
		return loc{}, &os.PathError{Op: op, Path: cleanSFTPPath(p), Err: syscall.EACCES}
	}
	return l, nil
}

// resolveBelowArea is resolveInArea for operations that would create,
// remove, rename or chmod the entry itself: the areas are refused too.
func (t *tree) resolveBelowArea(op, p string) (loc, error) {
	l, err := t.resolveInArea(op, p)
	if err == nil && l.rel == "." {
		return loc{}, &os.PathError{Op: op, Path: cleanSFTPPath(p), Err: syscall.EACCES}
	}
	return l, err
}

// sftpError rewrites err for an SFTP client: an *os.PathError naming the
// SFTP path p (never the host's path) whose Err is a syscall.Errno wherever
// one can be found, so that pkg/sftp maps it to the right status code.
func sftpError(op, p string, err error) error {
	if err == nil {
		return nil
	}
	var errno syscall.Errno
	switch {
	case errors.As(err, &errno):
	case errors.Is(err, fs.ErrNotExist):
		errno = syscall.ENOENT
	case errors.Is(err, fs.ErrPermission):
		errno = syscall.EACCES
	case errors.Is(err, fs.ErrExist):
		errno = syscall.EEXIST
	case errors.Is(err, io.EOF):
		return io.EOF
	default:
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err // drop the host's name for the file
		}
		return &os.PathError{Op: op, Path: cleanSFTPPath(p), Err: err}
	}
	return &os.PathError{Op: op, Path: cleanSFTPPath(p), Err: errno}
}

// confinedFS implements the pkg/sftp request-server handlers on a tree.
// One is made per SFTP session; the tree is shared and safe for concurrent
// use.
type confinedFS struct {
	t   *tree
	log *slog.Logger

	mu    sync.Mutex
	open  map[string]map[*openFile]struct{} // by cleaned SFTP path, for fsync
	nopen int                               // files open in this session
	// asked holds, by cleaned SFTP path, the permissions of the opens
	// and mkdirs the relay has passed on, in order (-1: none asked);
	// nasked counts them.
	asked  map[string][]int
	nasked int
	// all counts the files open in every session of the agent (nil: no
	// agent-wide count, for a one-off use).
	all *atomic.Int64
}

// A carrier keeps a few hundred files open at most (files in flight over
// its SFTP channels); a client holding more is using up the agent's file
// descriptors, which every other session and the listener need too.
// (Variables so that tests can lower them.)
var (
	maxAsked          = 4096 // modes asked for and not yet taken, per session
	maxOpenPerSession = 1024
	maxOpenAgent      = int64(4096)
)

var (
	_ sftp.FileReader           = (*confinedFS)(nil)
	_ sftp.OpenFileWriter       = (*confinedFS)(nil)
	_ sftp.PosixRenameFileCmder = (*confinedFS)(nil)
	_ sftp.StatVFSFileCmder     = (*confinedFS)(nil)
	_ sftp.LstatFileLister      = (*confinedFS)(nil)
	_ sftp.ReadlinkFileLister   = (*confinedFS)(nil)
)

func newConfinedFS(t *tree, log *slog.Logger) *confinedFS {
	return &confinedFS{t: t, log: log, open: make(map[string]map[*openFile]struct{}), asked: make(map[string][]int)}
}

func (c *confinedFS) handlers() sftp.Handlers {
	return sftp.Handlers{FileGet: c, FilePut: c, FileCmd: c, FileList: c}
}

// openFile is an open regular file handed to the request server, or a
// directory opened for reading (which can only be synced).
type openFile struct {
	f      *os.File
	append bool // opened with O_APPEND (appendArea)
	c      *confinedFS
	key    string
	once   sync.Once
}

func (o *openFile) ReadAt(p []byte, off int64) (int, error) { return o.f.ReadAt(p, off) }

// WriteAt writes at off, or at the end of the file on a handle opened for
// appending (appendArea): each write lands whole after what is there.
func (o *openFile) WriteAt(p []byte, off int64) (int, error) {
	if o.append {
		return o.f.Write(p)
	}
	return o.f.WriteAt(p, off)
}

// Close is called by the request server when the client closes the handle
// or the session ends.
func (o *openFile) Close() error {
	var err error
	o.once.Do(func() {
		o.c.mu.Lock()
		delete(o.c.open[o.key], o)
		if len(o.c.open[o.key]) == 0 {
			delete(o.c.open, o.key)
		}
		o.c.mu.Unlock()
		o.c.releaseOpen()
		err = o.f.Close()
	})
	return err
}

// askMode records the permissions (perm, or -1 for none) asked for by an
// open or mkdir of SFTP path p that is on its way to the request server.
func (c *confinedFS) askMode(p string, perm int) {
	key := cleanSFTPPath(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	// Each is taken by the request it came with, but one the request
	// server refuses before any handler sees it stays: bounded, and past
	// the bound a file or directory is made private.
	if c.nasked < maxAsked {
		c.asked[key] = append(c.asked[key], perm)
		c.nasked++
	}
}

// modeFor returns the mode to create SFTP path p with: the permissions its
// open or mkdir asked for (the rwx bits only), or def.
func (c *confinedFS) modeFor(p string, def fs.FileMode) fs.FileMode {
	key := cleanSFTPPath(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	q := c.asked[key]
	if len(q) == 0 {
		return def
	}
	perm := q[0]
	c.nasked--
	if len(q) == 1 {
		delete(c.asked, key)
	} else {
		c.asked[key] = q[1:]
	}
	if perm < 0 {
		return def
	}
	return fs.FileMode(perm) & fs.ModePerm
}

// reserveOpen counts one more open file, unless that would pass a cap.
func (c *confinedFS) reserveOpen() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nopen >= maxOpenPerSession {
		return false
	}
	if c.all != nil && c.all.Add(1) > maxOpenAgent {
		c.all.Add(-1)
		return false
	}
	c.nopen++
	return true
}

func (c *confinedFS) releaseOpen() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nopen--
	if c.all != nil {
		c.all.Add(-1)
	}
}

// Fileread opens a regular file for reading, or a directory: reads from
// it fail, and fsync@openssh.com on its handle syncs it (as on OpenSSH's
// sftp-server), which is how a carrier makes a file it put in place
// durable.
func (c *confinedFS) Fileread(r *sftp.Request) (io.ReaderAt, error) {
	c.modeFor(r.Filepath, 0) // nothing is created
	return c.openFile("open", r.Filepath, os.O_RDONLY, false, true, 0)
}

// Filewrite opens a regular file for writing. O_CREATE, O_TRUNC and O_EXCL
// follow the request; O_APPEND is followed in appendArea only (elsewhere
// writes are always at offsets).
func (c *confinedFS) Filewrite(r *sftp.Request) (io.WriterAt, error) {
	return c.openForWrite(r)
}

// OpenFile opens a regular file for reading and writing.
func (c *confinedFS) OpenFile(r *sftp.Request) (sftp.WriterAtReaderAt, error) {
	return c.openForWrite(r)
}

func (c *confinedFS) openForWrite(r *sftp.Request) (*openFile, error) {
	pf := r.Pflags()
	flag := os.O_WRONLY
	if pf.Read {
		flag = os.O_RDWR
	}
	if pf.Creat {
		flag |= os.O_CREATE
	}
	if pf.Trunc {
		flag |= os.O_TRUNC
	}
	if pf.Excl {
		flag |= os.O_EXCL
	}
	if pf.Append {
		if l, err := c.t.resolve("open", r.Filepath); err == nil && l.area == appendArea {
			flag |= os.O_APPEND
		}
	}
	return c.openFile("open", r.Filepath, flag, true, false, c.modeFor(r.Filepath, fileMode))
}

// openRegular opens the file at SFTP path p, which must be (or, with
// O_CREATE, become) a regular file in an area.
func (c *confinedFS) openRegular(op, p string, flag int, write bool) (*openFile, error) {
	return c.openFile(op, p, flag, write, false, fileMode)
}

// openFile is openRegular that also opens a directory (for reading only)
// where dirOK, and creates a file with perm (less the umask).
func (c *confinedFS) openFile(op, p string, flag int, write, dirOK bool, perm fs.FileMode) (*openFile, error) {
	var l loc
	var err error
	if write {
		l, err = c.t.resolveBelowArea(op, p)
	} else {
		l, err = c.t.resolveInArea(op, p)
	}
	if err != nil {
		return nil, err
	}
	ok := func(fi fs.FileInfo) bool { return fi.Mode().IsRegular() || dirOK && !write && fi.IsDir() }
	// Refuse what is not a regular file before opening it: opening a FIFO
	// would block, a device has no business here.
	if fi, err := l.root.Stat(l.rel); err == nil {
		if !ok(fi) {
			return nil, &os.PathError{Op: op, Path: cleanSFTPPath(p), Err: notRegularErrno(fi)}
		}
	} else if !errors.Is(err, fs.ErrNotExist) || flag&os.O_CREATE == 0 {
		return nil, sftpError(op, p, err)
	}
	if !c.reserveOpen() {
		c.log.Warn("sftp open refused: too many open files", "path", cleanSFTPPath(p), "session", maxOpenPerSession, "agent", maxOpenAgent)
		return nil, &os.PathError{Op: op, Path: cleanSFTPPath(p), Err: syscall.EMFILE}
	}
	// O_NONBLOCK: a FIFO swapped in after the check above must not block
	// the open; the check after it refuses what is not a regular file.
	f, err := l.root.OpenFile(l.rel, flag|nonBlock, perm)
	if err != nil {
		c.releaseOpen()
		return nil, sftpError(op, p, err)
	}
	if fi, err := f.Stat(); err != nil || !ok(fi) {
		c.releaseOpen()
		f.Close()
		if err != nil {
			return nil, sftpError(op, p, err)
		}
		return nil, &os.PathError{Op: op, Path: cleanSFTPPath(p), Err: notRegularErrno(fi)}
	}
	if write {
		c.log.Debug("sftp open for write", "path", cleanSFTPPath(p), "flags", flag)
	}
	o := &openFile{f: f, c: c, key: cleanSFTPPath(p), append: flag&os.O_APPEND != 0}
	c.mu.Lock()
	if c.open[o.key] == nil {
		c.open[o.key] = make(map[*openFile]struct{})
	}
	c.open[o.key][o] = struct{}{}
	c.mu.Unlock()
	return o, nil
}

func notRegularErrno(fi fs.FileInfo) syscall.Errno {
	if fi.IsDir() {
		return syscall.EISDIR
	}
	return syscall.EACCES
}

// syncPath makes the data of the file open under SFTP path p durable: it
// syncs every handle this session has open on p (they share one inode), or,
// with none open, the file itself.
func (c *confinedFS) syncPath(p string) error {
	key := cleanSFTPPath(p)
	c.mu.Lock()
	files := make([]*os.File, 0, len(c.open[key]))
	for o := range c.open[key] {
		files = append(files, o.f)
	}
	c.mu.Unlock()
	if len(files) == 0 {
		o, err := c.openRegular("fsync", p, os.O_RDONLY, false)
		if err != nil {
			return err
		}
		defer o.Close()
		files = append(files, o.f)
	}
	for _, f := range files {
		if err := f.Sync(); err != nil {
			return sftpError("fsync", p, err)
		}
	}
	c.log.Debug("sftp fsync", "path", key, "handles", len(files))
	return nil
}

// Filecmd handles Setstat, Rename, Rmdir, Mkdir, Remove, Link and Symlink.
func (c *confinedFS) Filecmd(r *sftp.Request) error {
	switch r.Method {
	case "Setstat":
		return c.setstat(r)
	case "Rename":
		return c.rename(r.Filepath, r.Target)
	case "Rmdir":
		return c.remove("rmdir", r.Filepath, true)
	case "Remove":
		return c.remove("remove", r.Filepath, false)
	case "Mkdir":
		return c.mkdir(r.Filepath)
	case "Link":
		return &os.PathError{Op: "link", Path: cleanSFTPPath(r.Target), Err: syscall.EACCES}
	case "Symlink":
		return &os.PathError{Op: "symlink", Path: cleanSFTPPath(r.Target), Err: syscall.EACCES}
	}
	return fmt.Errorf("%s %s: %w", r.Method, cleanSFTPPath(r.Filepath), sftp.ErrSSHFxOpUnsupported)
}

// mkdir makes a directory in an area, with the permissions asked for or
// dirMode, less the umask.
func (c *confinedFS) mkdir(p string) error {
	perm := c.modeFor(p, dirMode)
	l, err := c.t.resolveBelowArea("mkdir", p)
	if err != nil {
		if l, rerr := c.t.resolve("mkdir", p); rerr == nil && (l.place == messorDir || l.place == inArea) {
			err = &os.PathError{Op: "mkdir", Path: cleanSFTPPath(p), Err: syscall.EEXIST}
		}
		return err
	}
	c.log.Debug("sftp mkdir", "path", cleanSFTPPath(p))
	return sftpError("mkdir", p, l.root.Mkdir(l.rel, perm))
}

func errno(err error) syscall.Errno {
	var e syscall.Errno
	errors.As(err, &e)
	return e
}

// setstat applies times, permissions (files and directories below the
// areas: the rwx bits only, never setuid, setgid or sticky) and size
// (regular files). Owner changes are refused.
func (c *confinedFS) setstat(r *sftp.Request) error {
	p := r.Filepath
	flags := r.AttrFlags()
	attrs := r.Attributes()
	l, err := c.t.resolveInArea("setstat", p)
	if err == nil && flags.Permissions {
		l, err = c.t.resolveBelowArea("chmod", p)
	}
	if err != nil {
		return err
	}
	if flags.UidGid {
		return &os.PathError{Op: "chown", Path: cleanSFTPPath(p), Err: syscall.EPERM}
	}
	fi, err := l.root.Stat(l.rel)
	if err != nil {
		return sftpError("setstat", p, err)
	}
	if flags.Size && !fi.Mode().IsRegular() {
		return &os.PathError{Op: "setstat", Path: cleanSFTPPath(p), Err: syscall.EACCES}
	}
	if !fi.Mode().IsRegular() && !fi.IsDir() {
		return &os.PathError{Op: "setstat", Path: cleanSFTPPath(p), Err: syscall.EACCES}
	}
	if flags.Size {
		f, err := c.openRegular("truncate", p, os.O_WRONLY, true)
		if err != nil {
			return err
		}
		err = f.f.Truncate(int64(attrs.Size))
		cerr := f.Close()
		if err = cmp(err, cerr); err != nil {
			return sftpError("truncate", p, err)
		}
	}
	if flags.Permissions {
		if err := l.root.Chmod(l.rel, fs.FileMode(attrs.Mode)&fs.ModePerm); err != nil {
			return sftpError("chmod", p, err)
		}
	}
	if flags.Acmodtime {
		at := time.Unix(int64(attrs.Atime), 0)
		mt := time.Unix(int64(attrs.Mtime), 0)
		if err := l.root.Chtimes(l.rel, at, mt); err != nil {
			return sftpError("chtimes", p, err)
		}
	}
	return nil
}

// cmp returns the first non-nil error.
func cmp(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func (c *confinedFS) remove(op, p string, dir bool) error {
	l, err := c.t.resolveBelowArea(op, p)
	if err != nil {
		return err
	}
	fi, err := l.root.Lstat(l.rel)
	if err != nil {
		return sftpError(op, p, err)
	}
	switch {
	case dir && !fi.IsDir():
		return &os.PathError{Op: op, Path: cleanSFTPPath(p), Err: syscall.ENOTDIR}
	case !dir && fi.IsDir():
		return &os.PathError{Op: op, Path: cleanSFTPPath(p), Err: syscall.EISDIR}
	}
	c.log.Debug("sftp "+op, "path", cleanSFTPPath(p))
	return sftpError(op, p, l.root.Remove(l.rel))
}

// errNoRenameat2: renameNoReplace cannot work here.
var errNoRenameat2 = errors.New("renameat2 with RENAME_NOREPLACE not supported")

// rename is SSH_FXP_RENAME: it fails when newpath exists. Where it can (Linux,
// most file systems), it is one atomic rename that never replaces. Otherwise,
// like OpenSSH, a regular file is hard-linked to the new name and then
// unlinked from the old one, so the check and the rename are one atomic step;
// other files, and file systems without hard links, fall back to a check and a
// rename.
func (c *confinedFS) rename(oldpath, newpath string) error {
	root, oldRel, newRel, err := c.renamePaths(oldpath, newpath)
	if err != nil {
		return err
	}
	fi, err := root.Lstat(oldRel)
	if err != nil {
		return sftpError("rename", oldpath, err)
	}
	c.log.Debug("sftp rename", "from", cleanSFTPPath(oldpath), "to", cleanSFTPPath(newpath))
	if err := renameNoReplace(root, oldRel, newRel); !errors.Is(err, errNoRenameat2) {
		return sftpError("rename", oldpath, err)
	}
	if fi.Mode().IsRegular() {
		err := root.Link(oldRel, newRel)
		switch e := errno(err); {
		case err == nil:
			if err := root.Remove(oldRel); err != nil {
				root.Remove(newRel)
				return sftpError("rename", oldpath, err)
			}
			return nil
		case e == syscall.EPERM || e == syscall.EOPNOTSUPP || e == syscall.ENOSYS ||
			e == syscall.EXDEV || e == syscall.EMLINK:
			// No hard links here: check, then rename.
		default:
			return sftpError("rename", newpath, err)
		}
	}
	if _, err := root.Lstat(newRel); err == nil {
		return &os.PathError{Op: "rename", Path: cleanSFTPPath(newpath), Err: syscall.EEXIST}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return sftpError("rename", newpath, err)
	}
	return sftpError("rename", oldpath, root.Rename(oldRel, newRel))
}

// renamePaths resolves the two paths of a rename, which must lie in one
// area.
func (c *confinedFS) renamePaths(oldpath, newpath string) (*os.Root, string, string, error) {
	from, err := c.t.resolveBelowArea("rename", oldpath)
	if err != nil {
		return nil, "", "", err
	}
	to, err := c.t.resolveBelowArea("rename", newpath)
	if err != nil {
		return nil, "", "", err
	}
	if from.area != to.area {
		return nil, "", "", &os.PathError{Op: "rename", Path: cleanSFTPPath(newpath), Err: syscall.EXDEV}
	}
	return from.root, from.rel, to.rel, nil
}

// PosixRename is posix-rename@openssh.com: rename(2), replacing newpath.
func (c *confinedFS) PosixRename(r *sftp.Request) error {
	root, oldRel, newRel, err := c.renamePaths(r.Filepath, r.Target)
	if err != nil {
		return err
	}
	c.log.Debug("sftp posix-rename", "from", cleanSFTPPath(r.Filepath), "to", cleanSFTPPath(r.Target))
	return sftpError("rename", r.Filepath, root.Rename(oldRel, newRel))
}

// StatVFS is statvfs@openssh.com for the file system holding the path.
func (c *confinedFS) StatVFS(r *sftp.Request) (*sftp.StatVFS, error) {
	l, err := c.t.resolve("statvfs", r.Filepath)
	if err != nil {
		return nil, err
	}
	root, rel := c.t.top, "."
	if l.place == inArea {
		root, rel = l.root, l.rel
	}
	fi, err := root.Stat(rel)
	if err != nil {
		return nil, sftpError("statvfs", r.Filepath, err)
	}
	if !fi.IsDir() && !fi.Mode().IsRegular() {
		rel = "." // do not open FIFOs and devices
	}
	f, err := root.OpenFile(rel, os.O_RDONLY|nonBlock, 0)
	if err != nil {
		return nil, sftpError("statvfs", r.Filepath, err)
	}
	defer f.Close()
	st, err := statVFS(f)
	if err != nil {
		return nil, sftpError("statvfs", r.Filepath, err)
	}
	return st, nil
}

// Filelist handles List (a directory's entries) and Stat.
func (c *confinedFS) Filelist(r *sftp.Request) (sftp.ListerAt, error) {
	switch r.Method {
	case "List":
		return c.list(r.Filepath)
	case "Stat":
		return c.stat("stat", r.Filepath, (*os.Root).Stat)
	}
	return nil, fmt.Errorf("%s %s: %w", r.Method, cleanSFTPPath(r.Filepath), sftp.ErrSSHFxOpUnsupported)
}

// Lstat is Stat without following a final symbolic link.
func (c *confinedFS) Lstat(r *sftp.Request) (sftp.ListerAt, error) {
	return c.stat("lstat", r.Filepath, (*os.Root).Lstat)
}

// Readlink is refused: a link's text may name places outside Root.
func (c *confinedFS) Readlink(p string) (string, error) {
	return "", &os.PathError{Op: "readlink", Path: cleanSFTPPath(p), Err: syscall.EACCES}
}

func (c *confinedFS) stat(op, p string, stat func(*os.Root, string) (fs.FileInfo, error)) (sftp.ListerAt, error) {
	l, err := c.t.resolve(op, p)
	if err != nil {
		return nil, err
	}
	switch l.place {
	case virtualRoot:
		fi, err := c.t.top.Stat(".")
		if err != nil {
			return nil, sftpError(op, p, err)
		}
		return listerAt{renamed{fi, "/"}}, nil
	case messorDir:
		fi, err := c.t.top.Stat(".")
		if err != nil {
			return nil, sftpError(op, p, err)
		}
		return listerAt{renamed{fi, protocol.Root}}, nil
	}
	fi, err := stat(l.root, l.rel)
	if err != nil {
		return nil, sftpError(op, p, err)
	}
	if l.rel == "." {
		fi = renamed{fi, l.area}
	}
	return listerAt{fi}, nil
}

func (c *confinedFS) list(p string) (sftp.ListerAt, error) {
	l, err := c.t.resolve("opendir", p)
	if err != nil {
		return nil, err
	}
	switch l.place {
	case virtualRoot:
		fi, err := c.t.top.Stat(".")
		if err != nil {
			return nil, sftpError("opendir", p, err)
		}
		return listerAt{renamed{fi, protocol.Root}}, nil
	case messorDir:
		infos := make(listerAt, 0, len(areas))
		for _, a := range areas {
			fi, err := c.t.areas[a].Stat(".")
			if err != nil {
				return nil, sftpError("opendir", p, err)
			}
			infos = append(infos, renamed{fi, a})
		}
		return infos, nil
	}
	d, err := l.root.OpenFile(l.rel, os.O_RDONLY|nonBlock, 0) // never block on a FIFO
	if err != nil {
		return nil, sftpError("opendir", p, err)
	}
	defer d.Close()
	entries, err := d.ReadDir(-1)
	if err != nil {
		return nil, sftpError("readdir", p, err)
	}
	infos := make([]fs.FileInfo, 0, len(entries))
	for _, e := range entries {
		name := e.Name()
		if reservedName(name) {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // gone meanwhile
		}
		infos = append(infos, fi)
	}
	slices.SortFunc(infos, func(a, b fs.FileInfo) int { return strings.Compare(a.Name(), b.Name()) })
	return listerAt(infos), nil
}

// renamed is a FileInfo under another name.
type renamed struct {
	fs.FileInfo
	name string
}

func (r renamed) Name() string { return r.name }

// listerAt serves a fixed list of FileInfos.
type listerAt []fs.FileInfo

func (l listerAt) ListAt(ls []fs.FileInfo, offset int64) (int, error) {
	if offset >= int64(len(l)) {
		return 0, io.EOF
	}
	n := copy(ls, l[offset:])
	if n < len(ls) {
		return n, io.EOF
	}
	return n, nil
}
