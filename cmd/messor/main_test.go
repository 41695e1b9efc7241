package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/internal/sshdtest"
	"github.com/messor-sync/messor/internal/testenv"
	"github.com/messor-sync/messor/protocol"
)

type world struct {
	t    *testing.T
	home *testenv.Home
	dirs map[string]string
}

// newWorld makes a carrier HOME (set as $HOME) and one sshd per name.
func newWorld(t *testing.T, names ...string) *world {
	w := &world{t: t, home: testenv.NewHome(t), dirs: map[string]string{}}
	t.Setenv("HOME", w.home.Dir)
	t.Setenv("MESSOR_BUFFER", "")
	t.Setenv("XDG_DATA_HOME", "")
	t.Setenv("MESSOR_LIMIT", "")
	t.Setenv("MESSOR_NO_MDNS", "1") // keep tests off the machine's LAN
	for _, n := range names {
		w.dirs[n] = testenv.NewHostDir(t)
		s := sshdtest.Start(t, sshdtest.Options{LoginDir: w.dirs[n], AuthorizedKeys: []ssh.PublicKey{w.home.Key.PublicKey()}})
		w.home.AddHost(n, s, true)
	}
	return w
}

// bufferDir is the default buffer of the world's HOME.
func (w *world) bufferDir() string {
	return filepath.Join(w.home.Dir, ".local", "share", "messor", "buffer")
}

func (w *world) outbox(host, dest string, files map[string][]byte) {
	dir := filepath.Join(w.dirs[host], filepath.FromSlash(protocol.OutboxDir(dest)))
	testenv.WriteTree(w.t, dir, files)
}

// messor runs the command line and returns its exit code and output.
func (w *world) messor(ctx context.Context, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(ctx, append([]string{"--settle", "0"}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

func TestPickupStatusDropoff(t *testing.T) {
	w := newWorld(t, "alpha", "beta")
	w.home.WriteHostsFile("alpha", "beta")
	files := map[string][]byte{"a.txt": []byte("hello\n"), "dir/b.bin": bytes.Repeat([]byte{7}, 100_000)}
	w.outbox("alpha", "beta", files)
	ctx := context.Background()

	code, out, errs := w.messor(ctx, "pickup")
	if code != 0 || !strings.Contains(out, "pickup: alpha: picked up 2 file(s)") {
		t.Fatalf("pickup: exit %d\n%s%s", code, out, errs)
	}
	code, out, _ = w.messor(ctx, "status", "--json")
	var st carrier.Status
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st.Files != 2 || st.Routes[0].Dest != "beta" || st.Routes[0].Source != "alpha" {
		t.Fatalf("status --json: exit %d: %s", code, out)
	}
	code, out, _ = w.messor(ctx, "status")
	if code != 0 || !strings.Contains(out, "beta") || !strings.Contains(out, "2 file(s)") {
		t.Fatalf("status: exit %d: %s", code, out)
	}
	code, out, errs = w.messor(ctx, "dropoff")
	if code != 0 || !strings.Contains(out, "dropoff: beta: delivered 2 file(s)") {
		t.Fatalf("dropoff: exit %d\n%s%s", code, out, errs)
	}
	got := testenv.ReadTree(t, filepath.Join(w.dirs["beta"], "messor", "inbox", "alpha"))
	if len(got) != 2 || !bytes.Equal(got["dir/b.bin"], files["dir/b.bin"]) {
		t.Fatalf("inbox: %v", got)
	}
}

func TestExitCodes(t *testing.T) {
	w := newWorld(t, "alpha")
	ctx := context.Background()
	hosts := filepath.Join(w.home.Dir, ".messor_pickup_hosts")

	// Bad usage.
	if code, _, errs := w.messor(ctx, "--limit", "lots", "pickup"); code != 2 || !strings.Contains(errs, "--limit") {
		t.Errorf("bad limit: exit %d: %s", code, errs)
	}
	if code, _, _ := w.messor(ctx, "pickup", "--nope"); code != 2 {
		t.Errorf("unknown flag: exit %d", code)
	}
	if code, _, _ := w.messor(ctx, "frobnicate"); code != 2 {
		t.Errorf("unknown command: exit %d", code)
	}

	// Junk lines: file:line errors, the good line still served, exit 2.
	os.WriteFile(hosts, []byte("# pickup hosts\nalpha\nnot a host\n../etc\n"), 0o600)
	w.outbox("alpha", "beta", map[string][]byte{"x": []byte("x")})
	code, out, errs := w.messor(ctx, "pickup")
	if code != 2 || !strings.Contains(errs, hosts+":3:") || !strings.Contains(errs, hosts+":4:") || !strings.Contains(out, "picked up 1 file(s)") {
		t.Errorf("junk hosts file: exit %d\n%s%s", code, out, errs)
	}

	// Out of range is not a failure.
	w.home.AddHostAddr("away", "127.0.0.1", 1)
	os.WriteFile(hosts, []byte("away\nalpha\n"), 0o600)
	code, out, errs = w.messor(ctx, "pickup")
	if code != 0 || !strings.Contains(out, "away: skipped, not reachable") {
		t.Errorf("unreachable: exit %d\n%s%s", code, out, errs)
	}

	// An unknown host key is refused: exit 1, and the message says how to trust it.
	dir := testenv.NewHostDir(t)
	s := sshdtest.Start(t, sshdtest.Options{LoginDir: dir, AuthorizedKeys: []ssh.PublicKey{w.home.Key.PublicKey()}})
	w.home.AddHost("stranger", s, false)
	os.WriteFile(hosts, []byte("stranger\n"), 0o600)
	code, out, errs = w.messor(ctx, "pickup")
	if code != 1 || !strings.Contains(out+errs, "messor trust stranger") || !strings.Contains(out+errs, "SHA256:") {
		t.Errorf("unknown key: exit %d\n%s%s", code, out, errs)
	}
	// messor trust with the right fingerprint pins it.
	code, out, errs = w.messor(ctx, "trust", "stranger", "--fingerprint", ssh.FingerprintSHA256(s.HostKey))
	if code != 0 || !strings.Contains(out, "trusted stranger") {
		t.Errorf("trust: exit %d\n%s%s", code, out, errs)
	}
	if code, out, errs = w.messor(ctx, "pickup"); code != 0 {
		t.Errorf("after trust: exit %d\n%s%s", code, out, errs)
	}

	// Two runs at once: the second is told the buffer is busy.
	buf, err := carrier.OpenBuffer(w.bufferDir(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	code, _, errs = w.messor(ctx, "pickup")
	buf.Close()
	if code != 1 || !strings.Contains(errs, "in use by another messor run") {
		t.Errorf("busy: exit %d: %s", code, errs)
	}
}

func TestWatch(t *testing.T) {
	w := newWorld(t, "alpha", "beta")
	w.home.WriteHostsFile("alpha")
	files := map[string][]byte{"note.txt": []byte("carried by watch\n")}
	w.outbox("alpha", "beta", files)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var out, errb bytes.Buffer
	go func() {
		done <- run(ctx, []string{"--settle", "0", "watch", "--interval", "100ms"}, &out, &errb)
	}()
	inbox := filepath.Join(w.dirs["beta"], "messor", "inbox", "alpha")
	deadline := time.Now().Add(60 * time.Second)
	for testenv.ReadTree(t, inbox)["note.txt"] == nil && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	code := <-done
	if got := testenv.ReadTree(t, inbox); !bytes.Equal(got["note.txt"], files["note.txt"]) {
		t.Fatalf("watch did not deliver: %v\n%s%s", got, out.String(), errb.String())
	}
	if code != 0 || !strings.Contains(out.String(), "stopped") {
		t.Errorf("watch: exit %d\n%s%s", code, out.String(), errb.String())
	}
}

func TestHelpNamesEnvDefaults(t *testing.T) {
	var out bytes.Buffer
	if code := run(context.Background(), []string{"--help"}, &out, &out); code != 0 {
		t.Fatalf("--help: exit %d", code)
	}
	for _, want := range []string{"$MESSOR_BUFFER", "$MESSOR_LIMIT", "--accept-new", "pickup", "dropoff", "sync", "status", "agent", "demo", "watch", "trust"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}

func TestRecoverCorruptIndex(t *testing.T) {
	w := newWorld(t, "alpha", "beta")
	w.home.WriteHostsFile("alpha")
	files := map[string][]byte{"keep/me.txt": []byte("precious\n")}
	w.outbox("alpha", "beta", files)
	ctx := context.Background()
	if code, out, errs := w.messor(ctx, "pickup"); code != 0 {
		t.Fatalf("pickup: exit %d\n%s%s", code, out, errs)
	}
	idx := filepath.Join(w.bufferDir(), "index.db")
	if err := os.WriteFile(idx, bytes.Repeat([]byte("junk"), 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errs := w.messor(ctx, "dropoff")
	if code != 1 || !strings.Contains(errs, "messor recover") {
		t.Fatalf("corrupt index: exit %d, want 1 and a hint to recover\n%s%s", code, out, errs)
	}
	code, out, errs = w.messor(ctx, "recover")
	if code != 0 || !strings.Contains(out, "restored 1 carried file(s)") {
		t.Fatalf("recover: exit %d\n%s%s", code, out, errs)
	}
	if code, out, errs = w.messor(ctx, "dropoff"); code != 0 || !strings.Contains(out, "delivered 1 file(s)") {
		t.Fatalf("dropoff after recover: exit %d\n%s%s", code, out, errs)
	}
	got := testenv.ReadTree(t, filepath.Join(w.dirs["beta"], "messor", "inbox", "alpha"))
	if !bytes.Equal(got["keep/me.txt"], files["keep/me.txt"]) {
		t.Fatalf("inbox: %v", got)
	}
}
