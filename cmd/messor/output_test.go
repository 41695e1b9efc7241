package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/internal/sshdtest"
	"github.com/messor-sync/messor/internal/testenv"
	"github.com/messor-sync/messor/protocol"
)

// Without -v, warnings are plain lines, each once: a symlink in an outbox
// is mentioned once however many rounds watch makes.
func TestWarningsOnceAndPlain(t *testing.T) {
	w := newWorld(t, "alpha")
	w.home.WriteHostsFile("alpha")
	box := filepath.Join(w.dirs["alpha"], filepath.FromSlash(protocol.OutboxDir("beta")))
	if err := os.MkdirAll(box, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(box, "link")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var out, errb lockedBuf
	go func() {
		done <- run(ctx, []string{"--settle", "0", "watch", "--interval", "50ms"}, &out, &errb)
	}()
	// Wait for several rounds: each lists the outbox (sshd logs each login).
	for deadline := time.Now().Add(30 * time.Second); strings.Count(errb.String(), "beta/link") < 2 && time.Now().Before(deadline); {
		time.Sleep(500 * time.Millisecond)
		if strings.Count(errb.String(), "beta/link") == 1 {
			time.Sleep(time.Second) // rounds went by; a second mention would be there
			break
		}
	}
	cancel()
	code := <-done
	errs := errb.String()
	if code != 0 || strings.Contains(errs, "level=") || strings.Contains(errs, "time=") || strings.Count(errs, "beta/link") != 1 {
		t.Errorf("watch: exit %d, want the symlink warned about once, plainly\n%s%s", code, out.String(), errs)
	}
}

// --accept-new says what it pinned, as ssh does.
func TestAcceptNewSaysWhatItPinned(t *testing.T) {
	w := newWorld(t)
	dir := testenv.NewHostDir(t)
	s := sshdtest.Start(t, sshdtest.Options{LoginDir: dir, AuthorizedKeys: []ssh.PublicKey{w.home.Key.PublicKey()}})
	w.home.AddHost("stranger", s, false)
	w.home.WriteHostsFile("stranger")
	code, out, errs := w.messor(context.Background(), "--accept-new", "pickup")
	want := "messor: permanently added stranger's host key (" + ssh.FingerprintSHA256(s.HostKey) + ") to " + filepath.Join(w.home.Dir, ".ssh", "known_hosts")
	if code != 0 || !strings.Contains(errs, want) {
		t.Errorf("--accept-new: exit %d, want %q\n%s%s", code, want, out, errs)
	}
	if code, out, errs = w.messor(context.Background(), "--accept-new", "pickup"); code != 0 || strings.Contains(errs, "permanently added") {
		t.Errorf("second run: exit %d, want nothing pinned\n%s%s", code, out, errs)
	}
}

// recover on a healthy index says so and leaves it be; --force rebuilds.
func TestRecoverHealthy(t *testing.T) {
	w := carrying(t, map[string][]byte{"a.txt": []byte("a\n")}, "alpha")
	ctx := context.Background()
	code, out, errs := w.messor(ctx, "recover")
	if code != 0 || !strings.Contains(out, "buffer index is healthy (1 carried file(s)); nothing to recover") || strings.Contains(out, "moved") {
		t.Errorf("recover on a healthy index: exit %d\n%s%s", code, out, errs)
	}
	if code, out, errs = w.messor(ctx, "recover", "--force"); code != 0 || !strings.Contains(out, "restored 1 carried file(s)") {
		t.Errorf("recover --force: exit %d\n%s%s", code, out, errs)
	}
}

// An interrupted run says so in words, never "context canceled", and does
// not blame the host it was talking to.
func TestInterruptedSaysSo(t *testing.T) {
	w := newWorld(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := l.Accept(); err == nil {
			accepted <- c // and say nothing
		}
	}()
	w.home.AddHostAddr("mute", "127.0.0.1", l.Addr().(*net.TCPAddr).Port)
	w.home.WriteHostsFile("mute")
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		c := <-accepted
		defer c.Close()
		cancel()
		time.Sleep(5 * time.Second)
	}()
	code, out, errs := w.messor(ctx, "--connect-timeout", "1h", "pickup")
	if code == 0 || strings.Contains(out+errs, "context canceled") || strings.Contains(out+errs, "timed out") || !strings.Contains(out, "pickup: mute: interrupted") {
		t.Errorf("interrupted: exit %d\n%s%s", code, out, errs)
	}
}

// The service units in `messor agent --help` and README.md run the binary
// where the README installs it, and say how to keep them running.
func TestServiceDocs(t *testing.T) {
	var help lockedBuf
	if code := run(context.Background(), []string{"agent", "--help"}, &help, &help); code != 0 {
		t.Fatalf("agent --help: exit %d", code)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ExecStart=%h/go/bin/messor agent", "loginctl enable-linger"} {
		if !strings.Contains(help.String(), want) || !strings.Contains(string(readme), want) {
			t.Errorf("agent --help or README.md lacks %q", want)
		}
	}
	for _, want := range []string{"go install ./cmd/messor", "ExecStart=%h/go/bin/messor watch -q", "termux-job-scheduler", ".termux/boot/"} {
		if !strings.Contains(string(readme), want) {
			t.Errorf("README.md lacks %q", want)
		}
	}
}

// --idle-timeout: a negative value is a usage error (0 is the way to wait
// for ever), and a tiny one gives up on the host rather than crashing
// the run.
func TestIdleTimeoutFlag(t *testing.T) {
	w := newWorld(t, "alpha")
	w.home.WriteHostsFile("alpha")
	w.outbox("alpha", "beta", map[string][]byte{"a.txt": []byte("a\n")})
	ctx := context.Background()
	if code, out, errs := w.messor(ctx, "--idle-timeout", "-5s", "pickup"); code != exitUsage || !strings.Contains(errs, "--idle-timeout") {
		t.Errorf("--idle-timeout -5s: exit %d, want %d naming the flag\n%s%s", code, exitUsage, out, errs)
	}
	for _, d := range []string{"1ns", "3ns"} {
		if code, out, errs := w.messor(ctx, "--idle-timeout", d, "pickup"); code == exitUsage {
			t.Errorf("--idle-timeout %s: exit %d, want a run\n%s%s", d, code, out, errs)
		}
	}
}
