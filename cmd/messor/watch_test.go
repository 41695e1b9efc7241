package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/messor-sync/messor/discovery"
)

func TestWatchDestThatDoesNotResolve(t *testing.T) {
	home := t.TempDir()
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	os.WriteFile(filepath.Join(home, ".ssh", "config"), []byte("Host nas\n  Port 22x\n"), 0o600)
	cfg, err := discovery.LoadSSHConfig(home)
	if err != nil {
		t.Fatal(err)
	}
	var errb bytes.Buffer
	g := &globals{home: home, stderr: &errb, noMDNS: true}
	hs := &hostSet{cfg: cfg, browsed: make(chan struct{})}
	close(hs.browsed)
	dest := watchDest(g, hs)
	defer func() {
		if p := recover(); p != nil {
			t.Errorf("watch's dest lookup panics: %v (stderr: %s)", p, errb.String())
		}
	}()
	if _, ok := dest("nas"); ok {
		t.Error("a destination whose ssh config is bad resolved")
	}
}
