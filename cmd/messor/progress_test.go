package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/protocol"
)

func TestBarProgress(t *testing.T) {
	var out bytes.Buffer
	p := &barProgress{w: &out}
	tr := p.Start("alpha", "pickup", 3, 3<<20)
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 16; j++ {
				tr.Add(64 << 10)
			}
		}()
	}
	wg.Wait()
	tr.Done()
	if !strings.Contains(out.String(), "pickup alpha 0/3 files") {
		t.Errorf("progress output lacks the host and count: %q", out.String())
	}
	// One unit family with the summaries (FormatSize): MiB, never MB.
	if !strings.Contains(out.String(), "MiB") || strings.Contains(out.String(), " MB") {
		t.Errorf("progress output is not in MiB: %q", out.String())
	}
}

// The bar counts files, shows resumed bytes as resumed (not as moved now,
// which would make the rate and ETA lie), and says when the last bytes are
// sent and the host is verifying.
func TestBarFilesResumedVerifying(t *testing.T) {
	var out bytes.Buffer
	p := &barProgress{w: &out}
	tr := p.Start("beta", "dropoff", 3, 3<<20)
	tr.Resumed(1 << 20)
	tr.Add(1 << 20)
	tr.FileDone()
	tr.Add(1 << 20)
	tr.FileDone()
	bt := tr.(*barTracker)
	bt.mu.Lock()
	desc := bt.desc
	bt.mu.Unlock()
	tr.Done()
	for _, want := range []string{"dropoff beta 2/3 files", "1.0 MiB resumed", "verifying on host"} {
		if !strings.Contains(desc, want) {
			t.Errorf("bar says %q, want %q in it", desc, want)
		}
	}
}

// On a terminal, a resumed upload shows its resumed bytes as resumed.
func TestBarShowsResumedUpload(t *testing.T) {
	bin := buildMessor(t)
	data := make([]byte, 3<<20)
	rand.New(rand.NewSource(1)).Read(data)
	w := carrying(t, map[string][]byte{"big.bin": data}, "alpha", "beta")
	ctx := context.Background()
	_, out, _ := w.messor(ctx, "status", "--json")
	var st carrier.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil || len(st.Items) != 1 {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	id, err := os.ReadFile(filepath.Join(w.home.Dir, ".local", "share", "messor", "buffer", "id"))
	if err != nil {
		t.Fatal(err)
	}
	// What an interrupted dropoff left: the first 2 MiB in the partial.
	inbox := filepath.Join(w.dirs["beta"], "messor", "inbox", "alpha")
	os.MkdirAll(inbox, 0o755)
	partial := filepath.Join(inbox, protocol.PartialName("big.bin", st.Items[0].Hash, strings.TrimSpace(string(id))))
	if err := os.WriteFile(partial, data[:2<<20], 0o644); err != nil {
		t.Fatal(err)
	}
	term, err := onTerminal(t, "", bin, "--settle", "0", "dropoff")
	if err != nil || !strings.Contains(term, "dropoff: beta: delivered 1 file(s)") || !strings.Contains(term, "2.0 MiB resumed") {
		t.Fatalf("dropoff on a terminal: %v\n%q", err, term)
	}
}
