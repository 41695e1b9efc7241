package faults

import (
	"context"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/protocol"
)

// mountTmpfs mounts a tmpfs of size on dir (created if needed) and unmounts
// it when the test ends.
func mountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	requireRoot(t)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir)
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
}

func mustRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// failures joins the per-file failure reasons of reports.
func failures(rs []*carrier.HostReport) string {
	var b strings.Builder
	for _, r := range rs {
		if r.Err != nil {
			b.WriteString(r.Err.Error() + "\n")
		}
		for _, f := range r.Failed {
			b.WriteString(f.Path + ": " + f.Reason + "\n")
		}
	}
	return b.String()
}

// TestFullDisks puts the carrier's buffer, then a host's inbox, on a small
// tmpfs: the run fails with an error that names the full disk, loses and
// corrupts nothing, and once there is room the next run finishes the job.
func TestFullDisks(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "alpha", "beta")
	r := rand.New(rand.NewSource(4))
	files := smallTree(r, "disk", 10, 4<<10)
	files["disk/a.bin"] = randBytes(r, 5<<20)
	files["disk/b.bin"] = randBytes(r, 5<<20)
	e.send("alpha", "beta", files)
	mountTmpfs(t, e.Buf, "8m")
	ctx := context.Background()
	c := e.carrier(1<<30, carrier.Options{}) // the limit is not what stops it: the disk is

	// The buffer's disk fills up.
	rs := c.Pickup(ctx, e.Resolve("alpha"))
	msg := failures(rs)
	t.Logf("pickup on a full buffer disk:\n%s", msg)
	if !strings.Contains(msg, "no space left on device") || !strings.Contains(msg, e.Buf) || !strings.Contains(msg, "disk holding the buffer is full") {
		t.Errorf("the error does not say that the buffer's disk (%s) is full:\n%s", e.Buf, msg)
	}
	e.world.Check(t, c.Buffer())
	if n := len(e.OutboxFiles("alpha")); n == 0 {
		t.Fatal("everything fit: the disk was not full")
	}
	mustRun(t, "mount", "-o", "remount,size=64m", e.Buf)
	if rs := c.Pickup(ctx, e.Resolve("alpha")); reportsErr(rs) != nil {
		t.Fatalf("pickup with room: %v", reportsErr(rs))
	}
	e.world.Check(t, c.Buffer())
	if n := len(e.OutboxFiles("alpha")); n != 0 {
		t.Fatalf("%d files left in the outbox", n)
	}

	// The destination's disk fills up.
	inbox := filepath.Join(e.Dirs["beta"], filepath.FromSlash(protocol.Inbox))
	mountTmpfs(t, inbox, "7m")
	rs, _ = c.Dropoff(ctx, e.Resolve("beta"))
	msg = failures(rs)
	t.Logf("dropoff to a full inbox disk:\n%s", msg)
	if !strings.Contains(msg, "host beta") || !strings.Contains(msg, "disk holding messor/inbox/alpha") || !strings.Contains(msg, " is full") {
		t.Errorf("the error does not say that beta's inbox disk is full:\n%s", msg)
	}
	snap := e.world.Check(t, c.Buffer())
	t.Logf("after the failed dropoff: %d entries in the buffer, %d partial uploads in the inbox", len(snap.Entries), snap.InboxPartials)
	mustRun(t, "mount", "-o", "remount,size=64m", inbox)
	if rs, _ := c.Dropoff(ctx, e.Resolve("beta")); reportsErr(rs) != nil {
		t.Fatalf("dropoff with room: %v", reportsErr(rs))
	}
	e.world.CheckSettled(t, c.Buffer())
}
