package conformance

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/internal/sshdtest"
)

// durableFiles are delivered into three directories, two of them new.
var durableFiles = map[string][]byte{
	"top.txt":       []byte("top\n"),
	"a/one.txt":     []byte("one\n"),
	"a/two.txt":     []byte("two\n"),
	"a/b/three.txt": []byte("three\n"),
}

// syncedDirs are the inbox directories (relative to the login directory)
// whose entries must be synced for durableFiles to last: each one a file
// was put in, and each parent of a directory the carrier made.
var syncedDirs = []string{"messor/inbox", "messor/inbox/alpha", "messor/inbox/alpha/a", "messor/inbox/alpha/a/b"}

// TestDirectorySyncOpenSSH: on a stock sshd, after putting a file in place
// the carrier syncs its directory (fsync@openssh.com on the directory
// opened for reading), and the parent of each directory it made, before
// it lets go of its copy; OpenSSH's sftp-server carries the syncs out (its
// log shows each, and no request failed).
func TestDirectorySyncOpenSSH(t *testing.T) {
	t.Parallel()
	directorySyncOpenSSH(t, nil)
}

// TestDirectorySyncFoundDirs: directories found in the inbox may have been
// made by a carrier killed before it synced their parents, so every
// directory from the file's up to the inbox is synced, made this visit or
// not.
func TestDirectorySyncFoundDirs(t *testing.T) {
	t.Parallel()
	directorySyncOpenSSH(t, func(dir string) {
		if err := os.MkdirAll(filepath.Join(dir, "messor", "inbox", "alpha", "a", "b"), 0o700); err != nil {
			t.Fatal(err)
		}
	})
}

// directorySyncOpenSSH runs deliverDurable against sshd, calling before
// (if not nil) with the destination's login directory first.
func directorySyncOpenSSH(t *testing.T, before func(dir string)) {
	var mu sync.Mutex
	var beta *sshdtest.Server
	e := NewEnv(t, SSHD(false), "alpha")
	e.Start = func(t *testing.T, dir string, keys []ssh.PublicKey) Host {
		s := sshdtest.Start(t, sshdtest.Options{LoginDir: dir, AuthorizedKeys: keys, SFTPLog: true})
		mu.Lock()
		beta = s
		mu.Unlock()
		return sshdHost{s}
	}
	e.AddHost("beta", true)
	if before != nil {
		before(e.Dirs["beta"])
	}
	deliverDurable(t, e)
	log := beta.SFTPLog()
	for _, d := range syncedDirs {
		if !strings.Contains(log, `fsync "`+d+`"`) {
			t.Errorf("sftp-server synced no directory %s", d)
		}
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("sftp-server log:\n%s", log)
	}
}

// TestDirectorySyncAgent: the same on the agent, whose log shows the syncs.
func TestDirectorySyncAgent(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e := NewEnv(t, Agent, "alpha")
	e.Start = AgentLogging(log)
	e.AddHost("beta", true)
	deliverDurable(t, e)
	mu.Lock()
	got := buf.String()
	mu.Unlock()
	for _, d := range syncedDirs {
		if !regexp.MustCompile(`msg="sftp fsync" .*path=/` + regexp.QuoteMeta(d) + ` `).MatchString(got) {
			t.Errorf("the agent synced no directory %s", d)
		}
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("agent log:\n%s", got)
	}
}

// deliverDurable carries durableFiles from alpha to beta; the inbox for
// alpha does not exist on beta before.
func deliverDurable(t *testing.T, e *Env) {
	e.Outbox("alpha", "beta", durableFiles)
	c := e.Carrier(1<<30, carrier.Options{})
	MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
	rs := e.Dropoff(c, "beta")
	MustOK(t, rs)
	if rs[0].Files != len(durableFiles) || len(rs[0].Waiting) != 0 {
		t.Errorf("dropoff: %s, waiting %v", rs[0].Summary(), rs[0].Waiting)
	}
	SameTree(t, "inbox", e.Inbox("beta", "alpha"), durableFiles)
	if ents, _ := c.Buffer().Entries(); len(ents) != 0 {
		t.Errorf("the buffer still holds %d entries", len(ents))
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestNoDirectorySyncKeepsEntry: a host that cannot sync (pkg/sftp's plain
// server offers no fsync@openssh.com) gets the files, but the carrier keeps
// its copies until a later visit finds them there; that visit sends
// nothing again and releases them.
func TestNoDirectorySyncKeepsEntry(t *testing.T) {
	t.Parallel()
	e := NewEnv(t, SSHD(false), "alpha")
	e.Start = startPkgSFTP
	e.AddHost("beta", true)
	e.Outbox("alpha", "beta", durableFiles)
	c := e.Carrier(1<<30, carrier.Options{})
	MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
	rs := e.Dropoff(c, "beta")
	MustOK(t, rs)
	SameTree(t, "inbox", e.Inbox("beta", "alpha"), durableFiles)
	if ents, _ := c.Buffer().Entries(); len(ents) != len(durableFiles) {
		t.Errorf("after the first visit the buffer holds %d entries, want all %d kept", len(ents), len(durableFiles))
	}
	if rs[0].Files != len(durableFiles) || len(rs[0].Waiting) != len(durableFiles) {
		t.Errorf("first visit: %s, waiting %v", rs[0].Summary(), rs[0].Waiting)
	}
	rs = e.Dropoff(c, "beta")
	MustOK(t, rs)
	if rs[0].Files != 0 || rs[0].Already != len(durableFiles) {
		t.Errorf("second visit: %s", rs[0].Summary())
	}
	if ents, _ := c.Buffer().Entries(); len(ents) != 0 {
		t.Errorf("after the second visit the buffer holds %d entries", len(ents))
	}
	SameTree(t, "inbox", e.Inbox("beta", "alpha"), durableFiles)
}
