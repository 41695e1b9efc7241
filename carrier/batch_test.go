package carrier_test

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/internal/conformance"
	"github.com/messor-sync/messor/internal/flaky"
	"github.com/messor-sync/messor/internal/sshdtest"
	"github.com/messor-sync/messor/protocol"
)

// batchMin is the fewest small files read in batches in these tests.
var batchMin = 4

type batchHost struct{ s *sshdtest.Server }

func (h batchHost) Addr() (string, int)    { return h.s.Host, h.s.Port }
func (h batchHost) KnownHostsLine() string { return h.s.KnownHostsLine() }
func (h batchHost) Stop()                  { h.s.Stop() }

// batchEnv is alpha (a stock sshd whose login runs login, logging its
// SFTP requests) holding files for beta, and a carrier logging at debug.
type batchEnv struct {
	*conformance.Env
	alpha *sshdtest.Server
	c     *carrier.Carrier
	log   *syncBuffer
}

func newBatchEnv(t *testing.T, login string, files map[string][]byte) *batchEnv {
	t.Cleanup(carrier.SetBatchMin(batchMin))
	t.Cleanup(carrier.SetBatchCapsWait(time.Minute))
	be := &batchEnv{log: &syncBuffer{}}
	be.Env = conformance.NewEnv(t, conformance.SSHD(false), "beta")
	be.Start = func(t *testing.T, dir string, keys []ssh.PublicKey) conformance.Host {
		be.alpha = sshdtest.Start(t, sshdtest.Options{LoginDir: dir, AuthorizedKeys: keys, SFTPLog: login == "", LoginScript: login})
		return batchHost{be.alpha}
	}
	be.AddHost("alpha", true)
	be.Outbox("alpha", "beta", files)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("carrier log:\n%s", be.log)
		}
	})
	be.c = be.Carrier(1<<30, carrier.Options{Logger: slog.New(slog.NewTextHandler(be.log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	return be
}

// opens counts the outbox files alpha's sftp-server opened.
func (be *batchEnv) opens(t *testing.T) int {
	t.Helper()
	if !strings.Contains(be.alpha.SFTPLog(), "opendir \""+protocol.Outbox+"\"") {
		t.Fatal("sftp-server logged no listing")
	}
	n := 0
	for _, l := range strings.Split(be.alpha.SFTPLog(), "\n") {
		if strings.Contains(l, "open \""+protocol.Outbox+"/") {
			n++
		}
	}
	return n
}

// deliver drops off what was picked up and checks beta's inbox is want.
func (be *batchEnv) deliver(t *testing.T, want map[string][]byte) {
	t.Helper()
	conformance.MustOK(t, be.Dropoff(be.c, "beta"))
	conformance.SameTree(t, "inbox", be.Inbox("beta", "alpha"), want)
}

func smallFiles(n int) map[string][]byte {
	m := map[string][]byte{}
	for i := range n {
		m[fmt.Sprintf("d%d/f%03d.txt", i%3, i)] = bytes.Repeat([]byte{byte(i)}, 100+i*37)
	}
	m["empty"] = nil
	return m
}

// TestBatchPickup: many small files on a stock host come in archives,
// none opened by SFTP, and all arrive intact; the outbox is emptied.
func TestBatchPickup(t *testing.T) {
	files := smallFiles(40)
	be := newBatchEnv(t, "", files)
	conformance.MustOK(t, be.c.Pickup(context.Background(), be.Resolve("alpha")))
	if n := be.opens(t); n != 0 {
		t.Errorf("%d outbox files opened by SFTP, want 0 (all in archives)", n)
	}
	// The archive's tail is read to its end: the helper stays up.
	if !strings.Contains(be.log.String(), `msg="batch read" host=alpha files=41 got=41 status=0 err=<nil>`) {
		t.Error("the archive did not end as it should")
	}
	if left := be.OutboxFiles("alpha"); len(left) != 0 {
		t.Errorf("left in the outbox: %d", len(left))
	}
	be.deliver(t, files)
}

// fakeTar writes a directory holding a tar that runs script (with the
// real tar as $REAL), and returns the login script putting it first in
// PATH.
func fakeTar(t *testing.T, script string) string {
	t.Helper()
	real, err := exec.LookPath("tar")
	if err != nil {
		t.Fatal("no tar on this machine:", err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "tar"), []byte("#!/bin/sh\nREAL="+real+"\n"+script+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return "PATH=" + dir + ":$PATH; export PATH"
}

// TestBatchOddNames: names a shell or tar could take for something else
// (a leading '-', quotes, $( ), spaces, long names deep down) come in the
// archive as they are; names the outbox refuses (a newline, a backslash,
// bytes that are not UTF-8) are passed over as by the per-file path.
func TestBatchOddNames(t *testing.T) {
	long := strings.Repeat("L", 200)
	files := smallFiles(10)
	for _, n := range []string{"-rf", "--help", "d/-x", "it's", `$(touch pwned)`, "a b", "é😀", "*", "`id`",
		long + "/" + long + "/" + long + "/" + long + ".txt"} {
		files[n] = []byte("odd " + n)
	}
	bad := map[string][]byte{"nl\nname": []byte("1"), "back\\slash": []byte("2"), "bad\xffutf8": []byte("3")}
	be := newBatchEnv(t, "", files)
	be.Outbox("alpha", "beta", bad)
	reports := be.c.Pickup(context.Background(), be.Resolve("alpha"))
	if r := reports[0]; r.Err != nil || len(r.Failed) != 0 {
		t.Fatalf("pickup: %v, failed %v", r.Err, r.Failed)
	}
	if n := be.opens(t); n != 0 {
		t.Errorf("%d outbox files opened by SFTP, want 0 (all in archives)", n)
	}
	if _, err := os.Stat(filepath.Join(be.Dirs["alpha"], "pwned")); err == nil {
		t.Error("a name ran as a command")
	}
	be.deliver(t, files)
	if left := be.OutboxFiles("alpha"); len(left) != len(bad) {
		t.Errorf("left in the outbox: %q, want the %d bad names", keysOf(left), len(bad))
	}
}

func keysOf(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestBatchNoTar: on a host without tar (a PATH holding every other
// command) every file is read by itself, after one archive command that
// brought nothing.
func TestBatchNoTar(t *testing.T) {
	files := smallFiles(40)
	be := newBatchEnv(t, pathWithout(t, "tar"), files)
	conformance.MustOK(t, be.c.Pickup(context.Background(), be.Resolve("alpha")))
	if !strings.Contains(be.log.String(), `msg="batch read" host=alpha files=41 got=0 status=127`) {
		t.Error("no sign the archive was tried and failed")
	}
	be.deliver(t, files)
}

// pathWithout returns a login script setting PATH to a directory of links
// to every command of /usr/bin and /bin but cmd.
func pathWithout(t *testing.T, cmd string) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"/usr/bin", "/bin"} {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			if e.Name() != cmd {
				os.Symlink(filepath.Join(d, e.Name()), filepath.Join(dir, e.Name()))
			}
		}
	}
	return "PATH=" + dir + "; export PATH"
}

// TestBatchBanner: a login shell printing a banner (with and without a
// newline) does not disturb the archives.
func TestBatchBanner(t *testing.T) {
	files := smallFiles(30)
	be := newBatchEnv(t, `echo "Welcome to alpha"; printf 'Last login: never'`, files)
	conformance.MustOK(t, be.c.Pickup(context.Background(), be.Resolve("alpha")))
	if !strings.Contains(be.log.String(), `msg="batch read" host=alpha files=31 got=31 status=0`) {
		t.Error("not all files came in the archive")
	}
	be.deliver(t, files)
}

// member is one entry of a crafted archive.
type member struct {
	hd   tar.Header
	data []byte
}

// craftTar writes the members as a tar file and returns its path.
func craftTar(t *testing.T, ms []member) string {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, m := range ms {
		m.hd.Size = int64(len(m.data))
		if m.hd.Typeflag == tar.TypeSymlink || m.hd.Typeflag == tar.TypeLink || m.hd.Typeflag == tar.TypeDir {
			m.hd.Size = 0
		}
		if err := tw.WriteHeader(&m.hd); err != nil {
			t.Fatal(err)
		}
		if m.hd.Size > 0 {
			tw.Write(m.data)
		}
	}
	tw.Close()
	p := filepath.Join(t.TempDir(), "crafted.tar")
	if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// listedHeader is the header of the outbox file rel (under beta's
// outbox on alpha) as tar would write it, with data as its content.
func (be *batchEnv) listedHeader(t *testing.T, name, rel string, size int) tar.Header {
	st, err := os.Stat(filepath.Join(be.Dirs["alpha"], filepath.FromSlash(protocol.OutboxDir("beta")), rel))
	if err != nil {
		t.Fatal(err)
	}
	return tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, ModTime: st.ModTime().Truncate(time.Second), Size: int64(size)}
}

// noneHolds fails if any file under dir holds one of the contents.
func noneHolds(t *testing.T, dir string, contents ...[]byte) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		b, _ := os.ReadFile(p)
		for _, c := range contents {
			if bytes.Equal(b, c) {
				t.Errorf("%s holds %.40q", p, c)
			}
		}
		return nil
	})
}

// TestBatchHostileArchive: a host answering the archive command with
// members not asked for (escaping names, absolute ones, extra ones), of
// another type or a larger size than listed, or twice, gets nothing of
// them into the buffer or anywhere else; the files asked for arrive, read
// by themselves where their member was refused.
func TestBatchHostileArchive(t *testing.T) {
	files := smallFiles(12)
	escape, abs, extra, bigger := []byte("escaped!"), []byte("absolute"), []byte("not asked for"), bytes.Repeat([]byte("B"), 5000)
	absDir := t.TempDir()
	var be *batchEnv
	script := ""
	tarPath := filepath.Join(t.TempDir(), "path")
	be = newBatchEnv(t, fakeTar(t, `exec cat "$(cat `+tarPath+`)"`), files)
	script = craftTar(t, []member{
		{tar.Header{Name: "../x", Typeflag: tar.TypeReg, Mode: 0o644}, escape},
		{tar.Header{Name: strings.Repeat("../", 20) + absDir[1:] + "/esc", Typeflag: tar.TypeReg, Mode: 0o644}, escape},
		{tar.Header{Name: absDir + "/abs", Typeflag: tar.TypeReg, Mode: 0o644}, abs},
		{tar.Header{Name: "beta/notasked", Typeflag: tar.TypeReg, Mode: 0o644}, extra},
		{be.listedHeader(t, "beta/d0/f000.txt", "d0/f000.txt", 0), bigger},
		{tar.Header{Name: "beta/d1/f001.txt", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"}, nil},
		{tar.Header{Name: "beta/d1/f004.txt", Typeflag: tar.TypeLink, Linkname: "../../../etc/passwd"}, nil},
		{tar.Header{Name: "beta/d2/", Typeflag: tar.TypeDir, Mode: 0o755}, nil},
		{be.listedHeader(t, "./beta/d0/f003.txt", "d0/f003.txt", 0), files["d0/f003.txt"]},
		{be.listedHeader(t, "beta/d0/f003.txt", "d0/f003.txt", 0), bytes.Repeat([]byte("2"), len(files["d0/f003.txt"]))},
	})
	os.WriteFile(tarPath, []byte(script), 0o644)
	conformance.MustOK(t, be.c.Pickup(context.Background(), be.Resolve("alpha")))
	if !strings.Contains(be.log.String(), `msg="batch read" host=alpha files=13 got=1 status=0`) {
		t.Error("the archive did not bring exactly the one member asked for and as listed")
	}
	noneHolds(t, be.Home.Dir, escape, abs, extra, bigger)
	for _, p := range []string{filepath.Join(absDir, "abs"), filepath.Join(be.Buf, "..", "x"), filepath.Join(absDir, "esc")} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s was written", p)
		}
	}
	be.deliver(t, files)
	noneHolds(t, be.Dirs["beta"], escape, abs, extra, bigger)
}

// TestBatchChangedWhileArchived: a file whose member came as listed but
// which the host shows changed once the member is read (a writer at work
// while tar read it: its member may hold neither version) is not
// committed from the archive; it waits, and the next visit carries the
// version it ends as.
func TestBatchChangedWhileArchived(t *testing.T) {
	files := smallFiles(12)
	mixed := bytes.Repeat([]byte("M"), len(files["d0/f000.txt"]))
	tarPath := filepath.Join(t.TempDir(), "path")
	var be *batchEnv
	src := ""
	be = newBatchEnv(t, fakeTar(t, `[ -e done ] || { echo more >> beta/d0/f000.txt; touch done; }; cat "$(cat `+tarPath+`)"`), files)
	src = filepath.Join(be.Dirs["alpha"], filepath.FromSlash(protocol.OutboxDir("beta")), "d0", "f000.txt")
	os.WriteFile(tarPath, []byte(craftTar(t, []member{{be.listedHeader(t, "beta/d0/f000.txt", "d0/f000.txt", 0), mixed}})), 0o644)
	conformance.MustOK(t, be.c.Pickup(context.Background(), be.Resolve("alpha")))
	noneHolds(t, be.Home.Dir, mixed)
	if _, err := os.Stat(src); err != nil {
		t.Fatalf("the changed file left the outbox: %v", err)
	}
	conformance.MustOK(t, be.c.Pickup(context.Background(), be.Resolve("alpha")))
	files["d0/f000.txt"] = append(files["d0/f000.txt"], "more\n"...)
	os.Remove(filepath.Join(be.Dirs["alpha"], filepath.FromSlash(protocol.Outbox), "done"))
	be.deliver(t, files)
}

// TestBatchSymlinkNotFollowed: a listed file replaced by a symlink before
// tar reads it is archived as a link, never as what it points to, and is
// not carried (the per-file path sees the symlink too).
func TestBatchSymlinkNotFollowed(t *testing.T) {
	files := smallFiles(12)
	secret := []byte("the host's secret")
	secretPath := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secretPath, secret, 0o600)
	be := newBatchEnv(t, fakeTar(t, `rm beta/d0/f000.txt && ln -s `+secretPath+` beta/d0/f000.txt; exec "$REAL" "$@"`), files)
	reports := be.c.Pickup(context.Background(), be.Resolve("alpha"))
	if r := reports[0]; r.Err != nil || len(r.Failed) != 0 {
		t.Fatalf("pickup: %v, failed %v", r.Err, r.Failed)
	}
	noneHolds(t, be.Home.Dir, secret)
	delete(files, "d0/f000.txt")
	be.deliver(t, files)
}

type proxiedHost struct {
	s *sshdtest.Server
	p *flaky.Proxy
}

func (h proxiedHost) Addr() (string, int) { return "127.0.0.1", h.p.Port() }
func (h proxiedHost) KnownHostsLine() string {
	return knownhosts.Line([]string{knownhosts.Normalize(h.p.Addr())}, h.s.HostKey)
}
func (h proxiedHost) Stop() { h.s.Stop() }

// TestBatchTornStream: the link cut while an archive streams loses
// nothing: what came whole is committed, nothing else, and the next visit
// carries the rest; every file arrives once, intact.
func TestBatchTornStream(t *testing.T) {
	t.Cleanup(carrier.SetBatchMin(batchMin))
	t.Cleanup(carrier.SetBatchCapsWait(time.Minute))
	files := map[string][]byte{}
	for i := range 300 {
		files[fmt.Sprintf("d%d/f%03d.bin", i%4, i)] = bytes.Repeat([]byte{byte(i), byte(i >> 8), 'x'}, 2000+i)
	}
	log := &syncBuffer{}
	e := conformance.NewEnv(t, conformance.SSHD(false), "beta")
	var p *flaky.Proxy
	e.Start = func(t *testing.T, dir string, keys []ssh.PublicKey) conformance.Host {
		s := sshdtest.Start(t, sshdtest.Options{LoginDir: dir, AuthorizedKeys: keys})
		p = flaky.New(t, s.Addr)
		return proxiedHost{s, p}
	}
	e.AddHost("alpha", true)
	e.Outbox("alpha", "beta", files)
	c := e.Carrier(1<<30, carrier.Options{Logger: slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("carrier log:\n%s", log)
		}
	})
	p.CutAfter(900 << 10)
	r := c.Pickup(context.Background(), e.Resolve("alpha"))[0]
	t.Logf("first visit: %d files, err %v, waiting %d", r.Files, r.Err, len(r.Waiting))
	for _, l := range strings.Split(log.String(), "\n") {
		if strings.Contains(l, "batch read") {
			t.Log(l)
		}
	}
	if !strings.Contains(log.String(), `msg="batch read"`) || strings.Contains(log.String(), "err=<nil>") {
		t.Fatal("the cut did not fall in an archive")
	}
	p.CutAfter(0)
	for visit := 0; visit < 3 && len(e.OutboxFiles("alpha")) > 0; visit++ {
		conformance.MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
	}
	if left := e.OutboxFiles("alpha"); len(left) != 0 {
		t.Fatalf("%d files left in the outbox", len(left))
	}
	conformance.MustOK(t, e.Dropoff(c, "beta"))
	conformance.SameTree(t, "inbox", e.Inbox("beta", "alpha"), files)
}

// TestBatchShrankWhileArchived: a file truncated while GNU tar reads it
// (tar pads its member with zeros, warns, and exits 1) and written back
// as it was listed (same size, same mtime second) before the carrier's
// lstat is never committed from that member: no zeros arrive, and the
// file as listed does.
func TestBatchShrankWhileArchived(t *testing.T) {
	files := smallFiles(12)
	big := bytes.Repeat([]byte("0123456789abcdef"), 60<<10/16)
	files["a/big.bin"] = big
	state := t.TempDir()
	var be *batchEnv
	// The checkpoint after tar's first record truncates the file (its
	// first record holds part of it: it is archived first); the next,
	// once tar padded it, writes it back with its mtime.
	be = newBatchEnv(t, fakeTar(t, `t=./beta/a/big.bin; shift 2; args=
for a in "$@"; do [ "$a" = "$t" ] || args="$args $a"; done
"$REAL" --checkpoint=1 --checkpoint-action=exec=`+state+`/cp.sh -cf - "$t" $args`), files)
	src := filepath.Join(be.Dirs["alpha"], filepath.FromSlash(protocol.OutboxDir("beta")), "a", "big.bin")
	st, err := os.Stat(src)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(state, "orig"), big, 0o644)
	os.WriteFile(filepath.Join(state, "cp.sh"), []byte(fmt.Sprintf(`#!/bin/sh
S=%s; F=%s
n=$(cat $S/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > $S/n
[ $n = 1 ] && : > "$F"
[ $n = 2 ] && { cat $S/orig > "$F"; touch -d @%d "$F"; }
exit 0
`, state, src, st.ModTime().Unix())), 0o755)
	conformance.MustOK(t, be.c.Pickup(context.Background(), be.Resolve("alpha")))
	if n, _ := os.ReadFile(filepath.Join(state, "n")); len(n) == 0 || string(n) == "1\n" {
		t.Fatalf("tar did not reach its second checkpoint (%q)", n)
	}
	if !strings.Contains(be.log.String(), `msg="batch read" host=alpha files=14 got=14 status=1`) {
		t.Error("tar did not warn of the file it padded")
	}
	be.deliver(t, files)
}

// TestBatchSwappedForOddFiles: listed files put aside for a FIFO, a
// device, a directory holding more than the archive's limit, and a
// symlink to a device, just before tar reads them, bring nothing of
// theirs into the buffer; the run ends, and every other file arrives.
func TestBatchSwappedForOddFiles(t *testing.T) {
	files := smallFiles(12)
	be := newBatchEnv(t, fakeTar(t, `cd beta/d0 && rm f000.txt f003.txt f006.txt f009.txt && mkfifo f000.txt && mknod f003.txt c 1 5 &&
mkdir f006.txt && head -c 8388608 /dev/urandom > f006.txt/big && ln -s /dev/zero f009.txt && cd ../.. && exec "$REAL" "$@"`), files)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute) // a hang guard, not a timing
	defer cancel()
	reports := be.c.Pickup(ctx, be.Resolve("alpha"))
	if ctx.Err() != nil {
		t.Fatal("the pickup hung")
	}
	if r := reports[0]; r.Err != nil || len(r.Failed) != 0 {
		t.Fatalf("pickup: %v, failed %v", r.Err, r.Failed)
	}
	for _, n := range []string{"d0/f000.txt", "d0/f003.txt", "d0/f006.txt", "d0/f009.txt"} {
		delete(files, n)
	}
	be.deliver(t, files)
}

// TestBatchKeepMode: a keep-mode outbox of many small files comes in
// archives, every file left in place under a lease; the receipts the
// dropoff brings back remove exactly the versions carried, never one
// saved after the pickup.
func TestBatchKeepMode(t *testing.T) {
	files := smallFiles(40)
	be := newBatchEnv(t, "", files)
	if err := os.WriteFile(filepath.Join(be.Dirs["alpha"], filepath.FromSlash(protocol.Outbox), protocol.KeepMarker), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	rs := be.c.Pickup(context.Background(), be.Resolve("alpha"))
	conformance.MustOK(t, rs)
	if r := rs[0]; r.Files != len(files) || r.Kept != len(files) {
		t.Fatalf("pickup: %s, kept %d; want all %d carried and kept", r.Summary(), r.Kept, len(files))
	}
	if n := be.opens(t) - len(files); n != 0 {
		t.Errorf("%d outbox files opened by SFTP besides the leases written, want 0 (all in archives)", n)
	}
	out := be.OutboxFiles("alpha")
	for n, b := range files {
		if !bytes.Equal(out["beta/"+n], b) {
			t.Errorf("%s not left in place as it was", n)
		}
		lease, err := protocol.LeaseName(path.Base(n))
		if err != nil {
			t.Fatal(err)
		}
		if out["beta/"+path.Join(path.Dir(n), lease)] == nil {
			t.Errorf("%s has no lease", n)
		}
	}
	newer := filepath.Join(be.Dirs["alpha"], filepath.FromSlash(protocol.OutboxDir("beta")), "d1", "f001.txt")
	os.WriteFile(newer, []byte("saved after the pickup, longer than before"), 0o644)
	old := time.Now().Add(-time.Minute)
	os.Chtimes(newer, old, old)
	be.deliver(t, files)
	rs = be.c.Pickup(context.Background(), be.Resolve("alpha"))
	conformance.MustOK(t, rs)
	// The files the receipts removed are not looked for again (as
	// "changed while read"); the version saved after the pickup is
	// carried and kept.
	if r := rs[0]; r.Released != len(files)-1 || r.Files != 1 || r.Kept != 1 || len(r.Waiting) != 0 {
		t.Errorf("second visit: %s; released %d, kept %d, waiting %v; want %d released, the newer version carried and kept",
			r.Summary(), r.Released, r.Kept, r.Waiting, len(files)-1)
	}
	out = be.OutboxFiles("alpha")
	delete(out, protocol.KeepMarker)
	lease, _ := protocol.LeaseName("f001.txt")
	delete(out, "beta/d1/"+lease)
	if left := keysOf(out); len(left) != 1 || left[0] != "beta/d1/f001.txt" {
		t.Errorf("left in the outbox: %q, want the version saved after the pickup alone (and its lease)", left)
	}
}

// TestBatchStalledOrOversizedArchive: a tar that sends its archive and
// then hangs on, one whose member claims far more bytes than any file
// listed (and sends them), or a "tar" printing garbage ends its archive (the helper closed: idle, or
// more bytes than the listed sizes allow) without a member taken; every
// file is read by itself, intact, and the run ends.
func TestBatchStalledOrOversizedArchive(t *testing.T) {
	t.Cleanup(carrier.SetBatchIdle(2 * time.Second))
	huge := filepath.Join(t.TempDir(), "huge")
	for _, tc := range []struct{ name, script, logged string }{
		{"Stalled", `"$REAL" "$@"; sleep 20`, "no output for 2s"},
		{"Oversized", `cat ` + huge + `; head -c 67108864 /dev/zero`, "reply longer than its limit"},
		{"Garbage", `echo "this is not tar"; head -c 20000 /dev/urandom; exit 0`, "exec helper gone: archive/tar"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := smallFiles(20)
			be := newBatchEnv(t, fakeTar(t, tc.script), files)
			var b bytes.Buffer
			tw := tar.NewWriter(&b)
			hd := be.listedHeader(t, "beta/d0/f000.txt", "d0/f000.txt", 1<<40)
			tw.WriteHeader(&hd) // its content: the zeros that follow
			tw.Flush()
			os.WriteFile(huge, b.Bytes(), 0o644)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute) // a hang guard, not a timing
			defer cancel()
			conformance.MustOK(t, be.c.Pickup(ctx, be.Resolve("alpha")))
			if !strings.Contains(be.log.String(), tc.logged) {
				t.Error("the archive did not end as expected")
			}
			be.deliver(t, files)
		})
	}
}

// TestBatchContentLooksLikeFraming: files whose content is itself a tar
// archive (of members named and sized as other listed files), end-of-
// archive zeros, or lines like the helper's reply lines come through as
// their bytes, and no other file takes any of them.
func TestBatchContentLooksLikeFraming(t *testing.T) {
	files := smallFiles(12)
	be := newBatchEnv(t, "", files)
	inner := func(name string) []byte {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		hd := be.listedHeader(t, "./beta/"+name, name, len(files[name]))
		tw.WriteHeader(&hd)
		tw.Write(bytes.Repeat([]byte("X"), len(files[name])))
		tw.Close()
		return b.Bytes()
	}
	odd := map[string][]byte{
		"a/inner.tar": inner("d0/f003.txt"),
		"a/zeros":     make([]byte, 4096),
		"a/framing":   []byte("x start\n\nx 1 0\n" + strings.Repeat("0 1 start\n", 100)),
	}
	odd["a/inner-then-more.tar"] = append(inner("d1/f004.txt"), "\n0 0\n"...)
	be.Outbox("alpha", "beta", odd)
	for n, b := range odd {
		files[n] = b
	}
	conformance.MustOK(t, be.c.Pickup(context.Background(), be.Resolve("alpha")))
	if !strings.Contains(be.log.String(), `got=17 status=0 err=<nil>`) {
		t.Error("not every file came in the archive")
	}
	be.deliver(t, files)
}

// TestBatchOtherTars: busybox tar and bsdtar (libarchive) as the host's
// tar: long names, non-ASCII names and names a shell could misread come
// in their archives as asked, and a file missing from the outbox leaves
// the others to be read by themselves, intact.
func TestBatchOtherTars(t *testing.T) {
	long := strings.Repeat("L", 150)
	for _, tc := range []struct{ name, cmd, pkg string }{
		{"Busybox", "busybox", "busybox"},
		{"Bsdtar", "bsdtar", "libarchive-tools"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin, err := exec.LookPath(tc.cmd)
			if err != nil {
				t.Fatalf("%s is needed (apt-get install %s): %v", tc.cmd, tc.pkg, err)
			}
			run := bin
			if tc.cmd == "busybox" {
				run += " tar"
			}
			for _, missing := range []bool{false, true} {
				files := smallFiles(20)
				for _, n := range []string{"é😀/ü.txt", "-rf", "it's", long + "/" + long + ".txt"} {
					files[n] = []byte("odd " + n)
				}
				script := `exec ` + run + ` "$@"`
				if missing {
					script = `rm beta/d0/f000.txt; ` + script
				}
				be := newBatchEnv(t, fakeTar(t, script), files)
				conformance.MustOK(t, be.c.Pickup(context.Background(), be.Resolve("alpha")))
				want := `got=25 status=0 err=<nil>`
				if missing {
					want = `got=24 status=1 err=<nil>`
					delete(files, "d0/f000.txt")
				}
				if !strings.Contains(be.log.String(), want) {
					t.Errorf("missing %v: no %q in the log", missing, want)
				}
				be.deliver(t, files)
			}
		})
	}
}

// TestBatchNoiseInArchive: bytes another writer on the helper's standard
// output (a job the login shell left in the background) puts inside an
// archive never end up in a file: here they land in the last member,
// whose end (zeros) then reads as the archive's end.
func TestBatchNoiseInArchive(t *testing.T) {
	files := smallFiles(12)
	files["zz/last.bin"] = append(bytes.Repeat([]byte("A"), 1000), make([]byte, 1000)...)
	dir := t.TempDir()
	inject := filepath.Join(dir, "inject.py")
	os.WriteFile(inject, []byte(`import sys
b = open(sys.argv[1], "rb").read()
i = b.index(b"./beta/zz/last.bin\0")
i = i - i % 512 + 512 + 100
sys.stdout.buffer.write(b[:i] + b"hello from the background\n" + b[i:])
`), 0o644)
	be := newBatchEnv(t, fakeTar(t, `t=./beta/zz/last.bin; shift 2; args=
for a in "$@"; do [ "$a" = "$t" ] || args="$args $a"; done
"$REAL" -cf `+dir+`/a.tar $args "$t"; st=$?; python3 `+inject+` `+dir+`/a.tar; exit $st`), files)
	conformance.MustOK(t, be.c.Pickup(context.Background(), be.Resolve("alpha")))
	if !strings.Contains(be.log.String(), "bytes no archiver wrote") {
		t.Error("the noise was not seen")
	}
	be.deliver(t, files)
}

// TestBatchDirectoryNotDescended: a directory put in a listed small file's
// place just before the archiver runs comes as one directory member (GNU
// tar, bsdtar and busybox tar alike), not with its content: the archive
// stays within its limit, brings every other file, and batches stay on.
// A tar that refuses --no-recursion brings nothing, and every file is
// read by itself.
func TestBatchDirectoryNotDescended(t *testing.T) {
	swap := `cd beta/d0 && rm f000.txt && mkdir f000.txt && head -c 8388608 /dev/urandom > f000.txt/big && cd ../.. && `
	for _, tc := range []struct{ name, run, logged string }{
		{"GNU", `exec "$REAL" "$@"`, `got=12 status=0 err=<nil>`},
		{"Bsdtar", `exec bsdtar "$@"`, `got=12 status=0 err=<nil>`},
		{"Busybox", `exec busybox tar "$@"`, `got=12 status=0 err=<nil>`},
		{"Refuses", `case "$*" in *--no-recursion*) echo "tar: unknown option" >&2; exit 64;; esac; exec "$REAL" "$@"`, `got=0 status=64 err=<nil>`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := smallFiles(12)
			be := newBatchEnv(t, fakeTar(t, swap+tc.run), files)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute) // a hang guard, not a timing
			defer cancel()
			r := be.c.Pickup(ctx, be.Resolve("alpha"))[0]
			if ctx.Err() != nil || r.Err != nil || len(r.Failed) != 0 {
				t.Fatalf("pickup: %v, failed %v", r.Err, r.Failed)
			}
			if !strings.Contains(be.log.String(), tc.logged) {
				t.Errorf("no %q in the log", tc.logged)
			}
			delete(files, "d0/f000.txt")
			be.deliver(t, files)
		})
	}
}
