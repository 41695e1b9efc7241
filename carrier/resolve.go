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
	out := c.Pickup(ctx, f.Configured())
	if ctx.Err() != nil {
		return out
	}
	agents, refused := f.Agents()
	for _, r := range refused {
		out = append(out, unresolved("pickup", r.Name, r.Err))
	}
	return append(out, c.Pickup(ctx, agents)...)
}

// DropoffFound delivers to every destination the buffer holds files for,
// as f resolves it: configured ones first. A name f refuses (an unpinned
// agent, a contested name) is reported as a failure, since files wait for
// it; a pinned agent not heard is out of range.
func (c *Carrier) DropoffFound(ctx context.Context, f Finder) ([]*HostReport, error) {
	byDest, err := c.entriesByDest()
	if err != nil {
		return nil, err
	}
	var out []*HostReport
	f.Dests(ctx, slices.Sorted(maps.Keys(byDest)), func(h discovery.Host, err error) {
		if err != nil {
			out = append(out, unresolved("dropoff", h.Name, err))
			return
		}
		out = append(out, c.dropoff(ctx, h, byDest[h.Name]))
	})
	return out, nil
}

// unresolved is the report for a name that could not be resolved to a
// host: out of range for an agent not heard, else refused.
func unresolved(verb, name string, err error) *HostReport {
	if errors.Is(err, discovery.ErrNotHeard) {
		err = &UnreachableError{Host: name, Addr: "mDNS", Err: err}
	}
	return &HostReport{Host: name, Verb: verb, Err: err}
}
