package carrier

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/discovery"
)

// A host's route (discovery.Host.ProxyJump, ProxyCommand) is how the
// connection its SSH handshake runs over is made: a TCP connection; a
// ProxyCommand's standard input and output; or, through a chain of jump
// hosts, a direct-tcpip channel from the last one. Each jump host is
// logged in to like any host: its own user and keys, and its host key
// checked by the same policy (an unknown jump host is refused with its
// fingerprint, as any host). Everything on the way is bounded by the
// context given to dialRoute, and closed with the connection.

// hopPolicy returns the host key check for a jump host.
type hopPolicy func(hop discovery.Host) ssh.HostKeyCallback

// routeConn is a connection made along a route: Conn is what the host's
// SSH handshake runs over; base is the connection at the bottom (the TCP
// connection to the first hop, or the ProxyCommand's pipes), which takes
// the deadlines for everything above it (an SSH channel takes none). Close
// closes the lot.
type routeConn struct {
	net.Conn
	base    net.Conn
	clients []*ssh.Client // jump hosts, first hop first
	once    sync.Once
}

func (c *routeConn) SetDeadline(t time.Time) error      { return c.base.SetDeadline(t) }
func (c *routeConn) SetReadDeadline(t time.Time) error  { return c.base.SetReadDeadline(t) }
func (c *routeConn) SetWriteDeadline(t time.Time) error { return c.base.SetWriteDeadline(t) }

// Close closes the connection at the bottom first: closing a channel
// above it sends a message, which on a stalled link would wait forever.
func (c *routeConn) Close() error {
	var err error
	c.once.Do(func() {
		err = c.base.Close()
		for i := len(c.clients) - 1; i >= 0; i-- {
			c.clients[i].Close()
		}
		if c.Conn != c.base {
			c.Conn.Close()
		}
	})
	return err
}

// dialRoute connects to h along its route within ctx (whose deadline
// bounds the whole chain, and whose end cuts it).
func dialRoute(ctx context.Context, h discovery.Host, hops hopPolicy, log *slog.Logger) (net.Conn, error) {
	switch {
	case h.ProxyCommand != "":
		return dialCommand(ctx, h, log)
	case len(h.ProxyJump) > 0:
		return dialJumps(ctx, h, hops, log)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", h.Addr())
	if err != nil {
		return nil, &UnreachableError{Host: h.Name, Addr: h.Addr(), Err: err}
	}
	return conn, nil
}

// dialJumps logs in to each jump host in turn, each through the one
// before (the first along its own route), and has the last open a channel
// to h.
func dialJumps(ctx context.Context, h discovery.Host, hops hopPolicy, log *slog.Logger) (net.Conn, error) {
	first := h.ProxyJump[0]
	conn, err := dialRoute(ctx, first, hops, log)
	if err != nil {
		return nil, viaErr(h, first, err)
	}
	rc, ok := conn.(*routeConn)
	if !ok {
		rc = &routeConn{Conn: conn, base: conn}
	}
	if dl, ok := ctx.Deadline(); ok {
		rc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { rc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	for i, hop := range h.ProxyJump {
		client, err := loginHop(rc.Conn, hop, hops(hop), log)
		if err != nil {
			rc.Close()
			return nil, viaErr(h, hop, err)
		}
		rc.clients = append(rc.clients, client)
		next := h
		if i+1 < len(h.ProxyJump) {
			next = h.ProxyJump[i+1]
		}
		ch, err := client.Dial("tcp", next.Addr())
		if err != nil {
			rc.Close()
			return nil, channelErr(ctx, h, hop, next, err)
		}
		rc.Conn = ch
	}
	return rc, nil
}

// loginHop runs the SSH handshake with a jump host over conn and logs in.
func loginHop(conn net.Conn, hop discovery.Host, policy ssh.HostKeyCallback, log *slog.Logger) (*ssh.Client, error) {
	signers, done := Signers(hop, log)
	defer done()
	c, chans, reqs, err := ssh.NewClientConn(conn, hop.Addr(), &ssh.ClientConfig{
		User:            hop.User,
		Auth:            []ssh.AuthMethod{ssh.PublicKeysCallback(signers)},
		HostKeyCallback: policy,
	})
	if err != nil {
		return nil, handshakeErr(hop, err)
	}
	return ssh.NewClient(c, chans, reqs), nil
}

// viaErr is the error for h when the jump host hop failed: unreachable
// when hop is, else hop's error (an unknown key names hop, and how to
// trust it).
func viaErr(h, hop discovery.Host, err error) error {
	var ue *UnreachableError
	if errors.As(err, &ue) {
		return &UnreachableError{Host: h.Name, Addr: h.Addr(), Err: fmt.Errorf("jump host %s: %w", hop.Name, err)}
	}
	return fmt.Errorf("host %s (%s): %w", h.Name, h.Route(), err)
}

// channelErr is the error for h when the jump host hop could not open a
// channel to next: unreachable when the connection failed there, else a
// refusal (sshd's AllowTcpForwarding, PermitOpen).
func channelErr(ctx context.Context, h, hop, next discovery.Host, err error) error {
	var oe *ssh.OpenChannelError
	if ctx.Err() != nil || (errors.As(err, &oe) && oe.Reason == ssh.ConnectionFailed) || !errors.As(err, &oe) {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return &UnreachableError{Host: h.Name, Addr: h.Addr(), Err: fmt.Errorf("from jump host %s to %s: %w", hop.Name, next.Addr(), err)}
	}
	return fmt.Errorf("host %s (%s): jump host %s refused to connect to %s: %w (does its sshd allow TCP forwarding?)", h.Name, h.Route(), hop.Name, next.Addr(), err)
}

// handshakeErr types a failed SSH handshake with h.
func handshakeErr(h discovery.Host, err error) error {
	var uk *UnknownHostKeyError
	var ck *ChangedHostKeyError
	var pe *ProxyCommandError
	switch {
	case errors.As(err, &pe) && errors.Is(pe, io.EOF):
		return &UnreachableError{Host: h.Name, Addr: h.Addr(), Err: pe}
	case errors.As(err, &pe):
		return pe
	case errors.As(err, &uk):
		return uk
	case errors.As(err, &ck):
		return ck
	case strings.Contains(err.Error(), "unable to authenticate") || tooManyTries(err):
		return &AuthError{Host: h.Name, User: h.User, Err: err}
	case isTimeout(err) || errors.Is(err, io.EOF):
		return &UnreachableError{Host: h.Name, Addr: h.Addr(), Err: err}
	}
	return fmt.Errorf("host %s (%s): ssh: %w", h.Name, h.Addr(), err)
}

// dialCommand starts h's ProxyCommand with /bin/sh; its standard input and
// output are the connection, and what it writes to standard error is kept
// for messages.
func dialCommand(ctx context.Context, h discovery.Host, log *slog.Logger) (net.Conn, error) {
	line := h.ProxyCommandLine()
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	// "exec": the command itself, not a shell, is the process killed on
	// Close (as OpenSSH runs it).
	cmd := exec.Command("/bin/sh", "-c", "exec "+line)
	pc := &cmdConn{r: outR, w: inW, cmd: cmd, done: make(chan struct{}), host: h.Name, line: line, log: log}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, &pc.stderr
	cmd.WaitDelay = time.Second
	err = cmd.Start()
	inR.Close()
	outW.Close()
	if err != nil {
		outR.Close()
		inW.Close()
		return nil, fmt.Errorf("host %s: ProxyCommand %q: %w", h.Name, line, err)
	}
	log.Debug("ProxyCommand started", "host", h.Name, "command", line, "pid", cmd.Process.Pid)
	go func() { pc.waitErr = cmd.Wait(); close(pc.done) }()
	if ctx.Err() != nil {
		pc.Close()
		return nil, &UnreachableError{Host: h.Name, Addr: h.Addr(), Err: ctx.Err()}
	}
	return &routeConn{Conn: pc, base: pc}, nil
}

// cmdConn is a ProxyCommand's standard output and input as a net.Conn.
type cmdConn struct {
	r, w       *os.File
	cmd        *exec.Cmd
	done       chan struct{} // closed once the command was waited for
	waitErr    error
	stderr     tailBuffer
	host, line string
	log        *slog.Logger
	once       sync.Once
}

func (c *cmdConn) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if errors.Is(err, io.EOF) {
		err = c.exitErr(err)
	}
	return n, err
}

// Write: a command that has ended fails the write (a broken pipe), which
// is reported as its end.
func (c *cmdConn) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	if err != nil && !isTimeout(err) && !errors.Is(err, os.ErrClosed) {
		err = c.exitErr(err)
	}
	return n, err
}

// exitErr is err, or, when the command has ended (or ends within a moment
// of closing its end of a pipe), a *ProxyCommandError with how it ended
// and what it said.
func (c *cmdConn) exitErr(err error) error {
	select {
	case <-c.done:
	case <-time.After(time.Second):
		return err
	}
	status := "exited"
	err = io.EOF
	var ee *exec.ExitError
	if errors.As(c.waitErr, &ee) && (ee.ExitCode() == 126 || ee.ExitCode() == 127) {
		// The shell could not run it: a configuration error, not a
		// host out of reach.
		err = errNotRunnable
	}
	if c.waitErr != nil {
		status = c.waitErr.Error()
	}
	if msg := strings.TrimSpace(c.stderr.String()); msg != "" {
		status += ": " + msg
	}
	pe := &ProxyCommandError{Host: c.host, Command: c.line, Status: status, Err: err}
	c.log.Info("ProxyCommand closed the connection", "host", c.host, "command", c.line, "status", status)
	return pe
}

// Close closes the pipes and kills the command.
func (c *cmdConn) Close() error {
	c.once.Do(func() {
		c.w.Close()
		c.r.Close()
		c.cmd.Process.Kill()
		<-c.done
	})
	return nil
}

func (c *cmdConn) LocalAddr() net.Addr  { return &net.TCPAddr{} }
func (c *cmdConn) RemoteAddr() net.Addr { return &net.TCPAddr{} }

func (c *cmdConn) SetDeadline(t time.Time) error {
	return errors.Join(c.r.SetReadDeadline(t), c.w.SetWriteDeadline(t))
}
func (c *cmdConn) SetReadDeadline(t time.Time) error  { return c.r.SetReadDeadline(t) }
func (c *cmdConn) SetWriteDeadline(t time.Time) error { return c.w.SetWriteDeadline(t) }

var errNotRunnable = errors.New("the shell could not run it")

// ProxyCommandError: a host's ProxyCommand closed the connection; Status
// says how it ended and what it wrote to standard error. It wraps io.EOF
// (an ended command counts as an unreachable host) unless the shell could
// not run the command at all.
type ProxyCommandError struct {
	Host, Command, Status string
	Err                   error
}

func (e *ProxyCommandError) Error() string {
	return fmt.Sprintf("host %s: ProxyCommand %q closed the connection (%s)", e.Host, e.Command, e.Status)
}
func (e *ProxyCommandError) Unwrap() error { return e.Err }

// tailBuffer keeps the last 2 KiB written to it.
type tailBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - 2048; over > 0 {
		t.b = t.b[over:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
