package carrier

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/messor-sync/messor/discovery"
)

var errGotKey = errors.New("host key captured")

// FetchHostKey connects to h (along its route: jump hosts must be trusted
// already) only far enough to see its host key (no login), for `messor
// trust` to show and pin it.
func FetchHostKey(ctx context.Context, h discovery.Host, timeout time.Duration) (ssh.PublicKey, net.Addr, error) {
	timeout = connectTimeout(h, timeout)
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := dialRoute(dctx, h, strictHops, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	var key ssh.PublicKey
	cfg := &ssh.ClientConfig{
		User: h.User,
		HostKeyCallback: func(_ string, _ net.Addr, k ssh.PublicKey) error {
			key = k
			return errGotKey
		},
		Timeout: timeout,
	}
	_, _, _, err = ssh.NewClientConn(conn, h.Addr(), cfg)
	if key != nil {
		return key, conn.RemoteAddr(), nil
	}
	return nil, nil, fmt.Errorf("host %s (%s): no host key: %w", h.Name, h.Addr(), err)
}

// connectTimeout is how long to wait for h: its ssh_config ConnectTimeout,
// else timeout, else DefaultConnectTimeout.
func connectTimeout(h discovery.Host, timeout time.Duration) time.Duration {
	if h.ConnectTimeout > 0 {
		return h.ConnectTimeout
	}
	if timeout <= 0 {
		return DefaultConnectTimeout
	}
	return timeout
}
