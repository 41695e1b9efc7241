package carrier_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/internal/conformance"
)

// keptEnv is a sliceEnv whose carrier has opts (slices of 1 MiB).
func keptEnv(t *testing.T, start conformance.StartFunc, size int, opts carrier.Options) (*sliceEnv, string) {
	e := &sliceEnv{Env: conformance.NewEnv(t, start, "alpha", "beta"), log: &syncBuffer{}}
	e.data = make([]byte, size)
	rand.New(rand.NewSource(int64(size))).Read(e.data)
	e.Outbox("alpha", "beta", map[string][]byte{"big/file.bin": e.data})
	opts.VerifySlice = 1 << 20
	opts.Logger = slog.New(slog.NewTextHandler(e.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.c = e.Carrier(1<<30, opts)
	conformance.MustOK(t, e.c.Pickup(context.Background(), e.Resolve("alpha")))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("carrier log:\n%s", e.log)
		}
	})
	st, _ := carrier.ReadStatus(e.c.Buffer())
	if len(st.Items) != 1 {
		t.Fatalf("buffer holds %d files, want 1", len(st.Items))
	}
	return e, st.Items[0].Hash
}

// A fresh pickup of a file of several slices keeps the digests of its
// slices, and the dropoff compares the host's digests with those instead
// of hashing the carrier's copy again; where the source check on an agent
// hashed the slices already, those are kept.
func TestSliceSumsKeptAtPickup(t *testing.T) {
	for _, h := range []struct {
		name   string
		start  conformance.StartFunc
		verify bool
	}{
		{"OpenSSH", conformance.SSHD(false), false},
		{"Agent", conformance.Agent, false},
		{"AgentVerifySource", conformance.Agent, true},
	} {
		t.Run(h.name, func(t *testing.T) {
			t.Parallel()
			e, sum := keptEnv(t, h.start, 5<<20+333, carrier.Options{VerifySource: h.verify})
			text, err := os.ReadFile(carrier.SliceSumsPath(e.c.Buffer(), sum))
			if err != nil {
				t.Fatalf("no slice digests kept: %v", err)
			}
			for i := 0; i < len(e.data); i += 1 << 20 {
				d := sha256.Sum256(e.data[i:min(i+1<<20, len(e.data))])
				if !bytes.Contains(text, fmt.Appendf(nil, "\n%x\n", d)) {
					t.Errorf("the digest of the slice at %d is not kept", i)
				}
			}
			conformance.MustOK(t, e.Dropoff(e.c, "beta"))
			conformance.SameTree(t, "inbox", e.Inbox("beta", "alpha"), map[string][]byte{"big/file.bin": e.data})
			if log := e.log.String(); !strings.Contains(log, `verify="6 slices"`) || !strings.Contains(log, "kept_digests=true") {
				t.Errorf("the upload was not verified in slices against the kept digests")
			}
			// The object left the buffer with its delivery: the next
			// dropoff drops its digests, and a temporary file a killed
			// pickup left, but not one being written.
			dir := filepath.Dir(carrier.SliceSumsPath(e.c.Buffer(), sum))
			stale, fresh := filepath.Join(dir, ".tmp-1"), filepath.Join(dir, ".tmp-2")
			os.WriteFile(stale, nil, 0o600)
			os.WriteFile(fresh, nil, 0o600)
			old := time.Now().Add(-time.Hour)
			os.Chtimes(stale, old, old)
			e.c.Dropoff(context.Background(), e.Resolve("beta"))
			for p, want := range map[string]bool{carrier.SliceSumsPath(e.c.Buffer(), sum): false, stale: false, fresh: true} {
				if _, err := os.Stat(p); (err == nil) != want {
					t.Errorf("%s: present %v, want %v", filepath.Base(p), err == nil, want)
				}
			}
		})
	}
}

// The buffer's copy damaged after the pickup: the host's digest of the
// damaged slice differs from the one kept, nothing is delivered, and the
// kept digests are dropped; the next attempt hashes the copy and says it
// is damaged in the buffer.
func TestSliceSumsBufferDamaged(t *testing.T) {
	for _, h := range sliceHosts {
		t.Run(h.name, func(t *testing.T) {
			t.Parallel()
			e, sum := keptEnv(t, h.start, 4<<20+77, carrier.Options{})
			f, err := os.OpenFile(e.c.Buffer().ObjectPath(sum), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt([]byte{e.data[2<<20+5] ^ 1}, 2<<20+5); err != nil {
				t.Fatal(err)
			}
			f.Close()
			for _, want := range []string{"kept from its pickup", "damaged in the buffer"} {
				rs := e.Dropoff(e.c, "beta")
				if len(rs) != 1 || len(rs[0].Failed) != 1 || !strings.Contains(rs[0].Failed[0].Reason, want) {
					t.Fatalf("want a failure to verify (%s), got %s: %v", want, rs[0].Summary(), rs[0].Failed)
				}
				t.Logf("%s", rs[0].Failed[0].Reason)
				if got := e.Inbox("beta", "alpha"); len(got) != 0 {
					t.Fatalf("inbox holds %d files from a damaged copy", len(got))
				}
				if p := e.partials(); len(p) != 0 {
					t.Errorf("partial not removed: %v", p)
				}
			}
			if _, err := os.Stat(carrier.SliceSumsPath(e.c.Buffer(), sum)); err == nil {
				t.Errorf("the kept digests were not dropped after a mismatch")
			}
		})
	}
}

// Kept digests are a cache, never the only proof: a file that fails its
// own check is ignored (the copy is hashed and the file delivered); one
// that passes it but holds a wrong digest fails that upload, is dropped,
// and the next delivers.
func TestSliceSumsDamagedFile(t *testing.T) {
	e, sum := keptEnv(t, conformance.SSHD(false), 3<<20+1, carrier.Options{})
	p := carrier.SliceSumsPath(e.c.Buffer(), sum)
	text, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	// The second slice's digest, changed in its first hex digit.
	lines := strings.Split(string(text), "\n")
	lines[5] = string("0123456789abcdef"[(strings.IndexByte("0123456789abcdef", lines[5][0])+1)%16]) + lines[5][1:]
	torn := strings.Join(lines, "\n")
	i := strings.LastIndex(torn, "check ")
	resealed := fmt.Sprintf("%scheck %x\n", torn[:i], sha256.Sum256([]byte(torn[:i])))

	os.WriteFile(p, []byte(resealed), 0o600)
	rs := e.Dropoff(e.c, "beta")
	if len(rs) != 1 || len(rs[0].Failed) != 1 || !strings.Contains(rs[0].Failed[0].Reason, "kept from its pickup") {
		t.Fatalf("want a failure to verify against the wrong kept digest, got %s: %v", rs[0].Summary(), rs[0].Failed)
	}
	if got := e.Inbox("beta", "alpha"); len(got) != 0 {
		t.Fatalf("inbox holds %d files after a failed verification", len(got))
	}
	if _, err := os.Stat(p); err == nil {
		t.Errorf("the wrong kept digests were not dropped")
	}

	os.WriteFile(p, []byte(torn), 0o600)
	conformance.MustOK(t, e.Dropoff(e.c, "beta"))
	conformance.SameTree(t, "inbox", e.Inbox("beta", "alpha"), map[string][]byte{"big/file.bin": e.data})
	if !strings.Contains(e.log.String(), "kept_digests=false") {
		t.Errorf("the kept digests that fail their check were used")
	}
}

// Kept digests are those of the content they are named by: a digest file
// copied to another content's name (with that content's object holding
// the first content, both the same size) is ignored, the copy is hashed
// and found damaged, and nothing is delivered in that file's place.
func TestSliceSumsOtherContent(t *testing.T) {
	e := conformance.NewEnv(t, conformance.SSHD(false), "alpha", "beta")
	r := rand.New(rand.NewSource(7))
	files := map[string][]byte{"a.bin": make([]byte, 3<<20+1), "b.bin": make([]byte, 3<<20+1)}
	r.Read(files["a.bin"])
	r.Read(files["b.bin"])
	e.Outbox("alpha", "beta", files)
	c := e.Carrier(1<<30, carrier.Options{VerifySlice: 1 << 20})
	conformance.MustOK(t, c.Pickup(context.Background(), e.Resolve("alpha")))
	st, _ := carrier.ReadStatus(c.Buffer())
	sums := map[string]string{}
	for _, it := range st.Items {
		sums[it.Path] = it.Hash
	}
	a, b := sums["a.bin"], sums["b.bin"]
	if a == "" || b == "" {
		t.Fatalf("buffer holds %v", sums)
	}
	for _, p := range [][2]string{{c.Buffer().ObjectPath(a), c.Buffer().ObjectPath(b)}, {carrier.SliceSumsPath(c.Buffer(), a), carrier.SliceSumsPath(c.Buffer(), b)}} {
		text, err := os.ReadFile(p[0])
		if err != nil {
			t.Fatal(err)
		}
		os.Remove(p[1])
		if err := os.WriteFile(p[1], text, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rs := e.Dropoff(c, "beta")
	got := e.Inbox("beta", "alpha")
	if bytes.Equal(got["b.bin"], files["a.bin"]) {
		t.Fatalf("b.bin delivered with a.bin's content (the digests kept under b.bin's content name were a.bin's)")
	}
	if len(rs) != 1 || len(rs[0].Failed) != 1 || !strings.Contains(rs[0].Failed[0].Reason, "damaged in the buffer") {
		t.Fatalf("want b.bin to fail as damaged in the buffer, got %s: %v", rs[0].Summary(), rs[0].Failed)
	}
	conformance.SameTree(t, "inbox", got, map[string][]byte{"a.bin": files["a.bin"]})
}

// A dropoff of one host (as `messor watch` runs them) also drops the
// digests whose object left the buffer.
func TestSliceSumsDroppedByHostDropoff(t *testing.T) {
	e, sum := keptEnv(t, conformance.SSHD(false), 2<<20+9, carrier.Options{})
	r := e.c.DropoffHost(context.Background(), e.Resolve("beta")[0])
	if r.Err != nil || len(r.Failed) != 0 {
		t.Fatalf("dropoff: %s: %v %v", r.Summary(), r.Err, r.Failed)
	}
	conformance.SameTree(t, "inbox", e.Inbox("beta", "alpha"), map[string][]byte{"big/file.bin": e.data})
	if _, err := os.Stat(carrier.SliceSumsPath(e.c.Buffer(), sum)); err == nil {
		t.Errorf("the digests of a delivered object are still kept after its host's dropoff")
	}
}

// The buffer's copy cut short after the pickup (within the last slice, or
// slices before it): nothing is delivered, and the failure names the file
// and says its copy is damaged in the buffer, run after run.
func TestSliceSumsBufferTruncated(t *testing.T) {
	for _, size := range []int64{4<<20 + 10, 3 << 20} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			t.Parallel()
			e, sum := keptEnv(t, conformance.SSHD(false), 4<<20+77, carrier.Options{})
			p := e.c.Buffer().ObjectPath(sum)
			os.Chmod(p, 0o600)
			if err := os.Truncate(p, size); err != nil {
				t.Fatal(err)
			}
			for range 2 {
				rs := e.Dropoff(e.c, "beta")
				if len(rs) != 1 || len(rs[0].Failed) != 1 || !strings.Contains(rs[0].Failed[0].Reason, "damaged in the buffer") {
					t.Fatalf("want a failure saying the copy is damaged in the buffer, got %v", rs[0].Failed)
				}
				t.Logf("%s: %s", rs[0].Failed[0].Path, rs[0].Failed[0].Reason)
				if _, ok := e.Inbox("beta", "alpha")["big/file.bin"]; ok {
					t.Fatalf("a copy cut short was delivered")
				}
			}
		})
	}
}

// Digests that cannot be kept (their directory cannot be made, as on a
// full disk) cost nothing but the dropoff's read of the copy: the pickup
// and the dropoff succeed.
func TestSliceSumsCannotKeep(t *testing.T) {
	e := &sliceEnv{Env: conformance.NewEnv(t, conformance.SSHD(false), "alpha", "beta"), log: &syncBuffer{}}
	e.data = make([]byte, 2<<20+1)
	rand.New(rand.NewSource(3)).Read(e.data)
	e.Outbox("alpha", "beta", map[string][]byte{"big/file.bin": e.data})
	e.c = e.Carrier(1<<30, carrier.Options{VerifySlice: 1 << 20,
		Logger: slog.New(slog.NewTextHandler(e.log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	dir := filepath.Dir(carrier.SliceSumsPath(e.c.Buffer(), "x"))
	if err := os.WriteFile(dir, []byte("in the way"), 0o600); err != nil {
		t.Fatal(err)
	}
	conformance.MustOK(t, e.c.Pickup(context.Background(), e.Resolve("alpha")))
	conformance.MustOK(t, e.Dropoff(e.c, "beta"))
	conformance.SameTree(t, "inbox", e.Inbox("beta", "alpha"), map[string][]byte{"big/file.bin": e.data})
	if log := e.log.String(); !strings.Contains(log, "cannot keep the slice digests") || !strings.Contains(log, "kept_digests=false") {
		t.Errorf("the digests were kept, or the upload did not hash its copy:\n%s", log)
	}
}

// One content picked up from two hosts (a stock host, and an agent whose
// source check hashed the slices) under two paths: one object, its
// digests kept; damaged in the buffer, neither file is delivered, run
// after run (against the kept digests, then hashing the copy); repaired,
// both are.
func TestSliceSumsTwoSources(t *testing.T) {
	e := conformance.NewEnv(t, conformance.SSHD(false), "alpha", "beta")
	e.Start = conformance.Agent
	e.AddHost("gamma", true)
	data := make([]byte, 3<<20+5)
	rand.New(rand.NewSource(5)).Read(data)
	e.Outbox("alpha", "beta", map[string][]byte{"one.bin": data})
	e.Outbox("gamma", "beta", map[string][]byte{"two/one.bin": data})
	log := &syncBuffer{}
	c := e.Carrier(1<<30, carrier.Options{VerifySlice: 1 << 20, VerifySource: true,
		Logger: slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	conformance.MustOK(t, c.Pickup(context.Background(), e.Resolve("gamma", "alpha")))
	sum := fmt.Sprintf("%x", sha256.Sum256(data))
	if _, err := os.Stat(carrier.SliceSumsPath(c.Buffer(), sum)); err != nil {
		t.Fatalf("no digests kept: %v", err)
	}
	os.Chmod(c.Buffer().ObjectPath(sum), 0o600)
	f, err := os.OpenFile(c.Buffer().ObjectPath(sum), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{data[1<<20] ^ 4}, 1<<20)
	f.Close()
	for range 2 {
		rs := e.Dropoff(c, "beta")
		if len(rs) != 1 || len(rs[0].Failed) != 2 {
			t.Fatalf("want both files to fail, got %s: %v", rs[0].Summary(), rs[0].Failed)
		}
		for k := range e.Inbox("beta", "alpha") {
			if !strings.Contains(k, ".messor.part") {
				t.Fatalf("%s delivered from a damaged copy", k)
			}
		}
	}
	f, _ = os.OpenFile(c.Buffer().ObjectPath(sum), os.O_RDWR, 0)
	f.WriteAt(data[1<<20:1<<20+1], 1<<20)
	f.Close()
	conformance.MustOK(t, e.Dropoff(c, "beta"))
	conformance.SameTree(t, "alpha's", e.Inbox("beta", "alpha"), map[string][]byte{"one.bin": data})
	conformance.SameTree(t, "gamma's", e.Inbox("beta", "gamma"), map[string][]byte{"two/one.bin": data})
	if t.Failed() {
		t.Logf("carrier log:\n%s", log)
	}
}
