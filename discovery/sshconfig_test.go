package discovery

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/messor-sync/messor/protocol"
)

func protocolCheck(h string) error { return protocol.CheckHostName(h) }

func TestResolve(t *testing.T) {
	home := t.TempDir()
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	cfg := `Host nas
  HostName 192.168.1.5
  Port 2222
  User alice
  IdentityFile ~/.ssh/nas_key
  UserKnownHostsFile ~/.ssh/kh_nas
  StrictHostKeyChecking accept-new
  ConnectTimeout 3

Host *
  User bob
`
	os.WriteFile(filepath.Join(home, ".ssh", "config"), []byte(cfg), 0o600)
	c, err := LoadSSHConfig(home)
	if err != nil {
		t.Fatal(err)
	}
	h, err := c.Resolve("nas")
	if err != nil {
		t.Fatal(err)
	}
	if h.HostName != "192.168.1.5" || h.Port != 2222 || h.User != "alice" || h.Addr() != "192.168.1.5:2222" ||
		h.IdentityFiles[0] != filepath.Join(home, ".ssh", "nas_key") || h.KnownHostsFiles[0] != filepath.Join(home, ".ssh", "kh_nas") ||
		h.StrictHostKeyChecking != "accept-new" || h.ConnectTimeout != 3*time.Second {
		t.Errorf("nas resolved to %+v", h)
	}
	o, _ := c.Resolve("other")
	if o.HostName != "other" || o.Port != 22 || o.User != "bob" || o.KnownHostsFiles[0] != filepath.Join(home, ".ssh", "known_hosts") {
		t.Errorf("other resolved to %+v", o)
	}
	os.WriteFile(filepath.Join(home, ".ssh", "config"), []byte("Host bad\n Port nope\n"), 0o600)
	c, _ = LoadSSHConfig(home)
	if _, err := c.Resolve("bad"); err == nil {
		t.Error("bad port accepted")
	}
}

// loadConfig writes cfg as home/.ssh/config and loads it.
func loadConfig(t *testing.T, cfg string) (*SSHConfig, string) {
	t.Helper()
	home := t.TempDir()
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	if err := os.WriteFile(filepath.Join(home, ".ssh", "config"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadSSHConfig(home)
	if err != nil {
		t.Fatal(err)
	}
	return c, home
}

// TestResolveProxyJump: each hop is resolved through ssh_config (HostName,
// User, Port, keys), user@host:port in the value wins, the first hop keeps
// its own route and later hops do not, and "none" turns it off.
func TestResolveProxyJump(t *testing.T) {
	c, home := loadConfig(t, `Host target
  HostName 10.9.0.7
  ProxyJump edge,carol@inner:2200
Host direct
  ProxyJump none
Host edge
  HostName edge.example.net
  User ed
  Port 2022
  IdentityFile ~/.ssh/edge_key
  ProxyJump outer
Host inner
  HostName 10.9.0.1
  ProxyJump nowhere
Host loop-a
  ProxyJump loop-b
Host loop-b
  ProxyJump loop-a
Host b
  HostName bastion
  ProxyJump b
Host outer bastion
  ProxyJump none
Host *
  ProxyJump bastion
  User bob
`)
	h, err := c.Resolve("target")
	if err != nil {
		t.Fatal(err)
	}
	if len(h.ProxyJump) != 2 {
		t.Fatalf("target's ProxyJump = %+v, want edge, inner", h.ProxyJump)
	}
	edge, inner := h.ProxyJump[0], h.ProxyJump[1]
	if edge.Name != "edge" || edge.Addr() != "edge.example.net:2022" || edge.User != "ed" || edge.IdentityFiles[0] != filepath.Join(home, ".ssh", "edge_key") {
		t.Errorf("first hop = %+v", edge)
	}
	if len(edge.ProxyJump) != 1 || edge.ProxyJump[0].Name != "outer" || edge.ProxyJump[0].User != "bob" {
		t.Errorf("first hop's own route = %+v, want outer (as OpenSSH: the first hop keeps its ProxyJump)", edge.ProxyJump)
	}
	if inner.Addr() != "10.9.0.1:2200" || inner.User != "carol" || len(inner.ProxyJump) != 0 {
		t.Errorf("second hop = %+v, want 10.9.0.1:2200 as carol, no route of its own", inner)
	}
	if h.Route() != "via ProxyJump edge,inner" {
		t.Errorf("Route() = %q", h.Route())
	}
	if d, err := c.Resolve("direct"); err != nil || len(d.ProxyJump) != 0 || d.Route() != "direct" {
		t.Errorf("ProxyJump none: %+v, %v", d.ProxyJump, err)
	}
	if _, err := c.Resolve("loop-a"); err == nil || !strings.Contains(err.Error(), "loops") {
		t.Errorf("a ProxyJump loop: %v, want an error saying it loops", err)
	}
	// Host * gives b a ProxyJump to itself.
	if _, err := c.Resolve("b"); err == nil || !strings.Contains(err.Error(), `Host * !b`) {
		t.Errorf("bastion jumping through itself: %v, want an error naming the fix", err)
	}
	for _, v := range []string{"a:b", "-oProxyCommand=x", "a b", "[::1"} {
		if _, err := parseJump(v); err == nil {
			t.Errorf("parseJump(%q) accepted", v)
		}
	}
	if j, err := parseJump("ssh://u@[fe80::1]:22"); err != nil || j.user != "u" || j.host != "fe80::1" || j.port != 22 {
		t.Errorf("parseJump(ssh://u@[fe80::1]:22) = %+v, %v", j, err)
	}
}

// TestResolveProxyCommand: the first of ProxyJump and ProxyCommand wins (as
// with OpenSSH), tokens are expanded with the dialled values and quoted when
// they are not plain words, and unknown tokens are refused.
func TestResolveProxyCommand(t *testing.T) {
	c, _ := loadConfig(t, `Host pc
  HostName 10.1.2.3
  Port 2200
  User u
  ProxyCommand ssh -W %h:%p gw %n %r %%
  ProxyJump ignored
Host jumpfirst
  ProxyJump gw
  ProxyCommand nc %h %p
Host badtoken
  ProxyCommand nc %C
Host gw
`)
	h, err := c.Resolve("pc")
	if err != nil {
		t.Fatal(err)
	}
	if len(h.ProxyJump) != 0 || h.ProxyCommand == "" {
		t.Fatalf("pc: ProxyJump %v, ProxyCommand %q: want only the ProxyCommand (it comes first)", h.ProxyJump, h.ProxyCommand)
	}
	if got, want := h.ProxyCommandLine(), "ssh -W 10.1.2.3:2200 gw pc u %"; got != want {
		t.Errorf("ProxyCommandLine = %q, want %q", got, want)
	}
	h.HostName, h.Name = "x'; rm -rf /; '", "-evil"
	if got, want := h.ProxyCommandLine(), `ssh -W 'x'\''; rm -rf /; '\'''`+`:2200 gw '-evil' u %`; got != want {
		t.Errorf("hostile values: ProxyCommandLine = %q, want %q", got, want)
	}
	j, err := c.Resolve("jumpfirst")
	if err != nil || len(j.ProxyJump) != 1 || j.ProxyCommand != "" {
		t.Errorf("jumpfirst: %+v, %v: want only the ProxyJump", j, err)
	}
	var ue *UnsupportedOptionError
	if _, err := c.Resolve("badtoken"); !errors.As(err, &ue) || ue.Host != "badtoken" || ue.Option != "ProxyCommand" {
		t.Errorf("ProxyCommand with %%C: %v", err)
	}
}

// TestResolveRefused: each option that changes where or how ssh connects,
// and that messor does not implement, refuses the host it applies to (the
// error names host and option), never the others; ControlPath and friends
// are ignored; UserKnownHostsFile none means no file.
func TestResolveRefused(t *testing.T) {
	c, _ := loadConfig(t, `Host rc
  RemoteCommand tmux attach
Host rcnone
  RemoteCommand none
Host lc
  LocalCommand echo hi
  PermitLocalCommand yes
Host lcoff
  LocalCommand echo hi
Host fd
  ProxyUseFdpass yes
Host tun
  Tunnel point-to-point
Host canon
  CanonicalizeHostname always
Host khc
  KnownHostsCommand /bin/true %H
Host bind
  BindAddress 10.0.0.9
Host bindif
  BindInterface eth1
Host viabad
  ProxyJump rc
Host ctl
  ControlMaster auto
  ControlPath ~/.ssh/cm-%r@%h:%p
  ControlPersist 10m
  UserKnownHostsFile none
`)
	for name, opt := range map[string]string{
		"rc": "RemoteCommand", "lc": "LocalCommand", "fd": "ProxyUseFdpass", "tun": "Tunnel",
		"canon": "CanonicalizeHostname", "khc": "KnownHostsCommand", "bind": "BindAddress", "bindif": "BindInterface",
		"viabad": "RemoteCommand",
	} {
		_, err := c.Resolve(name)
		var ue *UnsupportedOptionError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), "host "+name) || !strings.Contains(err.Error(), opt) {
			t.Errorf("host %s with %s: %v, want an *UnsupportedOptionError naming both", name, opt, err)
		}
	}
	for _, name := range []string{"rcnone", "lcoff", "ctl", "plain"} {
		if _, err := c.Resolve(name); err != nil {
			t.Errorf("host %s: %v", name, err)
		}
	}
	if h, _ := c.Resolve("ctl"); len(h.KnownHostsFiles) != 0 {
		t.Errorf("UserKnownHostsFile none: files %q", h.KnownHostsFiles)
	}
}

// TestResolveMatch: "Match all", "Match host" and "Match originalhost" are
// applied; a Match messor cannot evaluate refuses the hosts it may apply to
// when it sets something messor reads, and no others; a "Match host" that
// would apply by HostName but not by name is refused; a Match line the
// parser would misread in an Included file is an error.
func TestResolveMatch(t *testing.T) {
	c, home := loadConfig(t, `Host nas
  HostName 10.0.0.5
Match originalhost work-*
  User worker
Match host 10.0.*
  Port 2222
Match exec "test -e /tmp/on-vpn" originalhost vpn-*,!vpn-ok
  ProxyJump bastion
Match user root
  ServerAliveInterval 5
Host lc-*
  LocalCommand echo hi
Match exec "test -e /tmp/on-vpn" originalhost lc-*
  PermitLocalCommand yes
Match all
  User everyone
`)
	if h, err := c.Resolve("work-1"); err != nil || h.User != "worker" {
		t.Errorf("Match originalhost: %+v, %v", h, err)
	}
	if h, err := c.Resolve("plain"); err != nil || h.User != "everyone" {
		t.Errorf("Match all: %+v, %v", h, err)
	}
	var ue *UnsupportedOptionError
	_, err := c.Resolve("vpn-1")
	if !errors.As(err, &ue) || ue.Host != "vpn-1" || !strings.Contains(err.Error(), "Match exec") || !strings.Contains(err.Error(), ":7") {
		t.Errorf("Match exec that may apply: %v, want refused, naming the line", err)
	}
	if h, err := c.Resolve("vpn-ok"); err != nil || len(h.ProxyJump) != 0 {
		t.Errorf("Match exec whose originalhost leaves the host out: %+v, %v", h.ProxyJump, err)
	}
	if _, err := c.Resolve("lc-1"); !errors.As(err, &ue) || !strings.Contains(err.Error(), "Match exec") {
		t.Errorf("Match exec that may permit a LocalCommand: %v, want refused, naming the line", err)
	}
	if _, err := c.Resolve("nas"); !errors.As(err, &ue) || !strings.Contains(err.Error(), "Match host 10.0.*") {
		t.Errorf("Match host that applies by HostName only: %v", err)
	}
	if err := os.WriteFile(filepath.Join(home, ".ssh", "more"), []byte("Match host a user b\n  Port 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(home, ".ssh", "config"), []byte("Include "+filepath.Join(home, ".ssh", "more")+"\n"), 0o600)
	if _, err := LoadSSHConfig(home); err == nil || !strings.Contains(err.Error(), "more:1") {
		t.Errorf("Match host a user b in an Included file: %v, want an error naming the line", err)
	}
	// OpenSSH matches it against nas's HostName, and jumps.
	os.WriteFile(filepath.Join(home, ".ssh", "more"), []byte("Match host 10.0.0.*\n  ProxyJump bastion\n"), 0o600)
	os.WriteFile(filepath.Join(home, ".ssh", "config"), []byte("Host nas\n  HostName 10.0.0.5\nInclude more\n"), 0o600)
	c, err = LoadSSHConfig(home)
	if err != nil {
		t.Fatal(err)
	}
	if h, err := c.Resolve("nas"); !errors.As(err, &ue) || !strings.Contains(err.Error(), "more:1") {
		t.Errorf("Match host in an Included file that applies by HostName only: %s, %v; want refused, naming the line", h.Route(), err)
	}
}

// TestResolveAgreesWithOpenSSH: for hosts messor does not refuse, Resolve
// gives the HostName, Port, User and route that OpenSSH's own client
// resolves (ssh -G prints its resolved configuration without connecting).
func TestResolveAgreesWithOpenSSH(t *testing.T) {
	ssh, err := exec.LookPath("ssh")
	if err != nil {
		t.Fatalf("OpenSSH's ssh client is needed (apt-get install openssh-client): %v", err)
	}
	c, home := loadConfig(t, `Host pc
  HostName 10.0.0.1
  ProxyCommand ssh -W %h:%p gw
  ProxyJump j1
Host pj
  ProxyJump u@j2:2200,j3
  ProxyCommand nc %h %p
Host none-first
  ProxyJump none
  ProxyJump j1
  ProxyCommand nc %h %p
Host cmd-none
  ProxyCommand none
  ProxyJump j1
Match originalhost c*,!c9
  Port 2201
  ProxyJump j1
Match host d?
  User dora
Host *.lan !nas.lan
  HostName %h.example
  Port 2222
Host q1 "q2" "q 3"
  HostName %h.quoted
  ProxyJump j1
Host j1
  HostName jump.example
Match all
  User bob
`)
	for _, name := range []string{"pc", "pj", "none-first", "cmd-none", "c1", "c9", "d1", "x.lan", "nas.lan", "j1", "plain", "q2", "q"} {
		h, err := c.Resolve(name)
		if err != nil {
			t.Errorf("Resolve(%s): %v", name, err)
			continue
		}
		want := sshG(t, ssh, filepath.Join(home, ".ssh", "config"), name)
		var hops []string
		for _, j := range h.ProxyJump {
			hops = append(hops, fmt.Sprintf("%s=%s@%s:%d", j.Name, j.User, j.HostName, j.Port))
		}
		var wantHops []string
		if v := want["proxyjump"]; v != "" {
			for _, s := range strings.Split(v, ",") {
				j, err := parseJump(s)
				if err != nil {
					t.Fatalf("ssh -G %s: proxyjump %q: %v", name, v, err)
				}
				// OpenSSH reaches a hop with ssh -l USER -p PORT HOP.
				args := []string{j.host}
				if j.user != "" {
					args = append(args, "-l", j.user)
				}
				if j.port != 0 {
					args = append(args, "-p", fmt.Sprint(j.port))
				}
				w := sshG(t, ssh, filepath.Join(home, ".ssh", "config"), args...)
				wantHops = append(wantHops, fmt.Sprintf("%s=%s@%s:%s", j.host, w["user"], w["hostname"], w["port"]))
			}
		}
		got := fmt.Sprintf("hostname %s port %d user %s proxycommand %q proxyjump %q", h.HostName, h.Port, h.User, h.ProxyCommand, hops)
		exp := fmt.Sprintf("hostname %s port %s user %s proxycommand %q proxyjump %q", want["hostname"], want["port"], want["user"], want["proxycommand"], wantHops)
		if got != exp {
			t.Errorf("%s: messor resolves\n\t%s\nOpenSSH resolves\n\t%s", name, got, exp)
		}
	}
}

// sshG returns what ssh -G prints for args: keyword -> value.
func sshG(t *testing.T, ssh, config string, args ...string) map[string]string {
	t.Helper()
	out, err := exec.Command(ssh, append([]string{"-F", config, "-G"}, args...)...).Output()
	if err != nil {
		t.Fatalf("ssh -G %v: %v", args, err)
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(line, " "); ok {
			m[k] = v
		}
	}
	return m
}

// TestResolveNameCase: a name matches Host patterns without regard to case
// for everything Resolve reads, the route and the refusals included, so a
// block's HostName is never taken without its ProxyJump.
func TestResolveNameCase(t *testing.T) {
	c, _ := loadConfig(t, `Host office
  HostName 10.0.0.5
  ProxyJump Bastion
Host rc
  RemoteCommand ls
Host bastion
  HostName 10.0.0.1
  ProxyJump none
`)
	h, err := c.Resolve("Office")
	if err != nil {
		t.Fatal(err)
	}
	if h.HostName != "10.0.0.5" || h.Route() != "via ProxyJump Bastion" || h.ProxyJump[0].HostName != "10.0.0.1" {
		t.Errorf("Office: HostName %s, %s, want 10.0.0.5 via ProxyJump to bastion's 10.0.0.1", h.HostName, h.Route())
	}
	var ue *UnsupportedOptionError
	if _, err := c.Resolve("RC"); !errors.As(err, &ue) {
		t.Errorf("RC with RemoteCommand: %v, want an *UnsupportedOptionError", err)
	}
	// The parser reads an Included file's patterns as written: one that
	// could never match (upper case, a tab inside) refuses the config.
	home := t.TempDir()
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	os.WriteFile(filepath.Join(home, ".ssh", "config"), []byte("Include more\n"), 0o600)
	for _, block := range []string{"Host NAS # the NAS\n", "Host a\tnas\n", "Match host NAS\n"} {
		os.WriteFile(filepath.Join(home, ".ssh", "more"), []byte(block+"  ProxyJump j\nHost j\n  ProxyJump none\n"), 0o600)
		c, err := LoadSSHConfig(home)
		if err == nil {
			h, _ := c.Resolve("NAS")
			t.Errorf("%q in an Included file: loaded, NAS goes %s; want an error naming the line", block, h.Route())
		} else if !strings.Contains(err.Error(), "more:1") {
			t.Errorf("%q in an Included file: %v, want an error naming the line", block, err)
		}
	}
	os.WriteFile(filepath.Join(home, ".ssh", "more"), []byte("Host nas # The NAS\n  ProxyJump j\nMatch Host j\n  ProxyJump none\n"), 0o600)
	if c, err := LoadSSHConfig(home); err != nil {
		t.Errorf("a lower-case Host line with a comment in an Included file: %v", err)
	} else if h, err := c.Resolve("NAS"); err != nil || h.Route() != "via ProxyJump j" {
		t.Errorf("NAS, Host nas in an Included file: %s, %v", h.Route(), err)
	}
}

// TestResolveQuotedHost: quoted Host patterns apply as OpenSSH applies them
// (TestResolveAgreesWithOpenSSH), and where messor cannot read them, the
// config is refused rather than the block skipped: unbalanced quotes (as
// OpenSSH refuses them), or quotes in an Included file.
func TestResolveQuotedHost(t *testing.T) {
	home := t.TempDir()
	ssh := filepath.Join(home, ".ssh")
	os.MkdirAll(ssh, 0o700)
	os.WriteFile(filepath.Join(ssh, "config"), []byte("Host a \"b\n  ProxyJump j\n"), 0o600)
	if _, err := LoadSSHConfig(home); err == nil || !strings.Contains(err.Error(), "config:1") {
		t.Errorf("Host line with unbalanced quotes: %v, want an error naming the line", err)
	}
	os.WriteFile(filepath.Join(ssh, "more"), []byte("Host \"nas\"\n  ProxyJump j\n"), 0o600)
	os.WriteFile(filepath.Join(ssh, "config"), []byte("Include more\n"), 0o600)
	c, err := LoadSSHConfig(home)
	if err == nil {
		h, _ := c.Resolve("nas")
		t.Errorf("Host \"nas\" in an Included file: loaded, nas goes %s; want an error naming the line", h.Route())
	} else if !strings.Contains(err.Error(), "more:1") {
		t.Errorf("Host \"nas\" in an Included file: %v, want an error naming the line", err)
	}
}

// TestResolveProxyCommandNotNone: OpenSSH reads the rest of a ProxyCommand
// line as the command, so "none" with a comment after it, or in quotes, is
// a command named none (which fails), not "no ProxyCommand": the host is
// refused rather than dialled directly.
func TestResolveProxyCommandNotNone(t *testing.T) {
	c, _ := loadConfig(t, "Host c1\n  ProxyCommand none # off\nHost c2\n  ProxyCommand \"none\"\nHost c3\n  ProxyCommand NONE\nHost *\n  ProxyJump j\nHost j\n  ProxyJump none\n")
	for _, name := range []string{"c1", "c2"} {
		h, err := c.Resolve(name)
		var ue *UnsupportedOptionError
		if !errors.As(err, &ue) {
			t.Errorf("%s: %s, %v; want an *UnsupportedOptionError", name, h.Route(), err)
		}
	}
	if h, err := c.Resolve("c3"); err != nil || h.Route() != "direct" {
		t.Errorf("ProxyCommand NONE: %s, %v; want direct", h.Route(), err)
	}
}

// TestResolveSystemConfig: /etc/ssh/ssh_config is read after the user's
// file, as OpenSSH reads it: a route or a refused option set there applies
// unless the user's file set the option first.
func TestResolveSystemConfig(t *testing.T) {
	sys := filepath.Join(t.TempDir(), "ssh_config")
	os.WriteFile(filepath.Join(filepath.Dir(sys), "corp.conf"), []byte("Host *.corp\n  ProxyCommand nc %h %p\n"), 0o600)
	os.WriteFile(sys, []byte("Include corp.conf\nHost nas n2\n  HostName 10.0.0.5\n  RemoteCommand tmux\nHost *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"), 0o600)
	old := systemConfig
	systemConfig = sys
	defer func() { systemConfig = old }()
	c, _ := loadConfig(t, "Host b.corp\n  ProxyCommand none\nHost n2\n  HostName 10.0.0.6\n  RemoteCommand none\n")
	if h, err := c.Resolve("a.corp"); err != nil || h.ProxyCommand != "nc %h %p" {
		t.Errorf("a.corp: %s, %v; want the system's ProxyCommand", h.Route(), err)
	}
	if h, _ := c.Resolve("a.corp"); h.StrictHostKeyChecking != "" || slices.Contains(h.KnownHostsFiles, "/dev/null") {
		t.Errorf("a.corp: StrictHostKeyChecking %q, known_hosts %q: taken from the system's file, which may not trust more keys", h.StrictHostKeyChecking, h.KnownHostsFiles)
	}
	if h, err := c.Resolve("b.corp"); err != nil || h.Route() != "direct" {
		t.Errorf("b.corp: %s, %v; want direct (ProxyCommand none in the user's file)", h.Route(), err)
	}
	var ue *UnsupportedOptionError
	if _, err := c.Resolve("nas"); !errors.As(err, &ue) {
		t.Errorf("nas: %v; want the system's RemoteCommand refused", err)
	}
	if h, err := c.Resolve("n2"); err != nil || h.HostName != "10.0.0.6" {
		t.Errorf("n2: %s, %v; want the user's HostName, RemoteCommand none", h.HostName, err)
	}
	// Fedora's system file Includes one with "Match final all": skipped.
	os.WriteFile(filepath.Join(filepath.Dir(sys), "50-redhat.conf"), []byte("Match final all\n  GSSAPIAuthentication yes\n"), 0o600)
	os.WriteFile(sys, []byte("Include 50-redhat.conf\nHost *\n  ProxyCommand nc %h %p\n"), 0o600)
	c, _ = loadConfig(t, "Host x\n  Port 2222\n")
	if h, err := c.Resolve("x"); err != nil || h.Port != 2222 {
		t.Errorf("a system file messor cannot read: x %s port %d, %v; want the user's file still read", h.Route(), h.Port, err)
	}
}

// TestResolveQuotedInclude: a quoted Include path is read as OpenSSH reads
// it; one with a blank, which the parser cannot read, refuses the config
// rather than leaving the file out.
func TestResolveQuotedInclude(t *testing.T) {
	home := t.TempDir()
	dir := filepath.Join(home, "my dir")
	os.MkdirAll(dir, 0o700)
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	inc := []byte("Host nas\n  ProxyJump j1\nHost j1\n  ProxyJump none\n")
	os.WriteFile(filepath.Join(dir, "inc.conf"), inc, 0o600)
	os.WriteFile(filepath.Join(home, ".ssh", "inc.conf"), inc, 0o600)
	os.WriteFile(filepath.Join(home, ".ssh", "config"), []byte("Include \"~/.ssh/inc.conf\"\n"), 0o600)
	if c, err := LoadSSHConfig(home); err != nil {
		t.Errorf("Include \"~/.ssh/inc.conf\": %v", err)
	} else if h, err := c.Resolve("nas"); err != nil || h.Route() != "via ProxyJump j1" {
		t.Errorf("Include \"~/.ssh/inc.conf\": nas %s, %v; want via ProxyJump j1", h.Route(), err)
	}
	os.WriteFile(filepath.Join(home, ".ssh", "config"), []byte("Include \""+dir+"/inc.conf\"\n"), 0o600)
	if c, err := LoadSSHConfig(home); err == nil {
		h, _ := c.Resolve("nas")
		t.Errorf("Include of a path with a blank: loaded, nas goes %s; want an error naming the line", h.Route())
	} else if !strings.Contains(err.Error(), "config:1") {
		t.Errorf("Include of a path with a blank: %v, want an error naming the line", err)
	}
}
