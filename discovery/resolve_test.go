package discovery

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// finderWorld is a HOME with a hosts file and ~/.ssh/config, and the
// adverts a fake browse "hears".
type finderWorld struct {
	t      *testing.T
	home   string
	pinned map[string]bool
	heard  []Host
	dups   []error
	log    lockedBuffer
}

func newFinderWorld(t *testing.T, hostsFile, sshConfig string) *finderWorld {
	w := &finderWorld{t: t, home: t.TempDir(), pinned: map[string]bool{}}
	os.MkdirAll(filepath.Join(w.home, ".ssh"), 0o700)
	os.WriteFile(filepath.Join(w.home, ".ssh", "config"), []byte(sshConfig), 0o600)
	os.WriteFile(filepath.Join(w.home, "hosts"), []byte(hostsFile), 0o600)
	return w
}

func (w *finderWorld) advert(name, addr, fp string) {
	w.heard = append(w.heard, Host{Name: name, HostName: addr, Port: 2290, Source: SourceMDNS, Agent: true, Fingerprint: fp})
}

func (w *finderWorld) find() *Finder {
	w.t.Helper()
	f, problems, err := Find(context.Background(), FinderConfig{
		HostsFile:  filepath.Join(w.home, "hosts"),
		Home:       w.home,
		AgentsFile: filepath.Join(w.home, "known_agents"),
		Pins:       testPins(w.pinned),
		Browse: func(context.Context) ([]Host, []error, error) {
			return w.heard, w.dups, nil
		},
		Log: slog.New(slog.NewTextHandler(&w.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil || len(problems) > 0 {
		w.t.Fatalf("Find: %v %v", err, problems)
	}
	return f
}

// TestFinderPrecedence: configured names (hosts file, or a Host line of
// ~/.ssh/config without wildcards) are dialled as configured whatever is
// advertised; pinned agents come second; unpinned and contested names are
// refused; the rest resolve through ~/.ssh/config.
func TestFinderPrecedence(t *testing.T) {
	w := newFinderWorld(t, "office\n", "Host home\n  HostName 10.0.0.5\n  Port 2222\n\nHost *\n  User carol\n")
	for _, n := range []string{"home", "office", "alpha", "beta", "gamma"} {
		w.advert(n, "10.9.9.9", "SHA256:"+n)
	}
	w.dups = []error{&DuplicateNameError{Name: "delta"}, &DuplicateNameError{Name: "home"}}
	w.pinned["alpha"], w.pinned["delta"], w.pinned["epsilon"], w.pinned["home"] = true, true, true, true
	f := w.find()

	if c := f.Configured(); len(c) != 1 || c[0].Name != "office" || c[0].HostName != "office" {
		t.Errorf("Configured = %+v, want office as configured", c)
	}
	agents, refused := f.Agents()
	if len(agents) != 1 || agents[0].Name != "alpha" || agents[0].HostName != "10.9.9.9" || agents[0].Source != SourceMDNS ||
		agents[0].User != "carol" || agents[0].HostKeyAlias != "alpha" || agents[0].KnownHostsFiles[0] != filepath.Join(w.home, "known_agents") {
		t.Errorf("Agents = %+v, want only the pinned alpha, dialled at its advert, checked against known_agents", agents)
	}
	var dup *DuplicateNameError
	if len(refused) != 1 || refused[0].Name != "delta" || !errors.As(refused[0].Err, &dup) || dup.Name != "delta" {
		t.Errorf("Agents refused %v, want delta's conflict only (home is configured; no other contested name is pinned)", refused)
	}

	var got []string
	f.Dests(context.Background(), []string{"alpha", "beta", "delta", "epsilon", "home", "office", "zeta"}, func(h Host, err error) {
		got = append(got, h.Name)
		switch h.Name {
		case "home":
			if err != nil || h.HostName != "10.0.0.5" || h.Port != 2222 || h.Source != SourceHostsFile {
				t.Errorf("home: %+v, %v: want the configured 10.0.0.5:2222", h, err)
			}
		case "office":
			if err != nil || h.HostName != h.Name || h.Source != SourceHostsFile {
				t.Errorf("%s: %+v, %v: want it resolved by name", h.Name, h, err)
			}
		case "zeta":
			if err != nil || h.HostName != h.Name || h.Source != SourceSSHConfig {
				t.Errorf("%s: %+v, %v: want it resolved by name, as a name nobody configured", h.Name, h, err)
			}
		case "alpha":
			if err != nil || h.HostName != "10.9.9.9" {
				t.Errorf("alpha: %+v, %v: want the pinned agent", h, err)
			}
		case "beta":
			var up *UnpinnedError
			if !errors.As(err, &up) || !strings.Contains(err.Error(), "messor trust beta") || !strings.Contains(err.Error(), "SHA256:beta") {
				t.Errorf("beta: %v, want an UnpinnedError naming messor trust and the advertised key", err)
			}
		case "delta":
			if !errors.As(err, &dup) {
				t.Errorf("delta: %v, want a DuplicateNameError", err)
			}
		case "epsilon":
			if !errors.Is(err, ErrNotHeard) {
				t.Errorf("epsilon (pinned, not heard): %v, want ErrNotHeard", err)
			}
		}
	})
	if want := "home office alpha beta delta epsilon zeta"; strings.Join(got, " ") != want {
		t.Errorf("Dests visited %q, want configured names first: %q", strings.Join(got, " "), want)
	}
	for _, name := range []string{"home", "office"} {
		h, err := f.ForTrust(name)
		if err != nil || h.Source != SourceHostsFile {
			t.Errorf("ForTrust(%s) = %+v, %v: want the configured host", name, h, err)
		}
	}
	if h, err := f.ForTrust("beta"); err != nil || h.HostName != "10.9.9.9" || h.KnownHostsFiles[0] != filepath.Join(w.home, "known_agents") {
		t.Errorf("ForTrust(beta) = %+v, %v: want the advertised agent, to be pinned in known_agents", h, err)
	}
	log := w.log.String()
	for _, want := range []string{`msg="mDNS: ignoring advert for a configured host; dialling it as configured" host=home advert=10.9.9.9:2290 fingerprint=SHA256:home`,
		`host=office advert=10.9.9.9:2290`} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
}

// TestConfigures: only a Host pattern without wildcards claims a name,
// also from an Included file; "Host *" and negations claim nothing.
func TestConfigures(t *testing.T) {
	home := t.TempDir()
	os.MkdirAll(filepath.Join(home, ".ssh", "conf.d"), 0o700)
	os.WriteFile(filepath.Join(home, ".ssh", "conf.d", "lan"), []byte("Host printer nas\n  Port 2222\n"), 0o600)
	os.WriteFile(filepath.Join(home, ".ssh", "config"), []byte(
		"Include conf.d/*\n\nHost home work-?\n  User a\n\nHost *.lan !evil.lan\n  User b\n\nHost !home2 *\n  User c\n"), 0o600)
	c, err := LoadSSHConfig(home)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{
		"home": true, "printer": true, "nas": true,
		"work-1": false, "x.lan": false, "evil.lan": false, "home2": false, "anything": false, "hom": false,
	} {
		if got := c.Configures(name); got != want {
			t.Errorf("Configures(%q) = %v, want %v", name, got, want)
		}
	}
	if (*SSHConfig)(nil).Configures("home") {
		t.Error("a nil SSHConfig configures home")
	}
}

// TestConfiguresTabs: patterns of a Host line split on tabs too, as
// OpenSSH splits them: "Host home<TAB>nas" configures nas, with its options,
// and an advert under nas is ignored.
func TestConfiguresTabs(t *testing.T) {
	for _, line := range []string{"Host home\tnas", "host\thome \t nas", "Host=home\tnas", "\tHOST home\tnas # the NAS"} {
		w := newFinderWorld(t, "", line+"\n\tHostName 10.0.0.5\n")
		w.advert("nas", "10.9.9.9", "SHA256:nas")
		w.pinned["nas"] = true
		f := w.find()
		if !f.ssh.Configures("nas") {
			t.Errorf("%q: nas is not configured", line)
		}
		if h, err := f.Dest("nas"); err != nil || h.HostName != "10.0.0.5" || h.Source != SourceHostsFile {
			t.Errorf("%q: Dest(nas) = %+v, %v; want the configured 10.0.0.5", line, h, err)
		}
	}
}

// TestIncludeUnderHome: a relative Include is read from the HOME messor
// was given (not the account's home from the password database), for a
// name's options as for whether it is configured.
func TestIncludeUnderHome(t *testing.T) {
	for _, inc := range []string{"Include conf.d/*", "Include ~/.ssh/conf.d/lan", "include\tconf.d/*.none conf.d/l?n"} {
		w := newFinderWorld(t, "", inc+"\n")
		os.MkdirAll(filepath.Join(w.home, ".ssh", "conf.d"), 0o700)
		os.WriteFile(filepath.Join(w.home, ".ssh", "conf.d", "lan"), []byte("Host printer nas\n  HostName 10.0.0.6\n  Port 2222\n"), 0o600)
		w.advert("nas", "10.9.9.9", "SHA256:nas")
		w.pinned["nas"] = true
		f := w.find()
		if h, err := f.Dest("nas"); err != nil || h.HostName != "10.0.0.6" || h.Port != 2222 {
			t.Errorf("%q: Dest(nas) = %+v, %v; want the included 10.0.0.6:2222", inc, h, err)
		}
	}
}

// TestConfiguresCase: ssh_config matches host names without regard to
// case, as OpenSSH does: "Host Home" configures the hosts-file name home,
// "Host nas" the name NAS, and an advert under NAS is ignored.
func TestConfiguresCase(t *testing.T) {
	w := newFinderWorld(t, "home\n", "Host Home\n  HostName 10.0.0.5\n\nHost nas\n  HostName 10.0.0.6\n\nMatch Host Attic\n  HostName 10.0.0.7\n")
	w.advert("NAS", "10.9.9.9", "SHA256:nas")
	w.pinned["NAS"] = true
	f := w.find()
	if c := f.Configured(); len(c) != 1 || c[0].Name != "home" || c[0].HostName != "10.0.0.5" {
		t.Errorf("Configured = %+v, want home at 10.0.0.5 (Host Home)", c)
	}
	if h, err := f.Dest("NAS"); err != nil || h.Name != "NAS" || h.HostName != "10.0.0.6" || h.Source != SourceHostsFile {
		t.Errorf("Dest(NAS) = %+v, %v; want the configured 10.0.0.6 (Host nas), under the name NAS", h, err)
	}
	if h, err := f.Dest("attic"); err != nil || h.HostName != "10.0.0.7" {
		t.Errorf("Dest(attic) = %+v, %v; want the configured 10.0.0.7 (Match Host Attic)", h, err)
	}
}

// TestFinderBadConfig: a configured name whose ssh_config entry is bad is
// an error, not a panic or a host, and stays the user's: an advert under it
// is not dialled instead, even when pinned.
func TestFinderBadConfig(t *testing.T) {
	for hostsFile, wantProblems := range map[string]int{"": 0, "nas\n": 1} {
		w := newFinderWorld(t, hostsFile, "Host nas\n  Port 22x\n")
		w.advert("nas", "10.9.9.9", "SHA256:nas")
		w.pinned["nas"] = true
		f, problems, err := Find(context.Background(), FinderConfig{
			HostsFile: filepath.Join(w.home, "hosts"), Home: w.home, Pins: testPins(w.pinned),
			Browse: func(context.Context) ([]Host, []error, error) { return w.heard, nil, nil },
		})
		if err != nil || len(problems) != wantProblems {
			t.Fatalf("hosts file %q: Find: %v, problems %v", hostsFile, err, problems)
		}
		for what, get := range map[string]func(string) (Host, error){"Dest": f.Dest, "ForTrust": f.ForTrust} {
			if h, err := get("nas"); err == nil || !strings.Contains(err.Error(), "bad Port") {
				t.Errorf("hosts file %q: %s(nas) with Port 22x: %+v, %v; want a bad Port error", hostsFile, what, h, err)
			}
		}
		if agents, _ := f.Agents(); len(agents) != 0 {
			t.Errorf("hosts file %q: the advert under a configured name was taken: %+v", hostsFile, agents)
		}
	}
}

type testPins map[string]bool

func (p testPins) Pinned(name string) bool { return p[name] }
func (p testPins) Empty() bool             { return len(p) == 0 }

// TestFinderNoIdleWait: with no agent pinned and every destination
// configured, neither Agents nor Dests waits for the browse.
func TestFinderNoIdleWait(t *testing.T) {
	w := newFinderWorld(t, "office\n", "Host home\n  Port 2222\n")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f, _, err := Find(ctx, FinderConfig{
		HostsFile: filepath.Join(w.home, "hosts"),
		Home:      w.home,
		Browse: func(ctx context.Context) ([]Host, []error, error) {
			<-ctx.Done() // a browse that never ends by itself
			return nil, nil, ctx.Err()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if agents, refused := f.Agents(); len(agents)+len(refused) != 0 {
		t.Errorf("Agents = %v, %v with nothing pinned", agents, refused)
	}
	n := 0
	f.Dests(ctx, []string{"home", "office"}, func(Host, error) { n++ })
	if n != 2 {
		t.Errorf("Dests visited %d configured names, want 2", n)
	}
	f.Close() // ends the browse; a test that hangs here has failed
}
