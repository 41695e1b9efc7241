package carrier

import (
	"context"
	"net"
	"time"

	"github.com/messor-sync/messor/discovery"
)

// WatchConfig configures Carrier.Watch.
type WatchConfig struct {
	// Hosts returns, each round, the pickup hosts and a way to reach any
	// destination by name (nil: not reachable by name).
	Hosts func(ctx context.Context) (pickup []discovery.Host, dest func(name string) (discovery.Host, bool), err error)
	// Wake, if set, starts a round at once when it delivers (an mDNS agent
	// appeared).
	Wake <-chan struct{}
	// Interval between rounds (default 30s).
	Interval time.Duration
	// Report receives the report of every visit that moved something or
	// failed; idle visits are not reported.
	Report func(*HostReport)
	// MaxBackoff bounds the wait after a host failed (default 30m).
	MaxBackoff time.Duration
}

// Watch keeps syncing with whatever hosts are in reach until ctx ends: each
// round it probes the pickup hosts and the destinations it holds files for
// with a TCP connect, and for each that answers delivers what it carries for
// it, then picks up. A host that fails is left alone for a while, doubling
// each time. Watch returns ctx.Err() when ctx ends; transfers cut short then
// resume next time.
func (c *Carrier) Watch(ctx context.Context, cfg WatchConfig) error {
	if cfg.Interval <= 0 {
		cfg.Interval = 30 * time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Minute
	}
	type backoff struct {
		until time.Time
		wait  time.Duration
	}
	off := map[string]*backoff{}
	report := func(r *HostReport) {
		if cfg.Report != nil && (r.Files > 0 || r.Failure()) {
			cfg.Report(r)
		}
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
		case <-cfg.Wake:
		}
		pickup, dest, err := cfg.Hosts(ctx)
		if err != nil {
			c.log.Warn("watch: finding hosts", "err", err)
		}
		visit := map[string]discovery.Host{}
		isPickup := map[string]bool{}
		var order []string
		for _, h := range pickup {
			if _, ok := visit[h.Name]; !ok {
				order = append(order, h.Name)
			}
			visit[h.Name], isPickup[h.Name] = h, true
		}
		dests, _ := c.Destinations()
		for _, d := range dests {
			if _, ok := visit[d]; ok || dest == nil {
				continue
			}
			if h, ok := dest(d); ok {
				visit[d] = h
				order = append(order, d)
			}
		}
		for _, name := range order {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			h := visit[name]
			if b := off[name]; b != nil && time.Now().Before(b.until) {
				continue
			}
			if !reachable(ctx, h, c.opts.ConnectTimeout) {
				continue
			}
			failed := false
			r := c.DropoffHost(ctx, h)
			report(r)
			failed = r.Failure()
			if isPickup[name] && !failed {
				r = c.PickupHost(ctx, h)
				report(r)
				failed = r.Failure()
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if failed {
				b := off[name]
				if b == nil {
					b = &backoff{wait: cfg.Interval}
					off[name] = b
				} else {
					b.wait = min(2*b.wait, cfg.MaxBackoff)
				}
				b.until = time.Now().Add(b.wait)
				c.log.Info("watch: backing off", "host", name, "for", b.wait)
			} else {
				delete(off, name)
			}
		}
		timer.Reset(cfg.Interval)
	}
}

// reachable is a cheap probe: does the host (or, behind jump hosts, the
// first of them) accept a TCP connection? A host reached by ProxyCommand
// counts as reachable: only running the command would tell.
func reachable(ctx context.Context, h discovery.Host, timeout time.Duration) bool {
	for len(h.ProxyJump) > 0 {
		h = h.ProxyJump[0]
	}
	if h.ProxyCommand != "" {
		return ctx.Err() == nil
	}
	dctx, cancel := context.WithTimeout(ctx, connectTimeout(h, timeout))
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(dctx, "tcp", h.Addr())
	if err != nil {
		return false
	}
	conn.Close()
	return ctx.Err() == nil
}
