package main

import (
	"bytes"
	"strings"
	"sync"
	"testing"
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
	if !strings.Contains(out.String(), "pickup alpha (3 files)") {
		t.Errorf("progress output lacks the host and count: %q", out.String())
	}
	// One unit family with the summaries (FormatSize): MiB, never MB.
	if !strings.Contains(out.String(), "MiB") || strings.Contains(out.String(), " MB") {
		t.Errorf("progress output is not in MiB: %q", out.String())
	}
}
