package faults

import (
	"context"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/internal/conformance"
	"github.com/messor-sync/messor/internal/flaky"
	"github.com/messor-sync/messor/internal/sshdtest"
)

// TestOddExecHosts: hosts that run commands, but not as the carrier's hash
// commands expect: a login shell printing a banner to standard output
// (with or without a newline, after a pause), or no head(1). A download and
// an upload, each cut part way, are resumed and finish within two more
// runs, nothing lost: the carrier reads such a host's digests right or
// does without them, never takes a banner or the digest of nothing for the
// file's.
func TestOddExecHosts(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	noHead := t.TempDir()
	for _, tool := range []string{"sh", "openssl", "sha256sum", "dd", "cat", "sleep"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Fatalf("%s: %v", tool, err)
		}
		if err := os.Symlink(p, filepath.Join(noHead, tool)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name, login string
		kind        carrier.HashKind
	}{
		{"Banner", `echo "Welcome to $(uname -n)"`, carrier.HashByCommand},
		{"SlowBannerNoNewline", `sleep 0.2; printf 'Last login: yesterday'`, carrier.HashByCommand},
		{"LongBanner", `i=0; while [ $i -lt 300 ]; do echo "line $i of the message of the day"; i=$((i+1)); done`, carrier.HashByCommand},
		{"NoHead", "PATH=" + noHead + "; export PATH", carrier.HashByReadback},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // each with its own hosts
			start := func(t *testing.T, dir string, keys []ssh.PublicKey) conformance.Host {
				s := sshdtest.Start(t, sshdtest.Options{LoginDir: dir, AuthorizedKeys: keys, LoginScript: tc.login})
				return linkHost{s: s, p: flaky.New(t, s.Addr)}
			}
			e := &env{Env: conformance.NewEnv(t, start, "alpha", "beta")}
			e.world = NewWorld(e.Dirs, e.Buf)
			ctx := context.Background()
			signers := func() ([]ssh.Signer, error) { return []ssh.Signer{e.Home.Key}, nil }
			s, err := carrier.Dial(ctx, e.Resolve("beta")[0], ssh.InsecureIgnoreHostKey(), signers, 10*time.Second, nil)
			if err != nil {
				t.Fatal(err)
			}
			if k := s.HashKind(ctx); k != tc.kind {
				t.Errorf("hash kind %s, want %s", k, tc.kind)
			}
			s.Close()
			r := rand.New(rand.NewSource(5))
			e.send("alpha", "beta", map[string][]byte{"img/a.bin": randBytes(r, 3<<20+5)})
			c := e.carrier(1<<30, carrier.Options{})
			for _, leg := range []struct {
				host string
				run  func() []*carrier.HostReport
			}{
				{"alpha", func() []*carrier.HostReport { return c.Pickup(ctx, e.Resolve("alpha")) }},
				{"beta", func() []*carrier.HostReport { rs, _ := c.Dropoff(ctx, e.Resolve("beta")); return rs }},
			} {
				p := e.proxy(leg.host)
				p.CutAfter(1 << 20)
				leg.run()
				e.world.Check(t, c.Buffer())
				p.CutAfter(0)
				for range 2 {
					if err = reportsErr(leg.run()); err == nil {
						break
					}
				}
				if err != nil {
					t.Fatalf("%s: not carried in two runs after the cut: %v", leg.host, err)
				}
			}
			e.world.CheckSettled(t, c.Buffer())
		})
	}
}
