package carrier

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// helperCommand is what the exec helper's session runs: a POSIX shell
// reading commands from its standard input, so that a login shell starts
// once per connection, not once per command.
const helperCommand = "exec sh -s"

// errHelperDead: the exec helper's session ended (killed, the host closed
// it, a reply that cannot be read); its commands go to one session each.
var errHelperDead = errors.New("exec helper gone")

// execHelper is one long-lived shell on a stock host running the carrier's
// commands one at a time (run). Each command's reply ends with a line of
// its own, "<marker> <seq> <status>", where the marker is random per
// helper: a login banner, a profile's output or a file's bytes cannot make
// one up, so nothing but the command's end is taken for a reply.
type execHelper struct {
	turn   chan struct{} // held by the command in flight
	sess   *ssh.Session
	stdin  io.WriteCloser
	out    *bufio.Reader
	marker string
	seq    int
	free   func() // gives back the exec slot the helper holds

	mu   sync.Mutex
	dead error // why the helper is gone; nil while it runs
}

// startHelper opens the helper's session on s, holding one of the
// session's exec slots while it lives. Whether the host runs it is known
// only from the first reply (run): a restricted key answers with an SFTP
// server, or nothing.
func (s *Session) startHelper(ctx context.Context) (*execHelper, error) {
	select {
	case s.execs <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	var once sync.Once
	free := func() { once.Do(func() { <-s.execs }) }
	sess, err := s.ssh.NewSession()
	if err != nil {
		free()
		return nil, err
	}
	// A host that never answers the exec request must not hang us.
	stop := context.AfterFunc(ctx, func() { sess.Close() })
	defer stop()
	stdin, err := sess.StdinPipe()
	if err == nil {
		var stdout io.Reader
		if stdout, err = sess.StdoutPipe(); err == nil {
			if err = sess.Start(helperCommand); err == nil && stop() {
				var m [16]byte
				rand.Read(m[:])
				return &execHelper{turn: make(chan struct{}, 1), sess: sess, stdin: stdin,
					out: bufio.NewReaderSize(lifeReader{r: stdout, sh: &s.sftpShared}, 4096), marker: "messor-" + hex.EncodeToString(m[:]), free: free}, nil
			}
		}
	}
	sess.Close()
	free()
	if err == nil {
		err = ctx.Err()
	}
	return nil, err
}

// run runs cmd in the helper and returns (the last 4 KiB of) what it
// printed, as execOutput does; a command that exits non-zero is an error.
// timeout, if positive, bounds the run once it is the helper's turn. When
// ctx ends or the timeout passes with the command in flight, or the
// session ends, the helper is closed (its shell's state is unknown) and
// the error wraps errHelperDead unless ctx ended.
func (h *execHelper) run(ctx context.Context, cmd string, timeout time.Duration) ([]byte, error) {
	select {
	case h.turn <- struct{}{}:
		defer func() { <-h.turn }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if err := ctx.Err(); err != nil {
		// Ended before the command was sent (the select may take the
		// turn even so): the helper stays up (TestHelperRunAfterCancel).
		return nil, err
	}
	if err := h.gone(); err != nil {
		return nil, err
	}
	parent := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	stop := context.AfterFunc(ctx, func() { h.close(fmt.Errorf("%w: %w", errHelperDead, ctx.Err())) })
	defer stop()
	h.seq++
	end := h.marker + " " + strconv.Itoa(h.seq) + " "
	// The command runs in a subshell (an exit, a cd or a variable stays
	// there), reads nothing of the helper's input (the commands after
	// it), and its output is followed by a newline so that the marker
	// starts a line of its own.
	line := "( echo; " + cmd + " ) </dev/null; printf '\\n%s %s\\n' '" + end[:len(end)-1] + "' \"$?\"\n"
	// The exchange runs on its own: closing the session (ctx's end) does
	// not end a read until the host closes its side, which it may do
	// only once the command ends. The helper is closed by then, so the
	// exchange left behind touches nothing another command uses.
	type reply struct {
		out []byte
		err error
	}
	done := make(chan reply, 1)
	go func() {
		out, err := h.exchange(line, end)
		done <- reply{out, err}
	}()
	select {
	case r := <-done:
		if r.err != nil && !errors.As(r.err, new(*helperExitError)) {
			return nil, h.fail(ctx, r.err)
		}
		return r.out, r.err
	case <-ctx.Done():
		err := h.fail(ctx, ctx.Err())
		if parent.Err() == nil {
			// Our own bound, not the caller's end: a command that
			// never answers (a hash tool stuck on a dead disk).
			err = fmt.Errorf("no reply within %v: %w", timeout, err)
		}
		return nil, err
	}
}

// exchange sends line to the helper and reads its reply, which ends with
// a line beginning with end.
func (h *execHelper) exchange(line, end string) ([]byte, error) {
	if _, err := io.WriteString(h.stdin, line); err != nil {
		return nil, err
	}
	tail := &tailWriter{n: 4096}
	atStart := true // the next piece read begins a line
	for {
		l, err := h.out.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
		if rest, ok := strings.CutPrefix(string(l), end); ok && atStart && err == nil {
			status, err := strconv.Atoi(strings.TrimSpace(rest))
			if err != nil {
				return nil, fmt.Errorf("reply %q", l)
			}
			out := strings.TrimSuffix(string(tail.b), "\n") // the newline before the marker
			if status != 0 {
				return []byte(out), &helperExitError{Status: status}
			}
			return []byte(out), nil
		}
		tail.Write(l)
		atStart = err == nil
	}
}

// helperExitError: a command run by the helper exited with Status.
type helperExitError struct{ Status int }

func (e *helperExitError) Error() string { return fmt.Sprintf("exit status %d", e.Status) }

// fail closes the helper after err broke a command in flight, and says
// why: ctx's end, or errHelperDead.
func (h *execHelper) fail(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		h.close(fmt.Errorf("%w: %w", errHelperDead, ctx.Err()))
		return ctx.Err()
	}
	h.close(fmt.Errorf("%w: %w", errHelperDead, err))
	return h.gone()
}

func (h *execHelper) gone() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.dead
}

// close ends the helper's session for reason (once) and gives its exec
// slot back.
func (h *execHelper) close(reason error) {
	h.mu.Lock()
	first := h.dead == nil
	if first {
		h.dead = reason
	}
	h.mu.Unlock()
	if first {
		h.sess.Close()
		h.free()
	}
}
