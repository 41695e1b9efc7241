// Command bench measures messor against scp, sftp, rsync and NNCP on real
// OpenSSH sshd hosts on loopback, and on an emulated Wi-Fi link.
//
//	go run ./bench                 # the full run, every profile (about 45 minutes here)
//	go run ./bench --profile quick # as before the profiles (about 15 minutes)
//	go run ./bench --smoke         # tiny sizes, one run: a check that it all works
//	go run ./bench --scale 0.25 --runs 5 --only big,small
//	go run ./bench --profile quick,heavy-shell --only big,small
//
// Two sshd hosts (hosta, hostb) run as root on 127.0.0.1 with their own
// config, host key and authorized_keys, and the OpenSSH tools use the
// cipher messor negotiates. Every tool runs on each host profile
// (profiles.go) against the same sshd processes: quick logs in as the
// dedicated user messorbench (shell /bin/sh, so a remote exec costs no
// login-shell start-up), heavy-shell as its twin whose login shell sleeps
// 0.5 s first, no-exec with a key restricted to internal-sftp. The messor
// binary is built once from ./cmd/messor. Each figure is the median of
// --runs runs; the report is Markdown on stdout (and in --out).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// options are the command line.
type options struct {
	Scale      float64
	Smoke      bool
	Runs       int
	Tools      string // comma-separated subset of transferTools
	Only       string // comma-separated workload keys; empty: all
	Profiles   string // comma-separated host profiles; empty: quick
	Workdir    string // kept if set; else a temp dir, removed at the end
	Out        string
	Cipher     string
	CPUProfile string // directory: profile in-process carrier runs
	Verbose    bool
	Log        io.Writer // progress; default stderr
}

func main() {
	var o options
	flag.Float64Var(&o.Scale, "scale", 1, "multiply workload sizes and file counts by this")
	flag.BoolVar(&o.Smoke, "smoke", false, "tiny workloads and one run: checks every tool works (CI)")
	flag.IntVar(&o.Runs, "runs", 3, "runs per figure; the median is reported")
	flag.StringVar(&o.Tools, "tools", strings.Join(transferTools, ","), "tools to run")
	flag.StringVar(&o.Only, "only", "", "run only these workloads (comma-separated keys: big,small,photos,dedup,e2e,wifi-big,wifi-small,wifi-photos,ttfb,rss100k)")
	flag.StringVar(&o.Profiles, "profile", strings.Join(allProfiles, ","), "host profiles to run every tool on: quick (/bin/sh user), heavy-shell (login shell start-up 0.5 s), no-exec (key restricted to internal-sftp)")
	flag.StringVar(&o.Workdir, "workdir", "", "work directory, kept afterwards (default: a temporary one, removed)")
	flag.StringVar(&o.Out, "out", "", "also write the Markdown report to this file")
	flag.StringVar(&o.Cipher, "cipher", "auto", `cipher for the OpenSSH tools: "auto" = the one messor negotiates, "" = OpenSSH's default, or a name`)
	flag.StringVar(&o.CPUProfile, "cpuprofile", "", "after measuring, run the carrier in-process on big, small and wifi-small with a CPU profile written to this directory")
	flag.BoolVar(&o.Verbose, "v", false, "print every command and its output")
	flag.Parse()
	ctx := context.Background()
	rep, err := run(ctx, o)
	if rep != nil {
		fmt.Print(rep.Markdown())
		if o.Out != "" {
			if werr := os.WriteFile(o.Out, []byte(rep.Markdown()), 0o644); werr != nil {
				fmt.Fprintln(os.Stderr, "bench:", werr)
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	if rep.Failed() {
		os.Exit(1)
	}
}

// runner holds a bench run's hosts and state.
type runner struct {
	o         options
	root      string
	acct      account
	hostA     *sshdHost
	hostB     *sshdHost
	homes     map[string]*clientHome // by link + "/" + profile
	profiles  []string
	ph        profileHosts
	messor    string
	want      map[string]manifest // by workload key
	nncpNodes *nncpNodes
	log       io.Writer // command log (file, and stderr with -v)
	progress  io.Writer
}

func (r *runner) logf(format string, args ...any) { fmt.Fprintf(r.log, format, args...) }

func (r *runner) say(format string, args ...any) {
	if !r.o.Verbose { // else r.log includes r.progress
		fmt.Fprintf(r.progress, format+"\n", args...)
	}
	fmt.Fprintf(r.log, format+"\n", args...)
}

// home is the carrier HOME for w's link and profile; a workload measured
// on one profile only (rss100k, --cpuprofile) runs on the first selected.
func (r *runner) home(w *workload) *clientHome {
	prof := w.Profile
	if prof == "" {
		prof = r.profiles[0]
	}
	return r.homes[w.Link+"/"+prof]
}

func (r *runner) seedDir(w *workload) string { return filepath.Join(r.root, "seed", w.Key) }

// run sets up the hosts, runs every selected workload and returns the report.
func run(ctx context.Context, o options) (*report, error) {
	if o.Runs < 1 {
		o.Runs = 1
	}
	if o.Smoke {
		o.Runs = 1
	}
	if o.Scale <= 0 {
		o.Scale = 1
	}
	if o.Log == nil {
		o.Log = os.Stderr
	}
	if _, err := findSSHD(); err != nil {
		return nil, err
	}
	profiles, err := o.profiles()
	if err != nil {
		return nil, err
	}
	for _, t := range splitList(o.Tools) {
		if t != "messor" && t != "nncp" {
			if _, err := exec.LookPath(t); err != nil {
				return nil, fmt.Errorf("%s not found (apt-get install openssh-client rsync)", t)
			}
		}
	}
	r := &runner{o: o, want: map[string]manifest{}, homes: map[string]*clientHome{}, progress: o.Log, profiles: profiles}
	root := o.Workdir
	if root == "" {
		var err error
		if root, err = os.MkdirTemp("", "messor-bench-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(root)
	}
	root, err = filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, err
	}
	// The hosts' user must traverse it.
	if err := os.Chmod(root, 0o755); err != nil {
		return nil, err
	}
	r.root = root
	logf, err := os.Create(filepath.Join(root, "bench.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	r.log = logf
	if o.Verbose {
		r.log = io.MultiWriter(logf, o.Log)
	}

	rep := &report{Opts: o, Machine: machineInfo()}
	if r.acct, err = ensureAccount(); err != nil {
		return nil, err
	}
	rep.Account = fmt.Sprintf("%s (shell %s): %s", r.acct.Name, r.acct.Shell, r.acct.Note)

	r.say("building messor")
	r.messor = filepath.Join(root, "messor")
	modDir, err := moduleDir()
	if err != nil {
		return nil, err
	}
	build := exec.Command("go", "build", "-o", r.messor, "./cmd/messor")
	build.Dir = modDir
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build ./cmd/messor: %v\n%s", err, out)
	}

	clientPub, clientPEM, err := newClientKey()
	if err != nil {
		return nil, err
	}
	restrictedPub, restrictedPEM, err := newClientKey()
	if err != nil {
		return nil, err
	}
	if slices.Contains(profiles, profHeavy) {
		if r.ph, err = setupHeavyShell(filepath.Join(root, "heavy-shell"), r.acct); err != nil {
			return nil, err
		}
	}
	r.ph.Restricted = restrictedPub
	// Ciphers first, on a throwaway host logging at DEBUG1 (the measured
	// hosts log at INFO).
	cipher, notes, err := r.probeCiphers(clientPub, clientPEM)
	if err != nil {
		return nil, err
	}
	rep.Ciphers = notes
	r.say("ciphers: %s", strings.Join(notes, "; "))

	for _, name := range []string{"hosta", "hostb"} {
		login := filepath.Join(root, name, "login")
		if err := os.MkdirAll(filepath.Join(login, "messor", "outbox"), 0o755); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Join(login, "messor", "inbox"), 0o755); err != nil {
			return nil, err
		}
		if err := r.acct.chownTree(filepath.Join(root, name)); err != nil {
			return nil, err
		}
		h, err := startSSHD(name, filepath.Join(root, name, "sshd"), login, r.acct, clientPub, r.ph, "INFO")
		if err != nil {
			return nil, err
		}
		defer h.Stop()
		if name == "hosta" {
			r.hostA = h
		} else {
			r.hostB = h
		}
	}
	hosts := []*sshdHost{r.hostA, r.hostB}
	tb := &tbAdapter{}
	defer tb.close()
	pa, pb := wifiProxy(tb, r.hostA.Addr()), wifiProxy(tb, r.hostB.Addr())
	linkPorts := map[string]map[string]int{
		"loopback": {"hosta": r.hostA.Port, "hostb": r.hostB.Port},
		"wifi":     {"hosta": pa.Port(), "hostb": pb.Port()},
	}
	for link, ports := range linkPorts {
		for _, prof := range profiles {
			user, pem := r.acct.Name, clientPEM
			switch prof {
			case profHeavy:
				user = r.ph.SlowUser
			case profNoExec:
				pem = restrictedPEM
			}
			dir := filepath.Join(root, "home-"+link+"-"+prof)
			if r.homes[link+"/"+prof], err = writeClientHome(dir, pem, hosts, ports, user, cipher); err != nil {
				return nil, err
			}
		}
	}
	if r.wants("nncp") && r.selected("e2e") {
		if r.nncpNodes, err = setupNNCP(filepath.Join(root, "nncp")); err != nil {
			rep.NNCP = err.Error()
			r.say("nncp: %v", err)
		} else {
			rep.NNCP = r.nncpNodes.version
		}
	}

	for _, w := range r.workloads() {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		if !r.selected(w.Key) {
			continue
		}
		switch w.Key {
		case "ttfb":
			rep.TTFB = r.measureTTFB(w)
			continue
		case "rss100k":
			rep.RSS100k = r.measureRSS100k(w)
			continue
		}
		rep.Results = append(rep.Results, r.measure(w)...)
	}
	if o.CPUProfile != "" {
		if err := r.profile(ctx, o.CPUProfile); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

func (r *runner) wants(tool string) bool {
	for _, t := range splitList(r.o.Tools) {
		if t == tool {
			return true
		}
	}
	return false
}

func (r *runner) selected(key string) bool {
	only := splitList(r.o.Only)
	if len(only) == 0 {
		return true
	}
	for _, k := range only {
		if k == key {
			return true
		}
	}
	return false
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// prepare writes w's seed tree and remembers its manifest.
func (r *runner) prepare(w *workload) error {
	dir := r.seedDir(w)
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	m, err := w.generate(dir)
	if err != nil {
		return err
	}
	r.want[w.Key] = m
	return r.acct.chownTree(dir)
}

// measure runs every tool on w on each profile, --runs times, round
// robin over profiles and tools within each run, so the machine's drift
// spreads evenly: one result per profile.
func (r *runner) measure(w *workload) []*result {
	r.say("%s: %d files, %s, %s link", w.Title, w.Count(), fmtBytes(w.Bytes()), w.Link)
	var out []*result
	for _, prof := range r.profiles {
		pw := *w
		pw.Profile = prof
		res := &result{W: &pw, Cells: map[string]*cell{}, NA: map[string]string{}}
		for _, t := range splitList(r.o.Tools) {
			switch {
			case !w.runs(t):
			case t == "nncp" && (r.nncpNodes == nil || w.Key != "e2e"):
			case t == "nncp" && prof != r.profiles[0]:
				res.NA[t] = "nncp uses no ssh: see the " + r.profiles[0] + " profile"
			case prof == profNoExec && needsExec[t] != "":
				res.NA[t] = needsExec[t]
			default:
				res.Order = append(res.Order, t)
				res.Cells[t] = &cell{}
			}
		}
		out = append(out, res)
	}
	if err := r.prepare(w); err != nil {
		for _, res := range out {
			res.Err = err
		}
		return out
	}
	defer os.RemoveAll(r.seedDir(w))
	for i := 0; i < r.o.Runs; i++ {
		for _, res := range out {
			for _, t := range res.Order {
				c := res.Cells[t]
				if c.Err != nil {
					continue
				}
				s, err := r.transfer(res.W, t)
				if err != nil {
					c.Err = err
					r.say("  %-11s %-6s run %d: FAILED: %v", res.W.profile(), t, i+1, firstLine(err.Error()))
					r.logf("%v\n", err)
					continue
				}
				c.Samples = append(c.Samples, s)
				r.say("  %-11s %-6s run %d: pickup %.2fs dropoff %.2fs carrier CPU %.2fs, %d shell starts",
					res.W.profile(), t, i+1, s.Pickup.Seconds(), s.Dropoff.Seconds(), s.LocalCPU.Seconds(), s.ShellStarts)
			}
		}
	}
	// Leave nothing big behind between workloads.
	for _, t := range splitList(r.o.Tools) {
		p := r.paths(t)
		os.RemoveAll(p.local)
		os.RemoveAll(p.dest)
		os.RemoveAll(p.outbox)
	}
	return out
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// measureTTFB times messor's first byte on both links, with `ssh host
// true` as the floor.
func (r *runner) measureTTFB(w *workload) []ttfbResult {
	r.say("time to first byte")
	var out []ttfbResult
	if err := r.prepare(w); err != nil {
		return []ttfbResult{{Err: err}}
	}
	defer os.RemoveAll(r.seedDir(w))
	for _, prof := range r.profiles {
		for _, link := range []string{"loopback", "wifi"} {
			lw := *w
			lw.Link, lw.Profile = link, prof
			tr := ttfbResult{Link: link, Profile: prof}
			for i := 0; i < r.o.Runs && tr.Err == nil; i++ {
				d, err := r.ttfb(&lw)
				if err != nil {
					tr.Err = err
					break
				}
				tr.Messor = append(tr.Messor, d)
				if prof == profNoExec {
					continue // ssh host true is refused there
				}
				s, err := r.sshTrue(&lw)
				if err != nil {
					tr.Err = err
					break
				}
				tr.SSHTrue = append(tr.SSHTrue, s)
			}
			r.say("  %s %s: messor %v, ssh true %v", prof, link, median(tr.Messor), median(tr.SSHTrue))
			out = append(out, tr)
		}
	}
	os.RemoveAll(r.paths("messor").local)
	os.RemoveAll(r.paths("messor").outbox)
	return out
}

// measureRSS100k carries an outbox of many small files once with messor
// and reports its peak RSS.
func (r *runner) measureRSS100k(w *workload) *rssResult {
	r.say("peak RSS: %d small files", w.Count())
	res := &rssResult{Files: w.Count()}
	if err := r.prepare(w); err != nil {
		res.Err = err
		return res
	}
	defer os.RemoveAll(r.seedDir(w))
	s, err := r.transfer(w, "messor")
	res.S, res.Err = s, err
	os.RemoveAll(r.paths("messor").local)
	os.RemoveAll(r.paths("messor").dest)
	r.say("  pickup %.1fs (%d MiB), dropoff %.1fs (%d MiB), err %v", s.Pickup.Seconds(), s.RSSPickup>>10, s.Dropoff.Seconds(), s.RSSDropoff>>10, err)
	return res
}

// probeCiphers starts a throwaway host at LogLevel DEBUG1 and reads which
// cipher messor (golang.org/x/crypto/ssh defaults) and OpenSSH's ssh
// (its defaults) negotiate. It returns the cipher the OpenSSH tools will
// be given.
func (r *runner) probeCiphers(pub sshPublicKey, pem []byte) (string, []string, error) {
	dir := filepath.Join(r.root, "probe")
	login := filepath.Join(dir, "login")
	if err := os.MkdirAll(filepath.Join(login, "messor", "outbox"), 0o755); err != nil {
		return "", nil, err
	}
	if err := r.acct.chownTree(dir); err != nil {
		return "", nil, err
	}
	h, err := startSSHD("hosta", filepath.Join(dir, "sshd"), login, r.acct, pub, profileHosts{}, "DEBUG1")
	if err != nil {
		return "", nil, err
	}
	defer h.Stop()
	home, err := writeClientHome(filepath.Join(dir, "home"), pem, []*sshdHost{h}, map[string]int{"hosta": h.Port}, r.acct.Name, "")
	if err != nil {
		return "", nil, err
	}
	before := len(h.Ciphers()) // the readiness probe's own handshake
	if _, err := r.run(home.env(), r.messor, "--buffer", filepath.Join(dir, "buffer"), "--hosts", home.Hosts, "--settle", "0", "pickup"); err != nil {
		return "", nil, err
	}
	if _, err := r.run(home.env(), "ssh", "-F", home.Config, "hosta", "true"); err != nil {
		return "", nil, err
	}
	var got []string
	deadline := time.Now().Add(3 * time.Second)
	for len(got) < before+2 && time.Now().Before(deadline) {
		got = h.Ciphers()
		time.Sleep(20 * time.Millisecond)
	}
	if len(got) < before+2 {
		return "", nil, fmt.Errorf("cipher probe: sshd logged %d key exchanges:\n%s", len(got), h.Log())
	}
	messorCipher, sshCipher := got[before], got[before+1]
	cipher := r.o.Cipher
	if cipher == "auto" {
		cipher = messorCipher
	}
	notes := []string{
		"messor (golang.org/x/crypto/ssh defaults) negotiates " + messorCipher,
		"OpenSSH ssh/scp/sftp/rsync default: " + sshCipher,
	}
	if cipher != "" {
		notes = append(notes, "OpenSSH tools run here with `Ciphers "+cipher+"`")
	} else {
		notes = append(notes, "OpenSSH tools run here with their default cipher")
	}
	// Raw OpenSSH throughput per cipher, to tell the cipher's share.
	for _, c := range []string{"aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com"} {
		n := int64(512 << 20)
		if r.o.Smoke {
			n = 8 << 20
		}
		// Into /dev/null: collecting it in this process would be the bottleneck.
		res, err := r.run(home.env(), "sh", "-c", fmt.Sprintf("ssh -F %s -c %s hosta 'head -c %d /dev/zero' >/dev/null", home.Config, c, n))
		if err != nil {
			return "", nil, err
		}
		notes = append(notes, fmt.Sprintf("raw `ssh -c %s host head -c %s /dev/zero`: %s/s", c, fmtBytes(n), fmtBytes(int64(float64(n)/res.Elapsed.Seconds()))))
	}
	return cipher, notes, nil
}

// moduleDir is the directory holding go.mod.
func moduleDir() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside the messor module (run from the repository)")
	}
	return filepath.Dir(gomod), nil
}
