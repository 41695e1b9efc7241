package carrier

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// maxExecs is how many commands a session runs on a stock host at once: one
// per big upload's outstanding slice hash and resume check. With maxLanes
// SFTP channels that is one session less than sshd's default MaxSessions
// (10): sshd frees a session's slot only after the client's close has been
// handled, and a command started right after another ended was refused
// about one time in three when the budget was exactly 10 (found in
// review). A host allowing fewer sessions refuses some; execOutput waits
// and tries again, then the caller verifies another way.
const maxExecs = 10 - maxLanes - 1

// errNoSession: the host refused a session for a command (sshd's
// MaxSessions), several times.
var errNoSession = errors.New("no session free on the host for a command")

// execOutput runs cmd on the host and returns (the last 4 KiB of) its
// output, on a line of its own: a login shell may print a banner first, with
// or without a newline (see execLines). It waits for one of the session's exec slots first; timeout, if
// positive, bounds the run from then on. A session the host refuses is
// asked for again, about a second in all.
func (s *Session) execOutput(ctx context.Context, cmd string, timeout time.Duration) ([]byte, error) {
	return s.execOutputTries(ctx, cmd, timeout, 10)
}

// execOutputTries is execOutput asking for a session at most tries times.
func (s *Session) execOutputTries(ctx context.Context, cmd string, timeout time.Duration, tries int) ([]byte, error) {
	select {
	case s.execs <- struct{}{}:
		defer func() { <-s.execs }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	var sess *ssh.Session
	for try := 1; ; try++ {
		var err error
		sess, err = s.ssh.NewSession()
		var refused *ssh.OpenChannelError
		if err == nil {
			break
		}
		if !errors.As(err, &refused) {
			return nil, err
		}
		if try >= tries {
			return nil, fmt.Errorf("%w: %w", errNoSession, err)
		}
		// A slot may be freed by a command that just ended (about a
		// second in all before giving up).
		select {
		case <-time.After(time.Duration(try) * 25 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	defer sess.Close()
	stop := context.AfterFunc(ctx, func() { sess.Close() })
	defer stop()
	out := &tailWriter{n: 4096}
	sess.Stdout = out
	// Closing the session (ctx's end) does not end Run until the host
	// closes its side, which it may do only once the command ends: the
	// run is left behind then, holding nothing but its closed session.
	done := make(chan error, 1)
	go func() { done <- sess.Run("echo; " + cmd) }()
	select {
	case err := <-done:
		return out.b, err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// execLines returns the last n lines of a command's output (padded with
// empty ones at the front): what the command printed, not what a login
// shell or its profile printed before it.
func execLines(out []byte, n int) []string {
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	for len(lines) < n {
		lines = append([]string{""}, lines...)
	}
	return lines[len(lines)-n:]
}

// tailWriter keeps the last n bytes written to it.
type tailWriter struct {
	b []byte
	n int
}

func (w *tailWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	if len(w.b) > w.n {
		w.b = append(w.b[:0], w.b[len(w.b)-w.n:]...)
	}
	return len(p), nil
}
