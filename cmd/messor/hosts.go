package main

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/discovery"
)

// agentsFile is where `messor trust` pins agents' host keys, by name.
func (g *globals) agentsFile() string {
	return filepath.Join(g.home, ".config", "messor", "known_agents")
}

// find reads the hosts file, ~/.ssh/config and the pinned agents, and
// starts looking for agents over mDNS (unless --no-mdns). Bad lines are
// printed ("file:line: ...") and reported as bad, the good ones served.
func (g *globals) find(ctx context.Context) (f *discovery.Finder, bad bool, err error) {
	return g.findBrowsing(ctx, !g.noMDNS && g.mdnsTimeout > 0)
}

// findBrowsing is find, with an mDNS browse for agents only when browse.
func (g *globals) findBrowsing(ctx context.Context, browse bool) (f *discovery.Finder, bad bool, err error) {
	pins, err := carrier.AgentPins(g.agentsFile())
	if err != nil {
		return nil, false, usageErr("%w", err)
	}
	cfg := discovery.FinderConfig{
		HostsFile:  g.hosts,
		Home:       g.home,
		AgentsFile: g.agentsFile(),
		Pins:       pins,
		Log:        g.logger(),
	}
	if browse {
		cfg.Browse = discovery.BrowseFor(g.mdnsTimeout, g.logger())
	}
	f, problems, err := discovery.Find(ctx, cfg)
	if err != nil {
		return nil, false, usageErr("%w", err)
	}
	for _, p := range problems {
		fmt.Fprintln(g.stderr, "messor:", p)
	}
	return f, len(problems) > 0, nil
}
