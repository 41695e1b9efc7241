// Package demo is `messor demo`: messor's whole job on an embedded default.
// Two agents on loopback in a temporary directory, example files in their
// outboxes, a carrier that picks them up and drops them off, and a short
// account of what moved. No setup, no root, no network beyond loopback.
package demo

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	mrand "math/rand"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/agent"
	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/discovery"
	"github.com/messor-sync/messor/protocol"
)

// Options for Run.
type Options struct {
	Dir  string // where to build the demo (default: a new temporary dir)
	Keep bool   // keep the directory afterwards
	Out  io.Writer
}

type host struct {
	name string
	root string // its messor directory
	addr *net.TCPAddr
	key  ssh.PublicKey
}

// Run performs the demo and prints the account to opts.Out. It returns an
// error if any file failed to arrive intact.
func Run(ctx context.Context, opts Options) (err error) {
	out := opts.Out
	if out == nil {
		out = io.Discard
	}
	dir := opts.Dir
	if dir == "" {
		dir, err = os.MkdirTemp("", "messor-demo-")
		if err != nil {
			return fmt.Errorf("demo: %w", err)
		}
	}
	if opts.Keep {
		defer fmt.Fprintf(out, "\nkept everything in %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// The carrier's key.
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return err
	}
	keyFile := filepath.Join(dir, "carrier", "id_ed25519")
	block, err := ssh.MarshalPrivateKey(priv, "messor demo carrier")
	if err != nil {
		return err
	}
	if err := writeFile(keyFile, pem.EncodeToMemory(block), 0o600); err != nil {
		return err
	}
	authKeys := filepath.Join(dir, "carrier", "authorized_keys")
	if err := writeFile(authKeys, ssh.MarshalAuthorizedKey(signer.PublicKey()), 0o600); err != nil {
		return err
	}

	// Two hosts, each running an agent on loopback.
	var hosts []*host
	done := make(chan error, 2)
	for _, name := range []string{"lighthouse", "orchard"} {
		h := &host{name: name, root: filepath.Join(dir, name, "messor")}
		a, err := agent.New(agent.Config{
			Root: h.root, Name: name, AuthorizedKeysFile: authKeys,
			HostKeyFile: filepath.Join(dir, name, "host_key"),
		})
		if err != nil {
			return fmt.Errorf("demo: agent %s: %w", name, err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("demo: agent %s: %w", name, err)
		}
		h.addr, h.key = ln.Addr().(*net.TCPAddr), a.HostKey()
		go func() { done <- a.Serve(ctx, ln) }()
		hosts = append(hosts, h)
	}
	defer func() {
		cancel()
		<-done
		<-done
	}()

	// Example files waiting in each outbox for the other host.
	sent := map[string]map[string][]byte{ // "src->dst" -> files
		"lighthouse->orchard": exampleFiles(1, "lighthouse"),
		"orchard->lighthouse": exampleFiles(2, "orchard"),
	}
	old := time.Now().Add(-time.Minute)
	for route, files := range sent {
		src, dst, _ := strings.Cut(route, "->")
		for p, b := range files {
			f := filepath.Join(dir, src, "messor", "outbox", dst, filepath.FromSlash(p))
			if err := writeFile(f, b, 0o644); err != nil {
				return err
			}
			os.Chtimes(f, old, old)
		}
	}

	// The carrier: its buffer, and the two hosts with their keys pinned.
	known := filepath.Join(dir, "carrier", "known_hosts")
	var dh []discovery.Host
	for _, h := range hosts {
		d := discovery.Host{
			Name: h.name, HostName: "127.0.0.1", Port: h.addr.Port, User: "demo",
			IdentityFiles: []string{keyFile}, KnownHostsFiles: []string{known},
			Source: discovery.SourceHostsFile, Agent: true,
		}
		if err := carrier.AppendKnownHost(known, d.KnownHostsName(), h.key); err != nil {
			return err
		}
		dh = append(dh, d)
	}
	buf, err := carrier.OpenBuffer(filepath.Join(dir, "carrier", "buffer"), 256<<20)
	if err != nil {
		return err
	}
	defer buf.Close()
	c := carrier.New(buf, carrier.Options{Settle: -1, VerifySource: true})

	fmt.Fprintf(out, "messor demo: two hosts with agents on loopback, in %s\n", dir)
	for _, h := range hosts {
		fmt.Fprintf(out, "  %-10s %s  key %s\n", h.name, h.addr, ssh.FingerprintSHA256(h.key))
	}
	for _, route := range sortedKeys(sent) {
		src, dst, _ := strings.Cut(route, "->")
		fmt.Fprintf(out, "  %s/messor/outbox/%s/ holds %d files (%s)\n", src, dst, len(sent[route]), carrier.FormatSize(total(sent[route])))
	}

	start := time.Now()
	fmt.Fprintln(out, "\n1. the carrier visits both hosts and picks up (the outboxes empty as files are committed):")
	failed := false
	for _, r := range c.Pickup(ctx, dh) {
		fmt.Fprintln(out, "  ", r.Summary())
		failed = failed || r.Failure()
	}
	st, err := carrier.ReadStatus(buf)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "   buffer: %d files, %s stored for %s of files (identical content is kept once)\n",
		st.Files, carrier.FormatSize(st.Stored), carrier.FormatSize(st.Bytes))
	fmt.Fprintln(out, "\n2. the carrier reaches each destination and drops off (partial, fsync, verify, rename):")
	reports, err := c.Dropoff(ctx, dh)
	if err != nil {
		return err
	}
	for _, r := range reports {
		fmt.Fprintln(out, "  ", r.Summary())
		failed = failed || r.Failure()
	}
	elapsed := time.Since(start)

	fmt.Fprintln(out, "\n3. checking every delivered file against what was sent (SHA-256):")
	var files int
	var bytesMoved int64
	for _, route := range sortedKeys(sent) {
		src, dst, _ := strings.Cut(route, "->")
		inbox := filepath.Join(dir, dst, "messor", "inbox", src)
		got, err := readTree(inbox)
		if err != nil {
			return err
		}
		ok := 0
		for p, want := range sent[route] {
			if g, found := got[p]; found && bytes.Equal(g, want) {
				ok++
			} else {
				fmt.Fprintf(out, "   MISSING OR DIFFERENT: %s -> %s: %s\n", src, dst, p)
				failed = true
			}
		}
		left, _ := readTree(filepath.Join(dir, src, "messor", "outbox", dst))
		files += ok
		bytesMoved += total(sent[route])
		fmt.Fprintf(out, "   %s -> %s: %d/%d files verified in %s/messor/inbox/%s/, %d left in the outbox\n",
			src, dst, ok, len(sent[route]), dst, src, len(left))
	}
	st, _ = carrier.ReadStatus(buf)
	fmt.Fprintf(out, "\n%d files, %s moved in %s, every byte verified; buffer now holds %d files.\n",
		files, carrier.FormatSize(bytesMoved), elapsed.Round(time.Millisecond), st.Files)
	if failed {
		return fmt.Errorf("demo: some files did not arrive intact")
	}
	return nil
}

func exampleFiles(seed int64, from string) map[string][]byte {
	r := mrand.New(mrand.NewSource(seed))
	photo := make([]byte, 3<<20)
	r.Read(photo)
	notes := make([]byte, 200_000)
	r.Read(notes)
	return map[string][]byte{
		"hello.txt":                         []byte("Greetings from " + from + ", carried by messor.\n"),
		"photos/2026-11 harbour.jpg":        photo,
		"photos/same photo, other name.jpg": photo,
		"notes/café menu ünïcode.md":        []byte("# Menu\n\n- soup\n- bread\n"),
		"notes/field data.bin":              notes,
		"empty file":                        {},
	}
}

func total(m map[string][]byte) int64 {
	var n int64
	for _, b := range m {
		n += int64(len(b))
	}
	return n
}

func sortedKeys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func writeFile(p string, b []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	return os.WriteFile(p, b, mode)
}

// readTree reads the regular files under dir, skipping messor's own.
func readTree(dir string) (map[string][]byte, error) {
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		if !d.Type().IsRegular() || strings.HasPrefix(d.Name(), protocol.ReservedPrefix) {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out[filepath.ToSlash(rel)] = b
		return nil
	})
	return out, err
}
