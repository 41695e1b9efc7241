package carrier

import (
	"context"
	"net"
	"slices"
	"time"

	"github.com/messor-sync/messor/discovery"
)

// WatchConfig configures Carrier.Watch.
type WatchConfig struct {
	// Find returns, each round, where to find hosts: the configured pickup
	// hosts, the pinned agents heard, and how to reach destinations.
	Find func(ctx context.Context) (Finder, error)
	// Wake, if set, starts a round at once when it delivers (an mDNS agent
	// appeared), at most once per Interval; other wakes wait for the timer.
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
	typos := map[string]bool{} // names that resolve nowhere, reported
	backOff := func(name string) {
		b := off[name]
		if b == nil {
			b = &backoff{wait: cfg.Interval}
			off[name] = b
		} else {
			b.wait = min(2*b.wait, cfg.MaxBackoff)
		}
		b.until = time.Now().Add(b.wait)
		c.log.Info("watch: backing off", "host", name, "for", b.wait)
	}
	report := func(r *HostReport) {
		if cfg.Report != nil && (r.Files > 0 || r.Failure()) {
			cfg.Report(r)
		}
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	var woken time.Time // when a wake last started a round
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
		case <-cfg.Wake:
			// At most one woken round per interval: adverts are anyone's,
			// and a LAN re-announcing a name must not keep watch busy.
			if !woken.IsZero() && time.Since(woken) < cfg.Interval {
				continue
			}
			woken = time.Now()
		}
		visit, order, refused := c.watchRound(ctx, cfg.Find)
		for _, r := range refused {
			if b := off[r.Host]; b != nil && time.Now().Before(b.until) {
				continue
			}
			report(r)
			if r.Failure() {
				backOff(r.Host)
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
			if err := probe(ctx, h.Host, c.opts.ConnectTimeout); err != nil {
				if r := (&HostReport{Host: name, Verb: h.verb(), Err: err}); r.NoSuchHost() && !typos[name] {
					typos[name] = true // a configuration error: said once
					if cfg.Report != nil {
						cfg.Report(r)
					}
				}
				continue
			}
			r := c.DropoffHost(ctx, h.Host)
			report(r)
			failed := r.Failure()
			if h.pickup && !failed {
				r = c.PickupHost(ctx, h.Host)
				report(r)
				failed = r.Failure()
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if failed {
				backOff(name)
			} else {
				delete(off, name)
			}
		}
		timer.Reset(cfg.Interval)
	}
}

// probe is a cheap check: does the host (or, behind jump hosts, the first
// of them) accept a TCP connection? The error is an *UnreachableError
// saying why not. A host reached by ProxyCommand counts as reachable: only
// running the command would tell.
func probe(ctx context.Context, h discovery.Host, timeout time.Duration) error {
	for len(h.ProxyJump) > 0 {
		h = h.ProxyJump[0]
	}
	if h.ProxyCommand != "" {
		return ctx.Err()
	}
	dctx, cancel := context.WithTimeout(ctx, connectTimeout(h, timeout))
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(dctx, "tcp", h.Addr())
	if err != nil {
		return &UnreachableError{Host: h.Name, Addr: h.Addr(), Err: err}
	}
	conn.Close()
	return ctx.Err()
}

// watchHost is one host a watch round may visit.
type watchHost struct {
	discovery.Host
	pickup bool // also pick up, not only deliver
}

// verb is what a visit to w does first.
func (w watchHost) verb() string {
	if w.pickup {
		return "pickup"
	}
	return "dropoff"
}

// watchRound finds this round's hosts: the pickup hosts (configured, then
// pinned agents heard), then the destinations the buffer holds files for,
// in visiting order; names found but refused come back as reports.
func (c *Carrier) watchRound(ctx context.Context, find func(context.Context) (Finder, error)) (map[string]watchHost, []string, []*HostReport) {
	visit := map[string]watchHost{}
	var order []string
	var refused []*HostReport
	f, err := find(ctx)
	if err != nil {
		c.log.Warn("watch: finding hosts", "err", err)
		return visit, order, refused
	}
	defer f.Close()
	agents, bad := f.Agents()
	for _, r := range bad {
		refused = append(refused, unresolved("pickup", r.Name, r.Err))
	}
	for _, h := range append(f.Configured(), agents...) {
		if _, ok := visit[h.Name]; !ok {
			order = append(order, h.Name)
		}
		visit[h.Name] = watchHost{h, true}
	}
	dests, _ := c.Destinations()
	dests = slices.DeleteFunc(dests, func(d string) bool { _, ok := visit[d]; return ok })
	f.Dests(ctx, dests, func(h discovery.Host, err error) {
		if err != nil {
			refused = append(refused, unresolved("dropoff", h.Name, err))
			return
		}
		visit[h.Name] = watchHost{Host: h}
		order = append(order, h.Name)
	})
	return visit, order, refused
}
