package agent

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math"
	"os"

	gliderssh "github.com/gliderlabs/ssh"
	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/protocol"
)

// hashRange answers protocol.HashRangeRequest: the SHA-256 of the first
// Length bytes of Path (a path as SFTP sees it), under the same confinement
// and reserved-name rules as SFTP. gliderlabs dispatches global requests
// only on connections that have logged in.
func (s *server) hashRange(ctx gliderssh.Context, _ *gliderssh.Server, req *ssh.Request) (bool, []byte) {
	var msg protocol.HashRangeMsg
	return s.answerHash(ctx, "hash-range", req.Payload, &msg, func() (string, uint64, uint64) { return msg.Path, 0, msg.Length })
}

// hashSlice answers protocol.HashSliceRequest: the SHA-256 of the Length
// bytes at Offset in Path, under the same rules as hashRange. A carrier asks
// for one slice of a big upload at a time, while it goes on.
func (s *server) hashSlice(ctx gliderssh.Context, _ *gliderssh.Server, req *ssh.Request) (bool, []byte) {
	var msg protocol.HashSliceMsg
	return s.answerHash(ctx, "hash-slice", req.Payload, &msg, func() (string, uint64, uint64) { return msg.Path, msg.Offset, msg.Length })
}

// hashBatch answers protocol.HashBatchRequest: per item, the SHA-256 of
// the first Length bytes of its Path under hashRange's rules, or an empty
// answer for an item hashRange would refuse or that asks for more than
// protocol.MaxHashBatchLength bytes (TestHashBatch). A carrier sends the small
// files its workers verify meanwhile in one such request.
func (s *server) hashBatch(ctx gliderssh.Context, _ *gliderssh.Server, req *ssh.Request) (bool, []byte) {
	if !s.begin() {
		return false, nil
	}
	defer s.wg.Done()
	remote := ctx.RemoteAddr().String()
	items, err := protocol.UnmarshalHashBatch(req.Payload)
	if err != nil {
		s.log.Info("hash-batch refused: bad request", "remote", remote, "err", err)
		return false, nil
	}
	cfs := newConfinedFS(s.root, s.log)
	sums := make([][]byte, len(items))
	for i, it := range items {
		if ctx.Err() != nil {
			return false, nil // the connection closed or the agent stops
		}
		if it.Length > protocol.MaxHashBatchLength {
			s.log.Info("hash-batch: item refused: longer than a batch item may ask", "remote", remote, "path", it.Path, "length", it.Length)
			continue
		}
		sum, err := hashFileRange(ctx, cfs, it.Path, 0, it.Length)
		if err != nil {
			s.log.Info("hash-batch: item refused", "remote", remote, "path", it.Path, "length", it.Length, "err", err)
			continue
		}
		sums[i] = sum
	}
	s.log.Debug("hash-batch answered", "remote", remote, "items", len(items))
	return true, protocol.MarshalHashBatchReply(sums)
}

// answerHash serves a hash request named what whose payload decodes into
// msg; at then tells the path, offset and length it asks for.
func (s *server) answerHash(ctx gliderssh.Context, what string, payload []byte, msg any, at func() (p string, off, n uint64)) (bool, []byte) {
	if !s.begin() {
		return false, nil
	}
	defer s.wg.Done()
	remote := ctx.RemoteAddr().String()
	if err := ssh.Unmarshal(payload, msg); err != nil {
		s.log.Info(what+" refused: bad request", "remote", remote, "err", err)
		return false, nil
	}
	p, off, n := at()
	sum, err := hashFileRange(ctx, newConfinedFS(s.root, s.log), p, off, n)
	if err != nil {
		s.log.Info(what+" refused", "remote", remote, "path", p, "offset", off, "length", n, "err", err)
		return false, nil
	}
	s.log.Debug(what+" answered", "remote", remote, "path", p)
	return true, sum
}

// hashFileRange returns the SHA-256 of the n bytes at off in the regular
// file at SFTP path p, or an error if the file ends before off+n.
func hashFileRange(ctx context.Context, c *confinedFS, p string, off, n uint64) ([]byte, error) {
	if n > math.MaxInt64 || off > math.MaxInt64-n {
		return nil, fmt.Errorf("hash %s: offset %d, length %d out of range", cleanSFTPPath(p), off, n)
	}
	f, err := c.openRegular("hash", p, os.O_RDONLY, false)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.f.Stat(); err != nil {
		return nil, fmt.Errorf("hash %s: %w", cleanSFTPPath(p), err)
	} else if uint64(fi.Size()) < off+n {
		return nil, fmt.Errorf("hash %s: file has %d bytes, fewer than %d", cleanSFTPPath(p), fi.Size(), off+n)
	}
	h := sha256.New()
	got, err := io.Copy(h, ctxReader{ctx, io.NewSectionReader(f.f, int64(off), int64(n))})
	if err != nil {
		return nil, fmt.Errorf("hash %s: %w", cleanSFTPPath(p), err)
	}
	if uint64(got) < n {
		return nil, fmt.Errorf("hash %s: file has %d bytes, fewer than %d", cleanSFTPPath(p), off+uint64(got), off+n)
	}
	return h.Sum(nil), nil
}

// ctxReader stops reading once ctx is done (the connection closed or the
// agent is shutting down).
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}
