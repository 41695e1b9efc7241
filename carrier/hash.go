package carrier

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/protocol"
)

// hashRange returns the SHA-256 of the first n bytes of the file at p
// (relative to the login directory), computed on the host where it can be
// (agent request, or a hash tool over exec), else by reading it back.
func (s *Session) hashRange(ctx context.Context, p string, n int64) ([]byte, error) {
	if s.HashKind(ctx) == "exec" && n < execHashMin {
		// Starting a process on the host (a login shell, profile and
		// all) costs more than reading a small file back.
		return s.readbackHash(ctx, p, n)
	}
	sum, err := s.hostHash(ctx, p, n)
	if errors.Is(err, errNoSession) {
		// No session free for a command (a host allowing fewer than
		// sshd's default 10): read it back instead.
		return s.readbackHash(ctx, p, n)
	}
	return sum, err
}

// hashPrefix is hashRange for checking a partial before resuming it: it
// uses the host's own hashing whatever the size, because reading a prefix
// back costs as many bytes as sending it again (and over a link that drops
// every few MiB, reading back a partial of that size never finishes, so the
// upload never grows). Where the host hashes for us it never falls back to
// reading back.
func (s *Session) hashPrefix(ctx context.Context, p string, n int64) ([]byte, error) {
	return s.hostHash(ctx, p, n)
}

// hostHash hashes the first n bytes of p the way HashKind says, on this
// lane (a lane's SFTP channel for reading back: every lane verifies on its
// own channel).
func (s *Session) hostHash(ctx context.Context, p string, n int64) ([]byte, error) {
	switch s.HashKind(ctx) {
	case "agent":
		return s.agentHash(ctx, p, n)
	case "exec":
		abs := path.Join(s.hashDir, p)
		return s.execHash(ctx, abs, protocol.HashCommand(s.hashTool, abs, n), n)
	}
	return s.readbackHash(ctx, p, n)
}

// execHashMin is the smallest range hashed by exec on a stock host; smaller
// ones are read back, which is cheaper than starting a shell there.
const execHashMin = 1 << 20

// HashKind says how this session verifies host files: "agent", "exec" or
// "readback".
func (s *Session) HashKind(ctx context.Context) string {
	s.hashOnce.Do(func() { s.pickHasher(ctx) })
	return s.hashKind
}

func (s *Session) pickHasher(ctx context.Context) {
	s.hashKind = "readback"
	if s.agent {
		s.hashKind = "agent"
		return
	}
	wd, err := s.sftp.Getwd()
	if err != nil || !strings.HasPrefix(wd, "/") {
		return
	}
	// Probe, in one exec: which of the hash tools work here, behind head
	// (which every hash command but the slice's cuts its input with)? One
	// line of output per tool, the best first, the last lines of the
	// output (see execLines).
	var probe []string
	for _, tool := range protocol.HashTools {
		probe = append(probe, "{ printf messorX | head -c 6 | "+tool+"; } 2>/dev/null; echo")
	}
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	out, err := s.execOutput(pctx, strings.Join(probe, "; "), 0)
	sum := sha256.Sum256([]byte("messor"))
	want := hex.EncodeToString(sum[:])
	lines := execLines(out, len(protocol.HashTools))
	for i, tool := range protocol.HashTools {
		if strings.HasPrefix(lines[i], want) {
			s.hashTool = tool
			break
		}
	}
	if s.hashTool == "" {
		s.log.Debug("no server-side hashing; verifying by reading back", "err", err)
		return
	}
	s.hashDir = wd
	s.hashKind = "exec"
}

// canHashSlices reports whether hashSlice works on s: on an agent that has
// not refused it, or on a stock host where a probe (once per session) shows
// that dd and head -c work together with the hash tool.
func (s *Session) canHashSlices(ctx context.Context) bool {
	switch s.HashKind(ctx) {
	case "agent":
		return !s.sliceRefused.Load()
	case "exec":
		s.sliceOnce.Do(func() {
			// "messor" in blocks of 2 bytes, skip one, take two: "ssor",
			// cut to 3 bytes: "sso".
			pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			defer cancel()
			out, err := s.execOutput(pctx, "printf messor | dd bs=2 skip=1 count=2 2>/dev/null | head -c 3 | "+s.hashTool, 0)
			sum := sha256.Sum256([]byte("sso"))
			s.execSlices = err == nil && strings.HasPrefix(execLines(out, 1)[0], hex.EncodeToString(sum[:]))
			if !s.execSlices {
				s.log.Debug("the host cannot hash a slice of a file (dd, head -c); verifying whole files", "err", err, "output", string(out))
			}
		})
		return s.execSlices
	}
	return false
}

// errSliceRefused: the agent refused a hash-slice request.
var errSliceRefused = errors.New("hash-slice refused by the agent")

// hashSlice returns the SHA-256 of the n bytes at off in the host file p
// (relative to the login directory), computed on the host: by the agent
// (protocol.HashSliceRequest), or on a stock host by an exec of
// protocol.HashRangeCommand, which reads whole blocks of
// protocol.HashBlock bytes when off is a multiple of it. It needs a session
// whose HashKind is "agent" or "exec". An agent's refusal is an error
// wrapping errSliceRefused, and marks the session (sliceRefused): an older
// agent, or a file that is not as long as it should be; either way the
// caller verifies the whole file instead. On a stock host a file that ends
// before off+n yields the digest of fewer bytes, which the caller's
// comparison rejects.
func (s *Session) hashSlice(ctx context.Context, p string, off, n int64) ([]byte, error) {
	switch s.HashKind(ctx) {
	case "agent":
		s.expectBusy(hashTime(n))
		ok, reply, err := s.ssh.SendRequest(s.sliceRequest, true, ssh.Marshal(protocol.HashSliceMsg{Path: p, Offset: uint64(off), Length: uint64(n)}))
		if err != nil {
			return nil, fmt.Errorf("host %s: hash %s (bytes %d to %d): %w", s.Host.Name, p, off, off+n, err)
		}
		if !ok || len(reply) != sha256.Size {
			s.sliceRefused.Store(true)
			return nil, fmt.Errorf("host %s: hash %s (bytes %d to %d): %w", s.Host.Name, p, off, off+n, errSliceRefused)
		}
		return reply, nil
	case "exec":
		abs := path.Join(s.hashDir, p)
		sum, err := s.execHash(ctx, abs, protocol.HashRangeCommand(s.hashTool, abs, off, n), n)
		if errors.Is(err, errNoSession) {
			// No session free for a command (sshd's MaxSessions): the
			// whole file is verified at the end instead.
			return nil, fmt.Errorf("host %s: hash %s (bytes %d to %d): %w: %w", s.Host.Name, p, off, off+n, errSliceRefused, err)
		}
		return sum, err
	}
	return nil, fmt.Errorf("host %s: hash %s: the host cannot hash for us", s.Host.Name, p)
}

// execHash runs cmd, which hashes n bytes of the file at abs on the host,
// and returns the digest it prints.
func (s *Session) execHash(ctx context.Context, abs, cmd string, n int64) ([]byte, error) {
	out, err := s.execOutput(ctx, cmd, hashTime(n))
	if err != nil {
		return nil, fmt.Errorf("host %s: hash %s: %w", s.Host.Name, abs, err)
	}
	line := execLines(out, 1)[0]
	if len(line) < 64 {
		return nil, fmt.Errorf("host %s: hash %s: short output %q", s.Host.Name, abs, line)
	}
	sum, err := hex.DecodeString(line[:64])
	if err != nil {
		return nil, fmt.Errorf("host %s: hash %s: output %q: %w", s.Host.Name, abs, line, err)
	}
	return sum, nil
}

// hashTime is how long a host may take to hash n bytes: generous (a slow SD
// card, other workers hashing too), and bounded.
func hashTime(n int64) time.Duration {
	return 30*time.Second + time.Duration(n/(5<<20))*time.Second
}

// expectBusy tells the idle watch that the host may be silent for d.
func (s *Session) expectBusy(d time.Duration) {
	until := time.Now().Add(d).UnixNano()
	for {
		cur := s.busyUntil.Load()
		if cur >= until || s.busyUntil.CompareAndSwap(cur, until) {
			return
		}
	}
}

func (s *Session) agentHash(ctx context.Context, p string, n int64) ([]byte, error) {
	// Global requests are answered in order, so while the agent hashes a
	// big file our keepalives wait behind it: give the idle watch a bound.
	s.expectBusy(hashTime(n))
	ok, reply, err := s.ssh.SendRequest(protocol.HashRangeRequest, true, ssh.Marshal(protocol.HashRangeMsg{Path: p, Length: uint64(n)}))
	if err != nil {
		return nil, fmt.Errorf("host %s: hash %s: %w", s.Host.Name, p, err)
	}
	if !ok || len(reply) != sha256.Size {
		return nil, fmt.Errorf("host %s: hash %s: refused by agent", s.Host.Name, p)
	}
	return reply, nil
}

func (s *Session) readbackHash(ctx context.Context, p string, n int64) ([]byte, error) {
	f, err := s.sftp.Open(p)
	if err != nil {
		return nil, fmt.Errorf("host %s: read back %s: %w", s.Host.Name, p, err)
	}
	defer f.Close()
	h := sha256.New()
	m, err := io.Copy(h, io.LimitReader(f, n))
	if err != nil {
		return nil, fmt.Errorf("host %s: read back %s: %w", s.Host.Name, p, err)
	}
	if m != n {
		return nil, fmt.Errorf("host %s: read back %s: %d bytes, want %d", s.Host.Name, p, m, n)
	}
	return h.Sum(nil), nil
}
