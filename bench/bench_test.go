package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/protocol"
)

// Hot paths reachable through exported APIs. The planner and the buffer
// index commit are unexported in carrier, so they are measured end to end
// by the command (go run ./bench) rather than here.

// BenchmarkSHA256_1MiB is the per-file hash the carrier computes while a
// file streams in, and again before upload.
func BenchmarkSHA256_1MiB(b *testing.B) {
	buf := make([]byte, 1<<20)
	rand.Read(buf)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		sha256.Sum256(buf)
	}
}

// BenchmarkSHA256Streaming hashes 1 MiB in 255 KiB writes, as pkg/sftp
// hands the carrier's writer the packets it reads.
func BenchmarkSHA256Streaming(b *testing.B) {
	buf := make([]byte, 255<<10)
	rand.Read(buf)
	b.SetBytes(4 * int64(len(buf)))
	for b.Loop() {
		h := sha256.New()
		for range 4 {
			h.Write(buf)
		}
		h.Sum(nil)
	}
}

func BenchmarkCheckName(b *testing.B) {
	names := []string{"IMG_0001.JPG", "a rather longer file name with spaces (2).tar.gz", "données-été.txt", ".messor-partial"}
	for b.Loop() {
		for _, n := range names {
			protocol.CheckName(n)
		}
	}
}

func BenchmarkCleanRelPath(b *testing.B) {
	paths := []string{
		"DCIM/100CANON/IMG_0001.JPG",
		"src/d01/e02/f000123.dat",
		"shared/user01/project02/vendor/lib003.so",
		strings.Repeat("deep/", 30) + "file.txt",
	}
	for b.Loop() {
		for _, p := range paths {
			if _, err := protocol.CleanRelPath(p); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkParseSize(b *testing.B) {
	for b.Loop() {
		if _, err := carrier.ParseSize("1.5GiB"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSSHCipher moves data over golang.org/x/crypto/ssh on loopback
// with each cipher, server and client in this process: the cipher's share
// of messor's throughput. The carrier negotiates the library's default
// order (aes128-gcm@openssh.com first).
func BenchmarkSSHCipher(b *testing.B) {
	for _, c := range []string{ssh.CipherAES128GCM, ssh.CipherChaCha20Poly1305, ssh.CipherAES128CTR} {
		b.Run(c, func(b *testing.B) { benchCipher(b, c) })
	}
}

func benchCipher(b *testing.B, cipher string) {
	_, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	hostSigner, err := ssh.NewSignerFromKey(hostPriv)
	if err != nil {
		b.Fatal(err)
	}
	srvCfg := &ssh.ServerConfig{NoClientAuth: true}
	srvCfg.AddHostKey(hostSigner)
	srvCfg.Ciphers = []string{cipher}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	const chunk = 1 << 20
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		_, chans, reqs, err := ssh.NewServerConn(conn, srvCfg)
		if err != nil {
			return
		}
		go ssh.DiscardRequests(reqs)
		for nc := range chans {
			ch, creqs, err := nc.Accept()
			if err != nil {
				return
			}
			go ssh.DiscardRequests(creqs)
			go func() {
				buf := make([]byte, chunk)
				for {
					if _, err := ch.Write(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	cfg := &ssh.ClientConfig{User: "bench", HostKeyCallback: ssh.FixedHostKey(hostSigner.PublicKey())}
	cfg.Ciphers = []string{cipher}
	client, err := ssh.Dial("tcp", ln.Addr().String(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	ch, reqs, err := client.OpenChannel("session", nil)
	if err != nil {
		b.Fatal(err)
	}
	go ssh.DiscardRequests(reqs)
	defer ch.Close()
	b.SetBytes(chunk)
	b.ResetTimer()
	for b.Loop() {
		if _, err := io.CopyN(io.Discard, ch, chunk); err != nil {
			b.Fatal(err)
		}
	}
}
