package agent

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
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
// delivery partials and outbox claims.
var carrierPrefixes = []string{protocol.ReservedPrefix + ".part.", protocol.ClaimPrefix}

// File and directory modes for what carriers create (before the umask).
const (
	fileMode = 0o644
	dirMode  = 0o755
)

// place says where an SFTP path lands.
type place int

const (
	outside     place = iota // not in the layout: nothing there
	virtualRoot              // "/": the login directory, holding only "messor"
	inRoot                   // "/messor" or below: rel is relative to Root
)

// cleanSFTPPath makes p absolute ("/"-rooted, relative paths are relative to
// the login directory) and clean, as the request server does.
func cleanSFTPPath(p string) string {
	return path.Clean("/" + p)
}

// resolve maps an SFTP path to Root. The path is cleaned first, so ".." can
// never climb above "/"; what remains outside "/messor" does not exist.
// A component beginning with ".messor" that is neither a delivery partial
// nor an outbox claim is refused with EACCES.
func resolve(op, p string) (place, string, error) {
	clean := cleanSFTPPath(p)
	if strings.ContainsRune(clean, 0) {
		return outside, "", &os.PathError{Op: op, Path: p, Err: syscall.EINVAL}
	}
	switch {
	case clean == "/":
		return virtualRoot, "", nil
	case clean == "/"+protocol.Root:
		return inRoot, ".", nil
	case !strings.HasPrefix(clean, "/"+protocol.Root+"/"):
		return outside, "", &os.PathError{Op: op, Path: clean, Err: syscall.ENOENT}
	}
	rel := clean[len("/"+protocol.Root+"/"):]
	for c := range strings.SplitSeq(rel, "/") {
		if reservedName(c) {
			return outside, "", &os.PathError{Op: op, Path: clean, Err: syscall.EACCES}
		}
	}
	return inRoot, rel, nil
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

// resolveInRoot is resolve for operations that need a path under Root:
// the virtual root and paths outside the layout are refused (EACCES and
// ENOENT).
func resolveInRoot(op, p string) (string, error) {
	pl, rel, err := resolve(op, p)
	if err != nil {
		return "", err
	}
	if pl != inRoot {
		return "", &os.PathError{Op: op, Path: cleanSFTPPath(p), Err: syscall.EACCES}
	}
	return rel, nil
}

// resolveBelowRoot is resolveInRoot for operations that would create,
// remove or rename the entry itself: Root ("/messor") is refused too.
func resolveBelowRoot(op, p string) (string, error) {
	rel, err := resolveInRoot(op, p)
	if err == nil && rel == "." {
		return "", &os.PathError{Op: op, Path: cleanSFTPPath(p), Err: syscall.EACCES}
	}
	return rel, err
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

// confinedFS implements the pkg/sftp request-server handlers on an os.Root.
// One is made per SFTP session; root is shared and safe for concurrent use.
type confinedFS struct {
	root *os.Root
	log  *slog.Logger

	mu    sync.Mutex
	open  map[string]map[*openFile]struct{} // by cleaned SFTP path, for fsync
	nopen int                               // files open in this session
	// all counts the files open in every session of the agent (nil: no
	// agent-wide count, for a one-off use).
	all *atomic.Int64
}

// A carrier keeps a few hundred files open at most (files in flight over
// its SFTP channels); a client holding more is using up the agent's file
// descriptors, which every other session and the listener need too.
// (Variables so that tests can lower them.)
var (
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

func newConfinedFS(root *os.Root, log *slog.Logger) *confinedFS {
	return &confinedFS{root: root, log: log, open: make(map[string]map[*openFile]struct{})}
}

func (c *confinedFS) handlers() sftp.Handlers {
	return sftp.Handlers{FileGet: c, FilePut: c, FileCmd: c, FileList: c}
}

// openFile is an open regular file handed to the request server.
type openFile struct {
	f    *os.File
	c    *confinedFS
	key  string
	once sync.Once
}

func (o *openFile) ReadAt(p []byte, off int64) (int, error) { return o.f.ReadAt(p, off) }

func (o *openFile) WriteAt(p []byte, off int64) (int, error) { return o.f.WriteAt(p, off) }

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

// Fileread opens a regular file for reading.
func (c *confinedFS) Fileread(r *sftp.Request) (io.ReaderAt, error) {
	return c.openRegular("open", r.Filepath, os.O_RDONLY, false)
}

// Filewrite opens a regular file for writing. O_CREATE, O_TRUNC and O_EXCL
// follow the request; O_APPEND is ignored (writes are always at offsets).
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
	return c.openRegular("open", r.Filepath, flag, true)
}

// openRegular opens the file at SFTP path p, which must be (or, with
// O_CREATE, become) a regular file under Root.
func (c *confinedFS) openRegular(op, p string, flag int, write bool) (*openFile, error) {
	var rel string
	var err error
	if write {
		rel, err = resolveBelowRoot(op, p)
	} else {
		rel, err = resolveInRoot(op, p)
	}
	if err != nil {
		return nil, err
	}
	// Refuse what is not a regular file before opening it: opening a FIFO
	// would block, a device has no business here.
	if fi, err := c.root.Stat(rel); err == nil {
		if !fi.Mode().IsRegular() {
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
	f, err := c.root.OpenFile(rel, flag|nonBlock, fileMode)
	if err != nil {
		c.releaseOpen()
		return nil, sftpError(op, p, err)
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
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
	o := &openFile{f: f, c: c, key: cleanSFTPPath(p)}
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
		rel, err := resolveBelowRoot("mkdir", r.Filepath)
		if err != nil {
			if errno(err) == syscall.EACCES && cleanSFTPPath(r.Filepath) == "/"+protocol.Root {
				return &os.PathError{Op: "mkdir", Path: cleanSFTPPath(r.Filepath), Err: syscall.EEXIST}
			}
			return err
		}
		c.log.Debug("sftp mkdir", "path", cleanSFTPPath(r.Filepath))
		return sftpError("mkdir", r.Filepath, c.root.Mkdir(rel, dirMode))
	case "Link":
		return &os.PathError{Op: "link", Path: cleanSFTPPath(r.Target), Err: syscall.EACCES}
	case "Symlink":
		return &os.PathError{Op: "symlink", Path: cleanSFTPPath(r.Target), Err: syscall.EACCES}
	}
	return fmt.Errorf("%s %s: %w", r.Method, cleanSFTPPath(r.Filepath), sftp.ErrSSHFxOpUnsupported)
}

func errno(err error) syscall.Errno {
	var e syscall.Errno
	errors.As(err, &e)
	return e
}

// setstat applies times (files and directories), size and permissions
// (regular files only). Owner changes are refused.
func (c *confinedFS) setstat(r *sftp.Request) error {
	p := r.Filepath
	rel, err := resolveInRoot("setstat", p)
	if err != nil {
		return err
	}
	flags := r.AttrFlags()
	attrs := r.Attributes()
	if flags.UidGid {
		return &os.PathError{Op: "chown", Path: cleanSFTPPath(p), Err: syscall.EPERM}
	}
	fi, err := c.root.Stat(rel)
	if err != nil {
		return sftpError("setstat", p, err)
	}
	if (flags.Size || flags.Permissions) && !fi.Mode().IsRegular() {
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
		if err := c.root.Chmod(rel, fs.FileMode(attrs.Mode&0o777)); err != nil {
			return sftpError("chmod", p, err)
		}
	}
	if flags.Acmodtime {
		at := time.Unix(int64(attrs.Atime), 0)
		mt := time.Unix(int64(attrs.Mtime), 0)
		if err := c.root.Chtimes(rel, at, mt); err != nil {
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
	rel, err := resolveBelowRoot(op, p)
	if err != nil {
		return err
	}
	fi, err := c.root.Lstat(rel)
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
	return sftpError(op, p, c.root.Remove(rel))
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
	oldRel, err := resolveBelowRoot("rename", oldpath)
	if err != nil {
		return err
	}
	newRel, err := resolveBelowRoot("rename", newpath)
	if err != nil {
		return err
	}
	fi, err := c.root.Lstat(oldRel)
	if err != nil {
		return sftpError("rename", oldpath, err)
	}
	c.log.Debug("sftp rename", "from", cleanSFTPPath(oldpath), "to", cleanSFTPPath(newpath))
	if err := renameNoReplace(c.root, oldRel, newRel); !errors.Is(err, errNoRenameat2) {
		return sftpError("rename", oldpath, err)
	}
	if fi.Mode().IsRegular() {
		err := c.root.Link(oldRel, newRel)
		switch e := errno(err); {
		case err == nil:
			if err := c.root.Remove(oldRel); err != nil {
				c.root.Remove(newRel)
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
	if _, err := c.root.Lstat(newRel); err == nil {
		return &os.PathError{Op: "rename", Path: cleanSFTPPath(newpath), Err: syscall.EEXIST}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return sftpError("rename", newpath, err)
	}
	return sftpError("rename", oldpath, c.root.Rename(oldRel, newRel))
}

// PosixRename is posix-rename@openssh.com: rename(2), replacing newpath.
func (c *confinedFS) PosixRename(r *sftp.Request) error {
	oldRel, err := resolveBelowRoot("rename", r.Filepath)
	if err != nil {
		return err
	}
	newRel, err := resolveBelowRoot("rename", r.Target)
	if err != nil {
		return err
	}
	c.log.Debug("sftp posix-rename", "from", cleanSFTPPath(r.Filepath), "to", cleanSFTPPath(r.Target))
	return sftpError("rename", r.Filepath, c.root.Rename(oldRel, newRel))
}

// StatVFS is statvfs@openssh.com for the file system holding the path.
func (c *confinedFS) StatVFS(r *sftp.Request) (*sftp.StatVFS, error) {
	pl, rel, err := resolve("statvfs", r.Filepath)
	if err != nil {
		return nil, err
	}
	if pl == virtualRoot {
		rel = "."
	}
	fi, err := c.root.Stat(rel)
	if err != nil {
		return nil, sftpError("statvfs", r.Filepath, err)
	}
	if !fi.IsDir() && !fi.Mode().IsRegular() {
		rel = "." // do not open FIFOs and devices
	}
	f, err := c.root.OpenFile(rel, os.O_RDONLY|nonBlock, 0)
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
		return c.stat("stat", r.Filepath, c.root.Stat)
	}
	return nil, fmt.Errorf("%s %s: %w", r.Method, cleanSFTPPath(r.Filepath), sftp.ErrSSHFxOpUnsupported)
}

// Lstat is Stat without following a final symbolic link.
func (c *confinedFS) Lstat(r *sftp.Request) (sftp.ListerAt, error) {
	return c.stat("lstat", r.Filepath, c.root.Lstat)
}

// Readlink is refused: a link's text may name places outside Root.
func (c *confinedFS) Readlink(p string) (string, error) {
	return "", &os.PathError{Op: "readlink", Path: cleanSFTPPath(p), Err: syscall.EACCES}
}

func (c *confinedFS) stat(op, p string, stat func(string) (fs.FileInfo, error)) (sftp.ListerAt, error) {
	pl, rel, err := resolve(op, p)
	if err != nil {
		return nil, err
	}
	if pl == virtualRoot {
		fi, err := c.root.Stat(".")
		if err != nil {
			return nil, sftpError(op, p, err)
		}
		return listerAt{renamed{fi, "/"}}, nil
	}
	fi, err := stat(rel)
	if err != nil {
		return nil, sftpError(op, p, err)
	}
	if rel == "." {
		fi = renamed{fi, protocol.Root}
	}
	return listerAt{fi}, nil
}

func (c *confinedFS) list(p string) (sftp.ListerAt, error) {
	pl, rel, err := resolve("opendir", p)
	if err != nil {
		return nil, err
	}
	if pl == virtualRoot {
		fi, err := c.root.Stat(".")
		if err != nil {
			return nil, sftpError("opendir", p, err)
		}
		return listerAt{renamed{fi, protocol.Root}}, nil
	}
	d, err := c.root.OpenFile(rel, os.O_RDONLY|nonBlock, 0) // never block on a FIFO
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
