package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/discovery"
)

// agentsFile is where agent host keys heard over mDNS are pinned, by name.
func (g *globals) agentsFile() string {
	return filepath.Join(g.home, ".config", "messor", "known_agents")
}

// browse returns the agents heard over mDNS, ready to dial: addresses from
// the advert, keys and user from ~/.ssh/config, host key checked against the
// key pinned for the name (never trusted by name alone). Two agents with
// one name are reported and left out.
func (g *globals) browse(ctx context.Context) ([]discovery.Host, bool) {
	if g.noMDNS || g.mdnsTimeout <= 0 {
		return nil, false
	}
	found, errs, err := discovery.Browse(ctx, g.mdnsTimeout, g.logger())
	if err != nil && ctx.Err() == nil {
		fmt.Fprintf(g.stderr, "messor: mDNS: %v (use --no-mdns to skip looking for agents)\n", err)
	}
	bad := false
	for _, e := range errs {
		fmt.Fprintln(g.stderr, "messor:", e)
		var dup *discovery.DuplicateNameError
		if errors.As(e, &dup) {
			bad = true
		}
	}
	cfg, _ := discovery.LoadSSHConfig(g.home)
	var out []discovery.Host
	for _, f := range found {
		h, err := cfg.Resolve(f.Name)
		if err != nil {
			continue
		}
		h.HostName, h.Port = f.HostName, f.Port
		h.Source, h.Agent, h.Fingerprint = discovery.SourceMDNS, true, f.Fingerprint
		h.KnownHostsFiles = []string{g.agentsFile()}
		h.HostKeyAlias = f.Name
		h.StrictHostKeyChecking = ""
		out = append(out, h)
	}
	return out, bad
}

// mdnsSoftFail reports whether r's error, for a host heard over mDNS, only
// means "not ours": an agent we never pinned, or one that does not know our
// key. Those are reported but are not failures. A changed key is.
func mdnsSoftFail(r *carrier.HostReport, src map[string]discovery.Source) bool {
	if src[r.Host] != discovery.SourceMDNS || r.Err == nil {
		return false
	}
	var uk *carrier.UnknownHostKeyError
	var ae *carrier.AuthError
	return errors.As(r.Err, &uk) || errors.As(r.Err, &ae)
}

func sources(hosts []discovery.Host) map[string]discovery.Source {
	m := map[string]discovery.Source{}
	for _, h := range hosts {
		m[h.Name] = h.Source
	}
	return m
}
