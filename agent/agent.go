package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gliderssh "github.com/gliderlabs/ssh"
	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/protocol"
)

// Timeouts of the server.
const (
	// shutdownGrace is how long Serve waits, once its context is done, for
	// carriers to finish and disconnect before cutting their connections.
	shutdownGrace = 3 * time.Second
	// loginGrace is how long a connection may take to authenticate.
	loginGrace = 30 * time.Second
	// maxPreAuth bounds connections that have not logged in yet (as sshd's
	// MaxStartups): a flood of them cannot lock carriers out.
	maxPreAuth = 64
	// maxSessions bounds session channels per connection (sshd's
	// MaxSessions is 10): each costs buffers a carrier could pile up.
	maxSessions = 10
	// maxTxPacket is the largest read reply, as OpenSSH's sftp-server: a
	// reply packet then stays under the 256 KiB clients accept.
	maxTxPacket = 256*1024 - 1024
)

// Config configures an Agent. The zero value of each field has a default,
// documented with it; paths default under $HOME.
type Config struct {
	// Root is the directory served as messor/ (default ~/messor): its
	// outbox/ and inbox/, and nothing else in it. It is created, with
	// those two (private to the user), if missing.
	Root string
	// Name is the host name the agent advertises; it must satisfy
	// protocol.CheckHostName (default: the host name up to its first dot).
	Name string
	// AuthorizedKeysFile lists the carriers' public keys in OpenSSH
	// authorized_keys format (default ~/.ssh/authorized_keys). It is re-read
	// at every login, so edits apply at once. from= and expiry-time= are
	// honoured as sshd does (from= against the client's address only, as
	// sshd with UseDNS no); command= is accepted only for an SFTP server
	// (command="internal-sftp"), the agent serving nothing else;
	// restricting options (restrict, no-pty, ...) are accepted, since the
	// agent grants none of what they forbid. A line with any other option
	// (cert-authority, principals=, pty, environment=, another command=,
	// ...) is ignored and logged with its line number.
	AuthorizedKeysFile string
	// HostKeyFile holds the agent's SSH host key; see LoadOrCreateHostKey
	// (default ~/.config/messor/agent_host_ed25519_key).
	HostKeyFile string
	// Logger receives the agent's log (nil: discard).
	Logger *slog.Logger
	// Advertise, if set, is called by Serve with the name, the bound port and
	// the host key fingerprint, to announce the agent over mDNS; stop is
	// called when Serve shuts down. An error is logged and Serve goes on:
	// carriers can still reach the agent by address.
	Advertise func(name string, port int, fingerprint string) (stop func(), err error)
}

// Agent serves a host's messor directory to carriers. Create it with New.
// Its methods are safe for concurrent use.
type Agent struct {
	cfg    Config
	signer ssh.Signer
	log    *slog.Logger
}

// New checks cfg, fills in defaults, creates the layout under Root and loads
// (or creates) the host key.
func New(cfg Config) (*Agent, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var home string
	if cfg.Root == "" || cfg.AuthorizedKeysFile == "" || cfg.HostKeyFile == "" {
		h, err := os.UserHomeDir()
		if err != nil {
			return nil, fmt.Errorf("agent: default paths: %w", err)
		}
		home = h
	}
	if cfg.Root == "" {
		cfg.Root = filepath.Join(home, protocol.Root)
	}
	if cfg.AuthorizedKeysFile == "" {
		cfg.AuthorizedKeysFile = filepath.Join(home, ".ssh", "authorized_keys")
	}
	if cfg.HostKeyFile == "" {
		cfg.HostKeyFile = filepath.Join(home, ".config", "messor", "agent_host_ed25519_key")
	}
	if cfg.Name == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("agent: default name: %w", err)
		}
		cfg.Name, _, _ = strings.Cut(h, ".")
	}
	if err := protocol.CheckHostName(cfg.Name); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	root, err := filepath.Abs(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("agent: root %s: %w", cfg.Root, err)
	}
	cfg.Root = root
	for _, d := range areas {
		if err := os.MkdirAll(filepath.Join(cfg.Root, d), dirMode); err != nil {
			return nil, fmt.Errorf("agent: create layout: %w", err)
		}
	}
	signer, err := LoadOrCreateHostKey(cfg.HostKeyFile)
	if err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, signer: signer, log: cfg.Logger}
	if _, err := readAuthorizedKeys(cfg.AuthorizedKeysFile, a.log, slog.LevelWarn); err != nil {
		a.log.Warn("no carrier can log in yet", "file", cfg.AuthorizedKeysFile, "err", err)
	}
	return a, nil
}

// HostKey is the agent's public host key.
func (a *Agent) HostKey() ssh.PublicKey { return a.signer.PublicKey() }

// Fingerprint is the SHA256 fingerprint of the host key, as ssh-keygen -l
// prints it ("SHA256:...").
func (a *Agent) Fingerprint() string { return ssh.FingerprintSHA256(a.signer.PublicKey()) }

// Name is the advertised name (Config.Name or its default).
func (a *Agent) Name() string { return a.cfg.Name }

// Root is the absolute path of the directory served as messor/.
func (a *Agent) Root() string { return a.cfg.Root }

// Serve accepts carriers on ln until ctx is done, then stops advertising,
// stops accepting, lets logged-in carriers finish for a few seconds, cuts
// what remains, waits for every connection to end and returns nil. It returns an error if the root cannot be opened or ln fails. ln is
// closed when Serve returns. Serve may be called more than once, also
// concurrently, with different listeners.
func (a *Agent) Serve(ctx context.Context, ln net.Listener) error {
	defer ln.Close()
	root, err := openTree(a.cfg.Root)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	defer root.Close()

	s := &server{a: a, root: root, log: a.log,
		conns: make(map[*trackedConn]struct{}), changed: make(chan struct{}, 1)}
	srv := s.sshServer()

	var stop func()
	if a.cfg.Advertise != nil {
		port, err := listenPort(ln)
		if err == nil {
			stop, err = a.cfg.Advertise(a.cfg.Name, port, a.Fingerprint())
		}
		if err != nil {
			a.log.Warn("cannot advertise over mDNS; carriers need this host's address", "err", err)
			stop = nil
		}
	}

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	a.log.Info("agent serving", "addr", ln.Addr().String(), "name", a.cfg.Name,
		"root", a.cfg.Root, "fingerprint", a.Fingerprint())

	var serveErr error
	served := false
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
		served = true
	}
	if stop != nil {
		stop()
	}
	ln.Close()
	if !served {
		<-errc
	}
	// Not gliderlabs' Shutdown: its WaitGroups race with a Serve or a
	// handshake still starting. The listener is closed; now cut who has
	// not logged in, give carriers a grace period, then cut the rest.
	s.drain(shutdownGrace)
	srv.Close()
	s.closeAll()
	s.wg.Wait()
	if served && ctx.Err() == nil {
		return fmt.Errorf("agent: serve on %s: %w", ln.Addr(), serveErr)
	}
	a.log.Info("agent stopped", "addr", ln.Addr().String())
	return nil
}

func listenPort(ln net.Listener) (int, error) {
	if ta, ok := ln.Addr().(*net.TCPAddr); ok {
		return ta.Port, nil
	}
	_, p, err := net.SplitHostPort(ln.Addr().String())
	if err != nil {
		return 0, fmt.Errorf("port of %s: %w", ln.Addr(), err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return 0, fmt.Errorf("port of %s: %w", ln.Addr(), err)
	}
	return port, nil
}

// server is the state of one Serve call.
type server struct {
	a    *Agent
	root *tree
	log  *slog.Logger

	openFiles atomic.Int64 // open in every SFTP session (fs.go's caps)

	mu      sync.Mutex
	closed  bool
	conns   map[*trackedConn]struct{}
	changed chan struct{}  // a connection ended
	wg      sync.WaitGroup // connections, sessions and hash requests in progress
}

func (s *server) sshServer() *gliderssh.Server {
	srv := &gliderssh.Server{
		// gliderlabs prepends "SSH-2.0-".
		Version:          strings.TrimPrefix(protocol.AgentServerVersion, "SSH-2.0-"),
		Handler:          refuseSession,
		PublicKeyHandler: s.publicKey,
		PtyCallback:      func(gliderssh.Context, gliderssh.Pty) bool { return false },
		ConnCallback:     s.trackConn,
		LocalPortForwardingCallback: func(gliderssh.Context, string, uint32) bool {
			return false
		},
		ReversePortForwardingCallback: func(gliderssh.Context, string, uint32) bool {
			return false
		},
		SessionRequestCallback: func(sess gliderssh.Session, typ string) bool {
			return typ == "subsystem" && sess.Subsystem() == "sftp"
		},
		ConnectionFailedCallback: s.connFailed,
		ChannelHandlers: map[string]gliderssh.ChannelHandler{
			"session": sessionChannel,
		},
		RequestHandlers: map[string]gliderssh.RequestHandler{
			protocol.HashRangeRequest: s.hashRange,
			protocol.HashSliceRequest: s.hashSlice,
			protocol.HashBatchRequest: s.hashBatch,
		},
		SubsystemHandlers: map[string]gliderssh.SubsystemHandler{
			"sftp": s.sftpSubsystem,
		},
	}
	srv.AddHostKey(s.a.signer)
	return srv
}

// begin registers a session or request in progress; false once shutting
// down. A true result must be paired with s.wg.Done.
func (s *server) begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

// drain closes the connections that have not logged in, then waits up to
// grace for the others to end.
func (s *server) drain(grace time.Duration) {
	s.mu.Lock()
	for c := range s.conns {
		if c.ctx.Value(gliderssh.ContextKeyConn) == nil {
			c.Conn.Close()
		}
	}
	s.mu.Unlock()
	timer := time.NewTimer(grace)
	defer timer.Stop()
	for {
		s.mu.Lock()
		n := len(s.conns)
		s.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-s.changed:
		case <-timer.C:
			s.log.Info("cutting connections still open", "count", n)
			return
		}
	}
}

// closeAll cuts every connection, authenticated or not, and refuses new ones.
func (s *server) closeAll() {
	s.mu.Lock()
	s.closed = true
	conns := make([]*trackedConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.Conn.Close() // gliderlabs then returns and calls c.Close
	}
}

// trackedConn is a connection Serve can cut at shutdown, and that is cut if
// it does not log in within loginGrace.
type trackedConn struct {
	net.Conn
	ctx   gliderssh.Context
	s     *server
	timer *time.Timer
	once  sync.Once
}

// Close is called by gliderlabs when it is done with the connection, after
// any ConnectionFailedCallback: the connection's part in s.wg ends here.
func (c *trackedConn) Close() error {
	err := net.ErrClosed
	c.once.Do(func() {
		c.timer.Stop()
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
		select {
		case c.s.changed <- struct{}{}:
		default:
		}
		err = c.Conn.Close()
		c.s.wg.Done()
	})
	return err
}

func (s *server) trackConn(ctx gliderssh.Context, conn net.Conn) net.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil // gliderlabs closes conn
	}
	pre := 0
	for c := range s.conns {
		if c.ctx.Value(gliderssh.ContextKeyConn) == nil {
			pre++
		}
	}
	if pre >= maxPreAuth {
		s.log.Warn("too many connections not logged in yet; refusing one", "remote", conn.RemoteAddr().String())
		return nil // gliderlabs closes conn
	}
	c := &trackedConn{Conn: conn, ctx: ctx, s: s}
	c.timer = time.AfterFunc(loginGrace, func() {
		if ctx.Value(gliderssh.ContextKeyConn) == nil { // set once logged in
			s.log.Warn("login timed out", "remote", conn.RemoteAddr().String())
			conn.Close()
		}
	})
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return c
}

func (s *server) connFailed(conn net.Conn, err error) {
	s.log.Warn("connection failed before login", "remote", conn.RemoteAddr().String(), "err", err)
}

// publicKey is the only authentication: the offered key must be listed in
// the authorized keys file, read afresh, on a line whose options allow this
// client now (from=, expiry-time=; see authorizedKey). As sshd, any line
// listing the key may let it in.
func (s *server) publicKey(ctx gliderssh.Context, key gliderssh.PublicKey) bool {
	fp := ssh.FingerprintSHA256(key)
	remote := ctx.RemoteAddr().String()
	keys, err := readAuthorizedKeys(s.a.cfg.AuthorizedKeysFile, s.log, slog.LevelDebug)
	if err != nil {
		s.log.Error("cannot read authorized keys; refusing login", "remote", remote, "err", err)
		return false
	}
	if _, ok := key.(*ssh.Certificate); ok {
		// Certificates need a CA and the checks sshd makes (validity,
		// principals, options); the agent does neither.
		s.log.Warn("login refused: certificates are not accepted", "remote", remote, "user", ctx.User(), "key", fp)
		return false
	}
	var addr netip.Addr
	if tcp, ok := ctx.RemoteAddr().(*net.TCPAddr); ok {
		addr = tcp.AddrPort().Addr()
	}
	listed := false
	for _, k := range keys {
		if !gliderssh.KeysEqual(k.key, key) {
			continue
		}
		listed = true
		if err := k.permits(addr, time.Now()); err != nil {
			s.log.Warn("login refused by the key's line", "remote", remote, "user", ctx.User(), "key", fp,
				"file", s.a.cfg.AuthorizedKeysFile, "line", k.line, "err", err)
			continue
		}
		s.log.Debug("public key accepted", "remote", remote, "user", ctx.User(), "key", fp, "line", k.line)
		return true
	}
	if !listed {
		s.log.Warn("login refused: public key not authorized", "remote", remote, "user", ctx.User(),
			"key", fp, "type", key.Type())
	}
	return false
}

// readAuthorizedKeys parses an OpenSSH authorized_keys file. Lines that
// are not keys, and keys whose options the agent cannot honour, are left
// out and logged at the given level with their line number and why.
func readAuthorizedKeys(file string, log *slog.Logger, level slog.Level) ([]authorizedKey, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("authorized keys: %w", err)
	}
	defer f.Close()
	// As sshd's StrictModes: whoever can write this file can log in.
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("authorized keys %s: %w", file, err)
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return nil, fmt.Errorf("authorized keys %s: writable by group or others (%#o), so anyone could add a key; run chmod go-w %s", file, perm, file)
	}
	if ok, uid := ownerOK(fi); !ok {
		return nil, fmt.Errorf("authorized keys %s: owned by uid %d, not by the user the agent runs as or root", file, uid)
	}
	data, err := io.ReadAll(io.LimitReader(f, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("authorized keys %s: %w", file, err)
	}
	var keys []authorizedKey
	for i, line := range bytes.Split(data, []byte("\n")) {
		k, ok, err := parseAuthorizedKeyLine(line, i+1)
		if err != nil {
			log.Log(context.Background(), level, "authorized_keys line ignored", "file", file, "line", i+1, "err", err)
		}
		if ok {
			keys = append(keys, k)
		}
	}
	return keys, nil
}

// refuseSession is the session handler: never reached, since only the sftp
// subsystem is accepted, but a shell or command would be refused here too.
func refuseSession(sess gliderssh.Session) {
	io.WriteString(sess.Stderr(), "messor agent: only the sftp subsystem is available\n")
	sess.Exit(1)
}

// sessionChannel runs gliderlabs' session handler on a channel that only
// ever sees "subsystem" requests: exec, shell, pty-req, env, x11-req,
// auth-agent-req@openssh.com and the rest are refused before it.
func sessionChannel(srv *gliderssh.Server, conn *ssh.ServerConn, nc ssh.NewChannel, ctx gliderssh.Context) {
	n, _ := ctx.Value(sessionsKey{}).(*atomic.Int32)
	if n == nil {
		n = new(atomic.Int32)
		ctx.SetValue(sessionsKey{}, n)
	}
	if n.Add(1) > maxSessions {
		n.Add(-1)
		nc.Reject(ssh.ResourceShortage, "too many sessions on one connection")
		return
	}
	defer n.Add(-1)
	gliderssh.DefaultSessionHandler(srv, conn, subsystemOnly{nc}, ctx)
}

// sessionsKey keys a connection's count of open sessions in its context.
type sessionsKey struct{}

type subsystemOnly struct{ ssh.NewChannel }

func (n subsystemOnly) Accept() (ssh.Channel, <-chan *ssh.Request, error) {
	ch, reqs, err := n.NewChannel.Accept()
	if err != nil {
		return ch, reqs, err
	}
	out := make(chan *ssh.Request)
	go func() {
		defer close(out)
		for req := range reqs {
			if req.Type == "subsystem" {
				out <- req
				continue
			}
			req.Reply(false, nil)
		}
	}()
	return ch, out, nil
}

// pipeConn is the request server's side of the relay.
type pipeConn struct {
	*io.PipeReader
	*io.PipeWriter
}

func (p pipeConn) Close() error {
	p.PipeReader.Close()
	return p.PipeWriter.Close()
}

// sftpSubsystem serves one SFTP session, confined to Root.
func (s *server) sftpSubsystem(sess gliderssh.Session) {
	if !s.begin() {
		return
	}
	defer s.wg.Done()
	log := s.log.With("remote", sess.RemoteAddr().String(), "user", sess.User())
	var fp string
	if k := sess.PublicKey(); k != nil {
		fp = ssh.FingerprintSHA256(k)
	}
	log.Info("carrier connected", "key", fp)

	cfs := newConfinedFS(s.root, log)
	cfs.all = &s.openFiles
	c2sR, c2sW := io.Pipe()
	s2cR, s2cW := io.Pipe()
	rs := sftp.NewRequestServer(pipeConn{c2sR, s2cW}, cfs.handlers(), sftp.WithRSMaxTxPacket(maxTxPacket))
	rl := newRelay(cfs, sess, log)

	toServer := make(chan error, 1)
	go func() {
		err := rl.toServer(sess, c2sW)
		c2sW.CloseWithError(io.EOF)
		toServer <- err
	}()
	toClient := make(chan error, 1)
	go func() {
		err := rl.toClient(s2cR)
		s2cR.CloseWithError(io.ErrClosedPipe)
		toClient <- err
	}()

	err := rs.Serve()
	rs.Close()
	cerr := <-toClient
	sess.Exit(0)
	serr := <-toServer
	for _, e := range []error{err, cerr, serr} {
		if e != nil && !errors.Is(e, io.EOF) && !errors.Is(e, io.ErrUnexpectedEOF) &&
			!errors.Is(e, io.ErrClosedPipe) && !errors.Is(e, net.ErrClosed) {
			log.Info("sftp session ended", "err", e)
			break
		}
	}
	log.Info("carrier disconnected", "key", fp)
}
