package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"
)

// Finder decides which host a name means, with one precedence rule for
// every command (pickup, dropoff, sync, watch, trust):
//
//  1. A configured name, one listed in the hosts file or named by a Host
//     line of ~/.ssh/config without wildcards (SSHConfig.Configures), is
//     dialled as configured, always. An mDNS advert under that name is
//     ignored and logged.
//  2. Otherwise a name pinned as an agent (`messor trust NAME`, see
//     FinderConfig.Pinned) and advertised over mDNS by exactly one agent is
//     dialled at the advertised address, its key checked against the
//     agents file only.
//  3. Otherwise a name heard over mDNS is not visited: it is an
//     *UnpinnedError (nobody vouched for it) or a *DuplicateNameError.
//  4. Otherwise a destination name is resolved through ~/.ssh/config (its
//     wildcard blocks and OpenSSH's defaults), as ssh would.
//
// A pinned agent that is not heard is out of range (ErrNotHeard): it is
// never looked up by other means.
type Finder struct {
	cfg  FinderConfig
	ssh  *SSHConfig
	file []Host           // hosts-file hosts, resolved, in order
	bad  map[string]error // hosts-file names whose ssh_config entry is bad

	// The browse runs from Find on; browsed is closed when it has ended.
	browsed chan struct{}
	stop    context.CancelFunc
	agents  map[string]Host                // advertised by one agent
	dups    map[string]*DuplicateNameError // advertised by several
}

// FinderConfig says where a Finder finds hosts.
type FinderConfig struct {
	// HostsFile is the pickup hosts file (missing: no pickup hosts).
	HostsFile string
	// Home is the directory holding .ssh/config.
	Home string
	// AgentsFile is where agents' keys are pinned (known_hosts format, by
	// name); the only file an agent heard over mDNS is checked against.
	AgentsFile string
	// Pins says which names have a key in AgentsFile (nil: none).
	Pins Pins
	// Browse lists the agents heard over mDNS; nil means no mDNS. It runs
	// once per Find, in the background.
	Browse func(ctx context.Context) ([]Host, []error, error)
	// Log receives ignored adverts and mDNS problems (nil: discarded).
	Log *slog.Logger
}

// Pins is the set of agents pinned with `messor trust`;
// carrier.AgentPins reads it from the agents file.
type Pins interface {
	// Pinned reports whether name has a pinned key.
	Pinned(name string) bool
	// Empty reports whether no agent is pinned: then no agent is expected
	// and a run need not wait for the mDNS browse.
	Empty() bool
}

type noPins struct{}

func (noPins) Pinned(string) bool { return false }
func (noPins) Empty() bool        { return true }

// ErrNotHeard: a pinned agent that no advert placed on the LAN; out of
// range, as an unreachable host is.
var ErrNotHeard = errors.New("agent not heard on the LAN")

// UnpinnedError: an agent advertised a name nobody configured or pinned.
// It is not visited; the Fingerprint it advertised is for the user to
// compare before `messor trust NAME`.
type UnpinnedError struct {
	Name, Addr, Fingerprint string
}

func (e *UnpinnedError) Error() string {
	return fmt.Sprintf("agent %s on the LAN (%s, advertising key %s) is not trusted: check that fingerprint on %s and run `messor trust %s`",
		e.Name, e.Addr, e.Fingerprint, e.Name, e.Name)
}

// Find reads the hosts file and ~/.ssh/config and starts the mDNS browse.
// Lines of the hosts file that are bad, or whose ssh_config entries are,
// are returned in problems (the rest is still served); err is a file that
// cannot be read at all.
func Find(ctx context.Context, cfg FinderConfig) (f *Finder, problems []error, err error) {
	cfg.Log = orDiscard(cfg.Log)
	if cfg.Pins == nil {
		cfg.Pins = noPins{}
	}
	names, problems, err := ReadHostsFile(cfg.HostsFile)
	if err != nil {
		return nil, nil, err
	}
	sc, err := LoadSSHConfig(cfg.Home)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	f = &Finder{cfg: cfg, ssh: sc, bad: map[string]error{}, browsed: make(chan struct{}), stop: cancel}
	for _, n := range names {
		h, err := sc.Resolve(n.Name)
		if err != nil {
			problems = append(problems, err)
			f.bad[n.Name] = err
			continue
		}
		h.Remote = n.Remote
		f.file = append(f.file, h)
	}
	if cfg.Browse == nil {
		f.sort(nil, nil)
		close(f.browsed)
		return f, problems, nil
	}
	go func() {
		defer close(f.browsed)
		found, errs, err := cfg.Browse(ctx)
		if err != nil && ctx.Err() == nil {
			cfg.Log.Warn("mDNS: cannot look for agents (use --no-mdns to skip)", "err", err)
		}
		f.sort(found, errs)
	}()
	return f, problems, nil
}

// sort files what the browse heard: adverts for configured names are
// dropped and logged, pinned agents kept ready to dial.
func (f *Finder) sort(found []Host, errs []error) {
	f.agents, f.dups = map[string]Host{}, map[string]*DuplicateNameError{}
	for _, a := range found {
		if f.configured(a.Name) {
			f.ignore(a)
			continue
		}
		f.agents[a.Name] = a
	}
	for _, e := range errs {
		var dup *DuplicateNameError
		if !errors.As(e, &dup) {
			f.cfg.Log.Warn("mDNS", "err", e)
			continue
		}
		if f.configured(dup.Name) {
			for _, a := range dup.Adverts {
				f.ignore(a)
			}
			continue
		}
		f.dups[dup.Name] = dup
	}
}

// ignore logs an advert under a configured name: at debug level when it
// points where the configuration does (the agent runs on that host), as a
// warning otherwise.
func (f *Finder) ignore(a Host) {
	c, _, _ := f.configuredHost(a.Name)
	lvl := slog.LevelWarn
	if c.Addr() == a.Addr() {
		lvl = slog.LevelDebug
	}
	f.cfg.Log.Log(context.Background(), lvl, "mDNS: ignoring advert for a configured host; dialling it as configured",
		"host", a.Name, "advert", a.Addr(), "fingerprint", a.Fingerprint, "configured", c.Addr())
}

// configured reports whether name is the user's (rule 1).
func (f *Finder) configured(name string) bool {
	_, ok, _ := f.configuredHost(name)
	return ok
}

// Known reports whether name is configured (the hosts file, a Host line of
// ~/.ssh/config) or a pinned agent: a name the user wrote down.
func (f *Finder) Known(name string) bool {
	return f.configured(name) || f.cfg.Pins.Pinned(name)
}

// configuredHost returns how to dial a configured name; err is a bad
// ssh_config entry for it (the name is still the user's).
func (f *Finder) configuredHost(name string) (h Host, ok bool, err error) {
	for _, h := range f.file {
		if h.Name == name {
			return h, true, nil
		}
	}
	if err, ok := f.bad[name]; ok {
		return Host{Name: name}, true, err
	}
	if !f.ssh.Configures(name) {
		return Host{}, false, nil
	}
	h, err = f.ssh.Resolve(name)
	if err != nil {
		return Host{Name: name}, true, err
	}
	return h, true, nil
}

// Close ends the browse, if it still runs, and waits for it.
func (f *Finder) Close() {
	f.stop()
	<-f.browsed
}

// Configured returns the hosts-file hosts, at once, in file order.
func (f *Finder) Configured() []Host { return f.file }

// Refusal is a pinned name that cannot be visited, and why.
type Refusal struct {
	Name string
	Err  error
}

// Agents waits for the browse and returns the pinned agents heard, sorted
// by name, ready to dial, and a refusal per pinned name in dispute (a
// *DuplicateNameError) or with a bad ssh_config entry. Unpinned agents are
// logged, not returned. With no agent pinned there is nothing to wait for:
// it returns at once.
func (f *Finder) Agents() (agents []Host, refused []Refusal) {
	if f.cfg.Pins.Empty() {
		return nil, nil
	}
	<-f.browsed
	for _, name := range slices.Sorted(maps.Keys(f.agents)) {
		h, err := f.resolve(name, false)
		var up *UnpinnedError
		switch {
		case errors.As(err, &up):
			f.cfg.Log.Info("mDNS: agent not trusted, not visited", "host", name, "err", err)
		case err != nil:
			refused = append(refused, Refusal{name, err})
		default:
			agents = append(agents, h)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(f.dups)) {
		if f.cfg.Pins.Pinned(name) {
			refused = append(refused, Refusal{name, f.dups[name]})
		} else {
			f.cfg.Log.Warn("mDNS: name in conflict", "err", f.dups[name])
		}
	}
	return agents, refused
}

// Dests calls visit for each destination name: configured ones at once,
// then, once the browse has ended, the others (rules 2 to 4). err is an
// *UnpinnedError, a *DuplicateNameError, ErrNotHeard or an ssh_config
// error; h.Name is set either way.
func (f *Finder) Dests(ctx context.Context, names []string, visit func(h Host, err error)) {
	var later []string
	for _, n := range names {
		if h, ok, err := f.configuredHost(n); ok {
			visit(h, err)
		} else {
			later = append(later, n)
		}
	}
	if len(later) == 0 || ctx.Err() != nil {
		return
	}
	<-f.browsed
	for _, n := range later {
		if ctx.Err() != nil {
			return
		}
		h, err := f.Dest(n)
		visit(h, err)
	}
}

// Dest resolves one name by the precedence rule, waiting for the browse
// when the name is not configured.
func (f *Finder) Dest(name string) (Host, error) { return f.resolve(name, false) }

// ForTrust resolves name for `messor trust`: as Dest, except that an agent
// advertising it is returned pinned or not (pinning it is the point), and
// a pinned agent not heard resolves through ~/.ssh/config.
func (f *Finder) ForTrust(name string) (Host, error) { return f.resolve(name, true) }

func (f *Finder) resolve(name string, forTrust bool) (Host, error) {
	if h, ok, err := f.configuredHost(name); ok {
		return h, err
	}
	<-f.browsed
	pinned := f.cfg.Pins.Pinned(name)
	if dup, ok := f.dups[name]; ok {
		return Host{Name: name}, dup
	}
	if a, ok := f.agents[name]; ok {
		if !pinned && !forTrust {
			return Host{Name: name}, &UnpinnedError{Name: name, Addr: a.Addr(), Fingerprint: a.Fingerprint}
		}
		return f.dialAgent(a)
	}
	if pinned && !forTrust {
		return Host{Name: name}, fmt.Errorf("host %s: %w", name, ErrNotHeard)
	}
	h, err := f.ssh.Resolve(name)
	if err != nil {
		return Host{Name: name}, err
	}
	h.Source = SourceSSHConfig
	return h, nil
}

// dialAgent is how to dial advert a: user and keys from ~/.ssh/config,
// address from the advert, host key checked against the agents file only
// and never accepted on first contact.
func (f *Finder) dialAgent(a Host) (Host, error) {
	h, err := f.ssh.Resolve(a.Name)
	if err != nil {
		return Host{Name: a.Name}, err
	}
	h.HostName, h.Port = a.HostName, a.Port
	h.Source, h.Agent, h.Fingerprint = SourceMDNS, true, a.Fingerprint
	h.KnownHostsFiles = []string{f.cfg.AgentsFile}
	h.HostKeyAlias = a.Name
	h.StrictHostKeyChecking = ""
	return h, nil
}

// BrowseFor returns a FinderConfig.Browse that listens for window.
func BrowseFor(window time.Duration, log *slog.Logger) func(context.Context) ([]Host, []error, error) {
	return func(ctx context.Context) ([]Host, []error, error) { return Browse(ctx, window, log) }
}
