package carrier

import (
	"context"
	"errors"
	"maps"
	"slices"

	"github.com/messor-sync/messor/discovery"
)

// Finder is where a run learns its hosts; *discovery.Finder implements it
// and owns the precedence rule (configured names first, pinned agents
// second). The methods may block until the mDNS browse has ended.
type Finder interface {
	// Configured returns the hosts-file hosts, without waiting.
	Configured() []discovery.Host
	// Agents returns the pinned agents heard, and a refusal per pinned
	// name in dispute.
	Agents() (agents []discovery.Host, refused []discovery.Refusal)
	// Dests calls visit for each name, configured ones first; err says why
	// a name cannot be visited.
	Dests(ctx context.Context, names []string, visit func(h discovery.Host, err error))
	// Close ends the search; the hosts already returned stay usable.
	Close()
}

// PickupFound picks up from the configured hosts at once, then from the
// pinned agents f heard. A contested pinned name is reported as refused.
func (c *Carrier) PickupFound(ctx context.Context, f Finder) []*HostReport {
	out := c.pickupEach(ctx, f.Configured())
	if ctx.Err() != nil {
		return out
	}
	agents, refused := f.Agents()
	for _, r := range refused {
		out = append(out, unresolved("pickup", r.Name, r.Err))
	}
	return append(out, c.pickupEach(ctx, agents)...)
}

// pickupEach visits hosts in turn until ctx ends.
func (c *Carrier) pickupEach(ctx context.Context, hosts []discovery.Host) []*HostReport {
	var out []*HostReport
	for _, h := range hosts {
		if ctx.Err() != nil {
			break
		}
		out = append(out, c.visitPickup(ctx, h))
	}
	return out
}

// visitPickup picks up from h, or with Options.DryRun says what it would.
func (c *Carrier) visitPickup(ctx context.Context, h discovery.Host) *HostReport {
	var r *HostReport
	if c.opts.DryRun {
		r = c.pickupPlan(ctx, h)
	} else {
		r = c.PickupHost(ctx, h)
	}
	markInterrupted(ctx, r)
	return r
}

// markInterrupted marks r Interrupted when the run's cancellation cut the
// visit short (not when it came once the visit was done).
func markInterrupted(ctx context.Context, r *HostReport) {
	if ctx.Err() == nil {
		return
	}
	r.Interrupted = r.Err != nil || slices.ContainsFunc(r.Waiting, func(n FileNote) bool { return n.Reason == "interrupted" })
}

// PickupFrom picks up from the hosts named, each resolved as f resolves a
// destination (configured names first, then pinned agents heard), whether
// or not the hosts file lists it. A name f refuses is reported as refused.
func (c *Carrier) PickupFrom(ctx context.Context, f Finder, names []string) []*HostReport {
	var out []*HostReport
	f.Dests(ctx, unique(names), func(h discovery.Host, err error) {
		switch {
		case ctx.Err() != nil:
		case err != nil:
			out = append(out, unresolved("pickup", h.Name, err))
		default:
			out = append(out, c.visitPickup(ctx, h))
		}
	})
	return out
}

// DropoffFound delivers to every destination the buffer holds files for,
// as f resolves it: configured ones first. A name f refuses (an unpinned
// agent, a contested name) is reported as a failure, since files wait for
// it; a pinned agent not heard is out of range.
func (c *Carrier) DropoffFound(ctx context.Context, f Finder) ([]*HostReport, error) {
	return c.DropoffTo(ctx, f, nil)
}

// DropoffTo is DropoffFound for the destinations named only (all when
// names is empty); a name nothing is carried for is reported with
// nothing to deliver, without connecting.
func (c *Carrier) DropoffTo(ctx context.Context, f Finder, names []string) ([]*HostReport, error) {
	byDest, err := c.entriesByDest()
	if err != nil {
		return nil, err
	}
	return c.dropoffTo(ctx, f, names, byDest), nil
}

// dropoffTo delivers byDest's entries to the destinations named (all of
// byDest's when none are).
func (c *Carrier) dropoffTo(ctx context.Context, f Finder, names []string, byDest map[string][]Entry) []*HostReport {
	if len(names) == 0 {
		names = slices.Sorted(maps.Keys(byDest))
	}
	names = unique(names)
	var out []*HostReport
	var empty []*HostReport
	for _, n := range names {
		if len(byDest[n]) == 0 {
			empty = append(empty, &HostReport{Host: n, Verb: "dropoff", DryRun: c.opts.DryRun, NothingCarried: true})
		}
	}
	f.Dests(ctx, slices.DeleteFunc(slices.Clone(names), func(n string) bool { return len(byDest[n]) == 0 }), func(h discovery.Host, err error) {
		switch {
		case err != nil:
			out = append(out, unresolved("dropoff", h.Name, err))
		case c.opts.DryRun:
			out = append(out, c.dropoffPlan(ctx, h, byDest[h.Name]))
		default:
			out = append(out, c.dropoff(ctx, h, byDest[h.Name]))
		}
		markInterrupted(ctx, out[len(out)-1])
	})
	return append(out, empty...)
}

// unresolved is the report for a name that could not be resolved to a
// host: out of range for an agent not heard, else refused.
func unresolved(verb, name string, err error) *HostReport {
	if errors.Is(err, discovery.ErrNotHeard) {
		err = &UnreachableError{Host: name, Addr: "mDNS", Err: err}
	}
	return &HostReport{Host: name, Verb: verb, Err: err}
}

// unique is names without repeats, in order.
func unique(names []string) []string {
	var out []string
	for _, n := range names {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}
