package carrier

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/internal/sshdtest"
)

// helperHost starts sshd with opts (a login dir, the key) and dials it.
func helperHost(t *testing.T, opts sshdtest.Options) (*Session, string) {
	t.Helper()
	key, _ := sshdtest.NewKey(t)
	opts.LoginDir = t.TempDir()
	opts.AuthorizedKeys = []ssh.PublicKey{key.PublicKey()}
	srv := sshdtest.Start(t, opts)
	return dialTest(t, srv.Host, srv.Port, key, 5*time.Second), opts.LoginDir
}

// stockHelper dials a stock sshd and returns the session, its login
// directory and its exec hasher, whose helper is up.
func stockHelper(ctx context.Context, t *testing.T) (*Session, string, *execHasher) {
	t.Helper()
	s, dir := helperHost(t, sshdtest.Options{})
	if !s.helperUp(ctx) {
		t.Fatal("no exec helper on a stock host")
	}
	return s, dir, s.caps(ctx).hasher.(*execHasher)
}

// checkRangeHash writes a 2 MiB file on the host and checks the digest the
// session's hasher gives for its first MiB (hashPrefix: the host's own
// hashing, never reading back).
func checkRangeHash(ctx context.Context, t *testing.T, s *Session, dir string) {
	t.Helper()
	b := make([]byte, 2<<20)
	for i := range b {
		b[i] = byte(i * 7)
	}
	if err := os.WriteFile(filepath.Join(dir, "f.bin"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(b[:1<<20])
	got, err := s.hashPrefix(ctx, "f.bin", 1<<20)
	if err != nil {
		t.Fatalf("hash: %v", err)
	}
	if hex.EncodeToString(got) != hex.EncodeToString(want[:]) {
		t.Fatalf("hash %x, want %x", got, want)
	}
}

// TestHelperAnswersThroughNoise: on hosts whose login shell prints a banner
// (with or without a newline) and a line that looks like a reply of
// another helper, the commands run in one helper, and each reply is the
// command's output, whether it ends its last line or not.
func TestHelperAnswersThroughNoise(t *testing.T) {
	for _, login := range []string{
		`echo "Welcome"; echo "messor-00000000000000000000000000000000 1 0"`,
		`sleep 0.2; printf 'Last login: yesterday'`,
		"",
	} {
		s, dir := helperHost(t, sshdtest.Options{LoginScript: login})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if k := s.HashKind(ctx); k != HashByCommand || !s.helperUp(ctx) {
			t.Fatalf("login %q: hash kind %s, helper up %v; want exec with a helper", login, k, s.helperUp(ctx))
		}
		e := s.caps(ctx).hasher.(*execHasher)
		for _, tc := range []struct{ cmd, want string }{
			{"printf abc", "abc"},
			{"echo one; echo two", "two"},
			{"printf 'messor-x 1 0\\nlast'", "last"},
		} {
			out, err := e.helper.run(ctx, tc.cmd, 10*time.Second)
			if got := execLines(out, 1)[0]; err != nil || got != tc.want {
				t.Errorf("login %q: %q: %q, %v; want %q", login, tc.cmd, got, err, tc.want)
			}
		}
		if _, err := e.helper.run(ctx, "exit 3", 10*time.Second); err == nil || !s.helperUp(ctx) {
			t.Errorf("login %q: a command exiting 3: %v, helper up %v; want an error, and the helper still up", login, err, s.helperUp(ctx))
		}
		checkRangeHash(ctx, t, s, dir)
	}
}

// TestHelperKilledMidCommand: the helper's shell is killed while a command
// runs in it. The command fails over to a session of its own (it does not
// hang, and is answered), and later hashes run one session each.
func TestHelperKilledMidCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, dir, e := stockHelper(ctx, t)
	pidFile := filepath.Join(dir, "pid")
	cmd := "if [ -e " + pidFile + " ]; then echo again; else echo $$ > " + pidFile + "; sleep 30; fi"
	done := make(chan error, 1)
	var out []byte
	go func() {
		var err error
		out, err = e.run(ctx, s, cmd, 0)
		done <- err
	}()
	var pid int
	for pid == 0 {
		b, _ := os.ReadFile(pidFile)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		time.Sleep(10 * time.Millisecond)
	}
	// The helper's shell leads its process group (sshd starts a session
	// in a session of its own): the shell and its sleep.
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil || execLines(out, 1)[0] != "again" {
		t.Fatalf("command in flight when the helper died: %q, %v; want it run again in a session of its own", out, err)
	}
	if s.helperUp(ctx) {
		t.Error("helper still up after it was killed")
	}
	checkRangeHash(ctx, t, s, dir)
}

// TestHelperRefused: a shell that will not run sh -s, and a restricted
// key (every session is internal-sftp). The first hashes by one command
// per session, the second reads back; neither waits for a reply that
// never comes.
func TestHelperRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts sshdtest.Options
		kind HashKind
	}{
		{"NoShS", sshdtest.Options{LoginScript: `case "$SSH_ORIGINAL_COMMAND" in *"sh -s"*) echo "no interactive shells here"; exit 1;; esac`}, HashByCommand},
		{"RestrictedKey", sshdtest.Options{NoExec: true}, HashByReadback},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, dir := helperHost(t, tc.opts)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if k := s.HashKind(ctx); k != tc.kind || s.helperUp(ctx) {
				t.Fatalf("hash kind %s, helper up %v; want %s without a helper", k, s.helperUp(ctx), tc.kind)
			}
			if tc.kind == HashByCommand {
				checkRangeHash(ctx, t, s, dir)
			}
		})
	}
}

// TestHelperCommandCancelled: a command still running in the helper when
// its context ends returns then, with the context's error; the helper,
// whose shell is in an unknown state, is closed, and later hashes run one
// session each.
func TestHelperCommandCancelled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, dir, e := stockHelper(ctx, t)
	cctx, ccancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer ccancel()
	if _, err := e.run(cctx, s, "sleep 30", 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("command cancelled in the helper: %v, want %v", err, context.DeadlineExceeded)
	}
	if s.helperUp(ctx) {
		t.Error("helper still up after a command in it was cancelled")
	}
	checkRangeHash(ctx, t, s, dir)
}

// A command asked for once its context has ended is not sent, and leaves
// the helper up for the session's other commands: a slice hash whose
// upload ended while it waited for the host's probe asks so
// (sliceVerifier.written).
func TestHelperRunAfterCancel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, dir, e := stockHelper(ctx, t)
	ended, end := context.WithCancel(ctx)
	end()
	for range 20 {
		if _, err := e.run(ended, s, "true", 0); !errors.Is(err, context.Canceled) {
			t.Fatalf("command asked for after its context ended: %v, want %v", err, context.Canceled)
		}
	}
	if !s.helperUp(ctx) {
		t.Error("helper closed by commands never sent")
	}
	checkRangeHash(ctx, t, s, dir)
}
