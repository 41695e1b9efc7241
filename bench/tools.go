package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// sample is one run of one tool on one workload.
type sample struct {
	Pickup, Dropoff time.Duration
	Prep            time.Duration // nncp-file: packing into the spool on the source
	RSSPickup       int64         // peak RSS in KiB of the local process (messor only)
	RSSDropoff      int64
	// CPU is the whole machine's busy CPU time (every process: the tool,
	// sshd, sftp-server, hashing on the host) over pickup and dropoff,
	// from /proc/stat. Near 2 s per second of wall time on this 2-core
	// machine means the run was CPU-bound.
	CPU time.Duration
	// LocalCPU is the carrier side's own CPU time (user + system of the
	// tool and the children it waited for, e.g. scp's ssh), from wait4:
	// what a phone's battery pays. Other load on the machine does not
	// count here.
	LocalCPU time.Duration
	// ShellStarts is how many times the host's login shell started
	// (heavy-shell profile only): one per ssh session, exec or SFTP.
	ShellStarts int
}

func (s sample) Total() time.Duration { return s.Pickup + s.Dropoff }

// cmdResult is what one process did.
type cmdResult struct {
	Elapsed time.Duration
	MaxRSS  int64         // KiB
	CPU     time.Duration // machine-wide busy
	Local   time.Duration // the process tree's own user + system time
	Out     string
}

// run runs argv with env, timing it from start to exit.
func (r *runner) run(env []string, argv ...string) (cmdResult, error) {
	ctx, cancel := runCtx()
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Stdin = nil
	cpu0 := busyCPU()
	start := time.Now()
	err := cmd.Start()
	var hwm atomic.Int64
	if err == nil {
		stop := make(chan struct{})
		polled := make(chan struct{})
		go pollHWM(cmd.Process.Pid, &hwm, stop, polled)
		err = cmd.Wait()
		close(stop)
		<-polled
	}
	res := cmdResult{Elapsed: time.Since(start), Out: out.String(), MaxRSS: hwm.Load(), CPU: busyCPU() - cpu0}
	if ps := cmd.ProcessState; ps != nil {
		res.Local = ps.UserTime() + ps.SystemTime()
	}
	r.logf("  $ %s (%.3fs)\n%s", strings.Join(argv, " "), res.Elapsed.Seconds(), indent(res.Out))
	if err != nil {
		return res, fmt.Errorf("%s: %w\n%s", strings.Join(argv, " "), err, res.Out)
	}
	return res, nil
}

// busyCPU is the machine's busy CPU time since boot: every field of
// /proc/stat's "cpu" line but idle and iowait (jiffies, USER_HZ = 100).
func busyCPU() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var busy int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 || i >= 8 { // idle, iowait; guest time is already in user
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		busy += n
	}
	return time.Duration(busy) * 10 * time.Millisecond
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}

// pollHWM records the peak resident set (VmHWM, KiB) of pid until stop.
// wait4's ru_maxrss would not do: Go starts children with vfork, and
// Linux carries the parent's high-water mark across exec into the child's
// figure, so every child would report at least this program's own RSS.
// VmHWM belongs to the child's own address space; being a high-water mark
// it only misses growth in the last polling interval.
func pollHWM(pid int, hwm *atomic.Int64, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	path := fmt.Sprintf("/proc/%d/status", pid)
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		if b, err := os.ReadFile(path); err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
					if n, err := strconv.ParseInt(f[1], 10, 64); err == nil && n > hwm.Load() {
						hwm.Store(n)
					}
				}
			}
		}
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

// transferTools are the tools that move a workload host A -> carrier -> host B.
var transferTools = []string{"messor", "scp", "sftp", "rsync", "nncp"}

// peers are the tools messor is compared with.
var peers = map[string]bool{"scp": true, "sftp": true, "rsync": true, "nncp": true}

// paths of one run.
type runPaths struct {
	outbox string // on host A: messor/outbox/hostb
	local  string // the carrier's side for this tool
	dest   string // on host B, where the tree must arrive
}

func (r *runner) paths(tool string) runPaths {
	p := runPaths{
		outbox: filepath.Join(r.hostA.LoginDir, "messor", "outbox", "hostb"),
		local:  filepath.Join(r.root, "carrier", tool),
		dest:   filepath.Join(r.hostB.LoginDir, "recv", tool),
	}
	if tool == "messor" {
		p.dest = filepath.Join(r.hostB.LoginDir, "messor", "inbox", "hosta")
	}
	return p
}

// reset lays the workload in host A's outbox afresh and empties the
// carrier side and host B.
func (r *runner) reset(w *workload, tool string) (runPaths, error) {
	p := r.paths(tool)
	for _, d := range []string{p.outbox, p.local, p.dest,
		filepath.Join(r.hostB.LoginDir, "messor", "inbox"), filepath.Join(r.hostB.LoginDir, "recv")} {
		if err := os.RemoveAll(d); err != nil {
			return p, err
		}
	}
	if err := linkTree(r.seedDir(w), p.outbox, r.acct); err != nil {
		return p, err
	}
	for _, d := range []string{filepath.Join(r.hostB.LoginDir, "messor", "inbox"), filepath.Join(r.hostB.LoginDir, "recv")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return p, err
		}
		if err := r.acct.chownTree(filepath.Dir(d)); err != nil {
			return p, err
		}
	}
	// Write back the previous run's dirty pages now, not during this one.
	syscall.Sync()
	return p, os.MkdirAll(p.local, 0o755)
}

// transfer runs tool once on w: pickup from host A, dropoff to host B,
// then checks what arrived.
func (r *runner) transfer(w *workload, tool string) (sample, error) {
	if tool == "nncp" {
		return r.nncp(w)
	}
	p, err := r.reset(w, tool)
	if err != nil {
		return sample{}, err
	}
	home := r.home(w)
	env := home.env()
	starts0 := r.ph.shellStarts()
	ssh := "ssh -F " + home.Config
	stage := filepath.Join(p.local, "stage")
	var s sample
	var pick, drop cmdResult
	switch tool {
	case "messor":
		buf := filepath.Join(p.local, "buffer")
		args := func(verb string) []string {
			return []string{r.messor, "--buffer", buf, "--limit", "1TiB", "--hosts", home.Hosts, "--settle", "0", verb}
		}
		if pick, err = r.run(env, args("pickup")...); err != nil {
			return s, err
		}
		if drop, err = r.run(env, args("dropoff")...); err != nil {
			return s, err
		}
		s.RSSPickup, s.RSSDropoff = pick.MaxRSS, drop.MaxRSS
		if err := checkMessorOutput(pick.Out, drop.Out, w); err != nil {
			return s, err
		}
	case "scp":
		if pick, err = r.run(env, "scp", "-F", home.Config, "-r", "-q", "hosta:"+p.outbox, stage); err != nil {
			return s, err
		}
		if drop, err = r.run(env, "scp", "-F", home.Config, "-r", "-q", stage, "hostb:"+p.dest); err != nil {
			return s, err
		}
	case "sftp":
		get := filepath.Join(p.local, "get.batch")
		put := filepath.Join(p.local, "put.batch")
		if err := os.WriteFile(get, []byte("get -R "+p.outbox+" "+stage+"\n"), 0o644); err != nil {
			return s, err
		}
		if err := os.WriteFile(put, []byte("put -R "+stage+" "+p.dest+"\n"), 0o644); err != nil {
			return s, err
		}
		if pick, err = r.run(env, "sftp", "-F", home.Config, "-q", "-b", get, "hosta"); err != nil {
			return s, err
		}
		if drop, err = r.run(env, "sftp", "-F", home.Config, "-q", "-b", put, "hostb"); err != nil {
			return s, err
		}
	case "rsync":
		if pick, err = r.run(env, "rsync", "-a", "--remove-source-files", "-e", ssh, "hosta:"+p.outbox+"/", stage+"/"); err != nil {
			return s, err
		}
		if drop, err = r.run(env, "rsync", "-a", "--remove-source-files", "-e", ssh, stage+"/", "hostb:"+p.dest+"/"); err != nil {
			return s, err
		}
	default:
		return s, fmt.Errorf("unknown tool %q", tool)
	}
	s.Pickup, s.Dropoff = pick.Elapsed, drop.Elapsed
	s.CPU = pick.CPU + drop.CPU
	s.LocalCPU = pick.Local + drop.Local
	if w.profile() == profHeavy {
		s.ShellStarts = r.ph.shellStarts() - starts0
	}
	return s, r.verify(w, p.dest)
}

var summaryFiles = regexp.MustCompile(`(picked up|delivered) (\d+) file`)

// checkMessorOutput makes sure messor said it moved every file (a
// dedup-heavy set is picked up as fewer stored objects, but every path
// is still reported).
func checkMessorOutput(pick, drop string, w *workload) error {
	for _, out := range []string{pick, drop} {
		if strings.Contains(out, "FAILED") || strings.Contains(out, "waiting") || strings.Contains(out, "skipped") {
			return fmt.Errorf("messor did not move everything:\n%s", out)
		}
		if !summaryFiles.MatchString(out) {
			return fmt.Errorf("messor moved nothing:\n%s", out)
		}
	}
	return nil
}

// verify compares the tree at dir with w.
func (r *runner) verify(w *workload, dir string) error {
	got, err := readManifest(dir)
	if err != nil {
		return fmt.Errorf("verify %s: %w", dir, err)
	}
	if d := r.want[w.Key].diff(got); d != "" {
		return fmt.Errorf("verify %s: %s", dir, d)
	}
	return nil
}

// nncp carries w's files from node a to node b through a carrier
// directory: nncp-file on a (packing into a's spool), nncp-xfer -tx to
// the carrier directory ("pickup"), nncp-xfer -rx on b and nncp-toss
// ("dropoff"). Every packet is encrypted and signed; there is no network.
func (r *runner) nncp(w *workload) (sample, error) {
	var s sample
	if len(w.files) != 1 {
		return s, errors.New("nncp: only single-file workloads")
	}
	n := r.nncpNodes
	if n == nil {
		return s, errors.New("nncp: not set up")
	}
	for _, d := range []string{n.carrier, n.spoolA, n.spoolB, n.incoming} {
		if err := os.RemoveAll(d); err != nil {
			return s, err
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			return s, err
		}
	}
	env := os.Environ()
	q := []string{"-noprogress", "-quiet"}
	src := filepath.Join(r.seedDir(w), filepath.FromSlash(w.files[0].Path))
	file, err := r.run(env, append(append([]string{"nncp-file", "-cfg", n.cfgA}, q...), src, "b:")...)
	if err != nil {
		return s, err
	}
	tx, err := r.run(env, append(append([]string{"nncp-xfer", "-cfg", n.cfgA, "-tx", "-mkdir"}, q...), n.carrier)...)
	if err != nil {
		return s, err
	}
	rx, err := r.run(env, append(append([]string{"nncp-xfer", "-cfg", n.cfgB, "-rx"}, q...), n.carrier)...)
	if err != nil {
		return s, err
	}
	toss, err := r.run(env, append([]string{"nncp-toss", "-cfg", n.cfgB}, q...)...)
	if err != nil {
		return s, err
	}
	s.Prep, s.Pickup, s.Dropoff = file.Elapsed, tx.Elapsed, rx.Elapsed+toss.Elapsed
	s.CPU = tx.CPU + rx.CPU + toss.CPU
	s.LocalCPU = tx.Local + rx.Local + toss.Local
	got, err := readManifest(n.incoming)
	if err != nil {
		return s, err
	}
	// nncp-file sends under the source's base name.
	want := manifest{}
	for p, h := range r.want[w.Key] {
		want[filepath.Base(p)] = h
	}
	if d := want.diff(got); d != "" {
		return s, fmt.Errorf("nncp: verify %s: %s", n.incoming, d)
	}
	return s, nil
}

// nncpNodes are two NNCP nodes that know each other.
type nncpNodes struct {
	cfgA, cfgB     string
	spoolA, spoolB string
	carrier        string // the directory nncp-xfer writes to and reads from
	incoming       string // b's incoming directory for files from a
	version        string
}

var nncpKey = regexp.MustCompile(`(?m)^\s+(id|exchpub|exchprv|signpub|signprv|noisepub|noiseprv): (\S+)$`)

// setupNNCP makes nodes a and b under dir with nncp-cfgnew's keys.
func setupNNCP(dir string) (*nncpNodes, error) {
	if _, err := exec.LookPath("nncp-cfgnew"); err != nil {
		return nil, errors.New("nncp not installed (Debian: apt-get install nncp)")
	}
	n := &nncpNodes{
		cfgA: filepath.Join(dir, "a.json"), cfgB: filepath.Join(dir, "b.json"),
		spoolA: filepath.Join(dir, "spool-a"), spoolB: filepath.Join(dir, "spool-b"),
		carrier: filepath.Join(dir, "carrier"), incoming: filepath.Join(dir, "incoming-b"),
	}
	if out, err := exec.Command("nncp-cfgnew", "-version").CombinedOutput(); err == nil {
		n.version = strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	keys := func() (map[string]string, error) {
		out, err := exec.Command("nncp-cfgnew", "-nocomments").Output()
		if err != nil {
			return nil, fmt.Errorf("nncp-cfgnew: %w", err)
		}
		k := map[string]string{}
		for _, m := range nncpKey.FindAllStringSubmatch(string(out), -1) {
			if _, ok := k[m[1]]; !ok { // self comes first
				k[m[1]] = m[2]
			}
		}
		if len(k) != 7 {
			return nil, fmt.Errorf("nncp-cfgnew: unexpected output:\n%s", out)
		}
		return k, nil
	}
	a, err := keys()
	if err != nil {
		return nil, err
	}
	b, err := keys()
	if err != nil {
		return nil, err
	}
	pub := func(k map[string]string, extra string) string {
		return fmt.Sprintf(`{"id": %q, "exchpub": %q, "signpub": %q, "noisepub": %q%s}`,
			k["id"], k["exchpub"], k["signpub"], k["noisepub"], extra)
	}
	self := func(k map[string]string) string {
		return fmt.Sprintf(`{"id": %q, "exchpub": %q, "exchprv": %q, "signpub": %q, "signprv": %q, "noisepub": %q, "noiseprv": %q}`,
			k["id"], k["exchpub"], k["exchprv"], k["signpub"], k["signprv"], k["noisepub"], k["noiseprv"])
	}
	cfg := func(me map[string]string, spool, peerName string, peer map[string]string, incoming string) string {
		extra := ""
		if incoming != "" {
			extra = fmt.Sprintf(`, "incoming": %q`, incoming)
		}
		return fmt.Sprintf(`{"spool": %q, "log": %q, "self": %s, "neigh": {"self": %s, %q: %s}}`,
			spool, spool+".log", self(me), pub(me, ""), peerName, pub(peer, extra))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(n.cfgA, []byte(cfg(a, n.spoolA, "b", b, "")), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(n.cfgB, []byte(cfg(b, n.spoolB, "a", a, n.incoming)), 0o600); err != nil {
		return nil, err
	}
	return n, nil
}

// ttfb measures, for a hosts-file host that is reachable, the time from
// starting `messor pickup` to the first byte of file data landing in the
// buffer.
func (r *runner) ttfb(w *workload) (time.Duration, error) {
	p, err := r.reset(w, "messor")
	if err != nil {
		return 0, err
	}
	home := r.home(w)
	buf := filepath.Join(p.local, "buffer")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.messor, "--buffer", buf, "--limit", "1TiB", "--hosts", home.Hosts, "--settle", "0", "pickup")
	cmd.Env = home.envMDNS() // as a user runs it: hosts-file hosts are served while mDNS browses
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	partials := filepath.Join(buf, "partial")
	for ctx.Err() == nil {
		if ents, err := os.ReadDir(partials); err == nil {
			for _, e := range ents {
				if info, err := e.Info(); err == nil && info.Mode().IsRegular() && info.Size() > 0 {
					return time.Since(start), nil
				}
			}
		}
		time.Sleep(200 * time.Microsecond)
	}
	return 0, fmt.Errorf("ttfb: no data in %s within a minute:\n%s", partials, out.String())
}

// sshTrue times `ssh host true`: connect, key exchange, login and one exec,
// the floor for any tool that starts a remote command.
func (r *runner) sshTrue(w *workload) (time.Duration, error) {
	home := r.home(w)
	res, err := r.run(home.env(), "ssh", "-F", home.Config, "hosta", "true")
	return res.Elapsed, err
}
